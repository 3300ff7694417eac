"""Tuning scopes: which parameters train. One declarative rule per scope picks the
modules; the same selection is what gets counted, trained and saved (DESIGN principle 4).

Norms are found by module type (nn.LayerNorm, or any class whose name ends in LayerNorm /
RMSNorm), never by peft's default LNTuningConfig mapping, which for LLaVA also trains the
projector, embeddings and lm_head (DESIGN.md "Traps").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .backbones import Family, part_of


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class TuningScope:
    name: str
    description: str
    default_lr: float
    kind: str  # "norm" | "linear" | "lora" | "full"
    parts: tuple[str, ...] = ()  # for kind "norm": which model parts
    quant_4bit: str = "trains normally"  # what happens under 4-bit, shown in every listing


SCOPES: list[TuningScope] = [
    # LayerNorm-only needs a far higher learning rate than LoRA: peft's own benchmark saw
    # LN-tuning at 1e-4 learn nothing (DESIGN.md). These are starting points for real-size
    # backbones (LoRA 3e-4 as QLoRA-style recipes, full 2e-5 as LLaVA's fine-tuning); a
    # backbone may carry measured ones (BackboneSpec.lrs; medln-tiny: chosen on validation by
    # `compare --tune-lr`, docs/compare-medln-tiny/TABLE.md).
    TuningScope("ln", "every LayerNorm/RMSNorm affine parameter that gets a gradient (vision, connector, LLM)", 3e-3, "norm", ("vision", "connector", "llm")),
    TuningScope("ln-vision", "the norms of the vision tower only", 3e-3, "norm", ("vision",)),
    TuningScope("ln-llm", "the norms of the language model only", 3e-3, "norm", ("llm",)),
    TuningScope("attn", "the language model's attention projections (q, k, v, o), whole weights", 1e-4, "linear",
                quant_4bit="trains; these projections are kept unquantized (bf16), the rest is 4-bit"),
    TuningScope("ffn", "the language model's MLP projections, whole weights", 1e-4, "linear",
                quant_4bit="trains; these projections are kept unquantized (bf16), the rest is 4-bit"),
    TuningScope("lora", "LoRA (r=8, alpha=16) on the language model's attention and MLP projections", 3e-4, "lora"),
    TuningScope("full", "every parameter", 2e-5, "full", quant_4bit="refused: 4-bit weights cannot be trained; load in bf16 (--quant none)"),
]
SCOPES_BY_NAME = {s.name: s for s in SCOPES}


def get_scope(name: str) -> TuningScope:
    try:
        return SCOPES_BY_NAME[name]
    except KeyError:
        raise ScopeError(f"unknown scope {name!r}; choose from {', '.join(SCOPES_BY_NAME)}") from None


def is_norm(module) -> bool:
    import torch.nn as nn

    if isinstance(module, nn.LayerNorm):
        return True
    cls = type(module).__name__
    return cls.endswith("LayerNorm") or cls.endswith("RMSNorm")


def numel(p) -> int:
    """Logical size of a parameter: bitsandbytes packs 4-bit weights two per byte."""
    quant_state = getattr(p, "quant_state", None)
    return quant_state.shape.numel() if quant_state is not None else p.numel()


@dataclass(frozen=True)
class ModuleInfo:
    """What selection needs to know of one module: the model's structure as plain data, so
    the same rule runs on a loaded model, a meta-device model, or a cached description."""

    name: str
    kind: str  # "norm" | "linear" | "other"
    params: int  # own parameters (tied weights counted once, at their first owner)
    in_features: int = 0
    out_features: int = 0
    bias: bool = False


def describe(model) -> list[ModuleInfo]:
    seen: set[int] = set()
    infos = []
    for name, module in model.named_modules():
        own = 0
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                own += numel(p)
        if is_norm(module):
            kind = "norm"
        elif hasattr(module, "in_features") and hasattr(module, "out_features"):
            kind = "linear"  # nn.Linear and bitsandbytes' Linear4bit
        else:
            kind = "other"
        infos.append(ModuleInfo(name, kind, own, getattr(module, "in_features", 0) or 0,
                                getattr(module, "out_features", 0) or 0, getattr(module, "bias", None) is not None))
    return infos


def count_params(model) -> int:
    return sum(m.params for m in describe(model))


@dataclass
class Selection:
    """The modules a scope trains, and the norms it leaves out because they get no gradient."""

    scope: TuningScope
    modules: list[str]  # full module names (exact peft targets)
    trainable: int  # parameters trained (LoRA: the A/B matrices)
    total: int  # parameters of the base model
    dead: int  # norm parameters excluded because they receive no gradient
    dead_modules: list[str]
    notes: list[str]

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def select(structure: list[ModuleInfo], dead_prefixes: list[str], family: Family, scope: TuningScope, *,
           quant: str = "none", lora_r: int = 8) -> Selection:
    """The scope's rule. `structure` comes from describe(); `dead_prefixes` from
    family.dead_norms(config) (module-name prefixes whose norms get no gradient)."""
    if scope.kind == "full" and quant != "none":
        raise ScopeError("scope 'full' cannot run on a 4-bit model: 4-bit weights cannot be trained; use --quant none (bf16)")
    total = sum(m.params for m in structure)
    dead_prefixes = tuple(dead_prefixes)
    modules, dead_modules, trainable, dead, notes = [], [], 0, 0, []

    if scope.kind == "norm":
        for m in structure:
            if m.kind != "norm" or m.params == 0 or part_of(family, m.name) not in scope.parts:
                continue
            if m.name.startswith(dead_prefixes):
                dead_modules.append(m.name)
                dead += m.params
            else:
                modules.append(m.name)
                trainable += m.params
        if dead_modules:
            notes.append(f"{len(dead_modules)} norms ({dead:,} parameters) get no gradient and are left out")
    elif scope.kind in ("linear", "lora"):
        patterns = {"attn": [family.attn], "ffn": [family.ffn], "lora": [family.attn, family.ffn]}[scope.name]
        for m in structure:
            if m.kind != "linear" or part_of(family, m.name) != "llm" or not any(re.search(p, m.name) for p in patterns):
                continue
            modules.append(m.name)
            if scope.kind == "lora":  # A: r x in, B: out x r
                trainable += lora_r * (m.in_features + m.out_features)
            else:
                trainable += m.in_features * m.out_features + (m.out_features if m.bias else 0)
    else:  # full
        modules, trainable = [""], total
    if not modules:
        raise ScopeError(f"scope {scope.name!r} selects nothing in this {family.name} model")
    return Selection(scope, modules, trainable, total, dead, dead_modules, notes)


def select_in_model(model, config, family: Family, scope: TuningScope, **kw) -> Selection:
    return select(describe(model), family.dead_norms(config), family, scope, **kw)


def meta_model(config, family: Family):
    """The model's structure on the meta device: no memory, no weights, ~0.4 s for 7B."""
    import torch

    from .backbones import model_class

    with torch.device("meta"):
        return model_class(family)._from_config(config)


def count_from_config(config, family: Family, scope: TuningScope, *, quant: str = "none", lora_r: int = 8,
                      model=None) -> Selection:
    """Parameter accounting from config.json alone, with the same selection as training."""
    model = model if model is not None else meta_model(config, family)
    return select_in_model(model, config, family, scope, quant=quant, lora_r=lora_r)


def apply_scope(model, config, family: Family, scope: TuningScope, *, quant: str = "none",
                lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05):
    """Make exactly the scope's parameters trainable; returns (model, Selection).

    norm / linear scopes go through peft's LN-tuning mechanism with explicit full module
    names: it keeps a trainable copy of each target beside the frozen original, so the
    adapter saves in peft's format, reloads with PeftModel.from_pretrained, and
    `disable_adapter()` gives base answers from the same weights. (LNTuningLayer wraps any
    module; for attn/ffn it trains whole projection weights, the paper's "intrinsic" tuning.)
    """
    import torch

    selection = select_in_model(model, config, family, scope, quant=quant, lora_r=lora_r)
    if scope.kind == "full":
        model.requires_grad_(True)
        return model, selection
    from peft import LNTuningConfig, LoraConfig, get_peft_model

    if scope.kind == "lora":
        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=selection.modules)
    else:
        peft_config = LNTuningConfig(target_modules=selection.modules)
    model = get_peft_model(model, peft_config)
    # Trainable tensors in fp32 (optimizer state and tiny updates to ~1.0 norm gains are lost
    # in bf16); frozen tensors keep their dtype: no blanket upcast of the base model.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, selection


def trainable_summary(model, total: int) -> tuple[int, float]:
    """Trainable parameters of a (peft-)wrapped model against the BASE model's count: peft's
    print_trainable_parameters counts LNTuningLayer's copies in its denominator."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, 100.0 * trainable / total
