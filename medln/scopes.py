"""Tuning scopes: which parameters train. One declarative rule per scope picks the
modules; the same selection is what gets counted, trained and saved (DESIGN principle 4).

Norms are found by module type (nn.LayerNorm, or any class whose name ends in LayerNorm /
RMSNorm), never by peft's default LNTuningConfig mapping, which for LLaVA also trains the
projector, embeddings and lm_head (DESIGN.md "Traps").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .backbones import Family, part_of


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class TuningScope:
    name: str
    description: str
    default_lr: float
    kind: str  # "norm" | "linear" | "lora" | "full" | "ia3" | "bitfit" | "prompt" | "ln-lora"
    parts: tuple[str, ...] = ()  # for kind "norm": which model parts
    quant_4bit: str = "trains normally"  # what happens under 4-bit, shown in every listing


SCOPES: list[TuningScope] = [
    # LayerNorm-only needs a far higher learning rate than LoRA: peft's own benchmark saw
    # LN-tuning at 1e-4 learn nothing (DESIGN.md). These are starting points for real-size
    # backbones (LoRA 3e-4 as QLoRA-style recipes, full 2e-5 as LLaVA's fine-tuning); a
    # backbone may carry measured ones (BackboneSpec.lrs; medln-tiny's: docs/lr_sweep.md).
    TuningScope("ln", "every LayerNorm/RMSNorm affine parameter that gets a gradient (vision, connector, LLM)", 3e-3, "norm", ("vision", "connector", "llm")),
    TuningScope("ln-vision", "the norms of the vision tower only", 3e-3, "norm", ("vision",)),
    # Measured at the SmolVLM-256M shape on a 2-core CPU (DESIGN.md): `ln` is ~1.8x slower per
    # step than `lora` at 1.1x its memory (the vision norms need the backward pass through the
    # whole vision tower); `ln-llm` is 1.06-1.1x faster than `lora` at 0.88x its memory.
    TuningScope("ln-llm", "the norms of the language model only: the fast path (SmolVLM-256M shape, CPU: "
                "1.06-1.1x faster per step than lora at 0.88x its memory; ln, which also trains the vision "
                "norms, is ~1.8x slower than lora, as those need the backward pass through the vision tower)",
                3e-3, "norm", ("llm",)),
    TuningScope("attn", "the language model's attention projections (q, k, v, o), whole weights", 1e-4, "linear",
                quant_4bit="trains; these projections are kept unquantized (bf16), the rest is 4-bit"),
    TuningScope("ffn", "the language model's MLP projections, whole weights", 1e-4, "linear",
                quant_4bit="trains; these projections are kept unquantized (bf16), the rest is 4-bit"),
    TuningScope("lora", "LoRA (r=8, alpha=16) on the language model's attention and MLP projections", 3e-4, "lora"),
    TuningScope("full", "every parameter", 2e-5, "full", quant_4bit="refused: 4-bit weights cannot be trained; load in bf16 (--quant none)"),
    # The rest of the paper's method table (Chen et al. 2024 compare LN tuning with LoRA, IA3,
    # prefix/prompt tuning) and its combination question. Rates: IA3 3e-3 as T-Few; prompt tuning
    # 3e-2 as peft's examples; BitFit 1e-3 (Ben Zaken et al. swept 1e-4..1e-3).
    TuningScope("ia3", "IA3 (peft): learned scales on the language model's attention keys/values and on the "
                "MLP down-projection's input", 3e-3, "ia3",
                quant_4bit="trains normally: the scale vectors are full precision beside 4-bit weights"),
    TuningScope("bitfit", "BitFit: every bias of a linear layer (vision, connector, language model) through "
                "peft's BEFT adapter (b + Δb); norm biases belong to the ln scopes; Llama/Mistral/Gemma "
                "language models have no biases", 1e-3, "bitfit",
                quant_4bit="trains normally: biases stay full precision beside 4-bit weights"),
    TuningScope("prompt", "soft prompt tuning (peft): 20 trained virtual tokens before the prompt, image tokens "
                "left in place; llava and idefics3 only (refused with the reason for other families)", 3e-2,
                "prompt", quant_4bit="trains normally: only the virtual-token embeddings train"),
    TuningScope("ln-lora", "LayerNorm tuning plus LoRA in one adapter: every norm (as ln) and LoRA r=8 on the "
                "language model's projections; each part has its own learning rate (--ln-lr for the norms)",
                3e-4, "ln-lora", ("vision", "connector", "llm")),
]
PROMPT_TOKENS = 20  # virtual tokens of the `prompt` scope (Lester et al. 2021 found 20 ample)
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
    extra: list[str] = field(default_factory=list)  # ln-lora: norms trained whole (peft modules_to_save)
    feedforward: list[str] = field(default_factory=list)  # ia3: modules scaled on their input

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

    def norms(parts) -> tuple[list[str], int]:
        nonlocal dead
        chosen, count = [], 0
        for m in structure:
            if m.kind != "norm" or m.params == 0 or part_of(family, m.name) not in parts:
                continue
            if m.name.startswith(dead_prefixes):
                dead_modules.append(m.name)
                dead += m.params
            else:
                chosen.append(m.name)
                count += m.params
        return chosen, count

    def llm_linears(patterns) -> list[ModuleInfo]:
        return [m for m in structure if m.kind == "linear" and part_of(family, m.name) == "llm"
                and any(re.search(p, m.name) for p in patterns)]

    extra, feedforward = [], []
    if scope.kind == "ln-lora":
        extra, trainable = norms(scope.parts)
        for m in llm_linears([family.attn, family.ffn]):
            modules.append(m.name)
            trainable += lora_r * (m.in_features + m.out_features)
        if dead_modules:
            notes.append(f"{len(dead_modules)} norms ({dead:,} parameters) get no gradient and are left out")
    elif scope.kind == "ia3":  # one scale per output of k/v; per input of the down-projection
        for m in llm_linears([family.kv, family.down]):
            modules.append(m.name)
            if re.search(family.down, m.name):
                feedforward.append(m.name)
                trainable += m.in_features
            else:
                trainable += m.out_features
    elif scope.kind == "bitfit":
        for m in structure:
            if m.kind != "linear" or not m.bias or part_of(family, m.name) is None:
                continue
            if m.name.startswith(dead_prefixes):
                dead_modules.append(m.name)
                dead += m.out_features
            else:
                modules.append(m.name)
                trainable += m.out_features
        if not modules:
            raise ScopeError(f"scope 'bitfit': this {family.name} model has no linear layer with a bias term, so "
                             "there is nothing to train; choose ln-llm or lora")
        if not any(part_of(family, n) == "llm" for n in modules):
            notes.append("the language model has no bias terms (bias-free projections): bitfit trains the vision "
                         "tower's and connector's biases only")
        if dead_modules:
            notes.append(f"{len(dead_modules)} biases ({dead:,} parameters) get no gradient and are left out")
    elif scope.kind == "prompt":
        if family.prompt_refusal:
            raise ScopeError(f"scope 'prompt' cannot run on a {family.name} model: {family.prompt_refusal}")
        head = next((m for m in structure if m.kind == "linear" and m.name.endswith("lm_head")), None)
        if head is None:
            raise ScopeError(f"scope 'prompt': no lm_head found in this {family.name} model to size the virtual tokens")
        modules, trainable = ["(virtual tokens)"], PROMPT_TOKENS * head.in_features
        notes.append(f"{PROMPT_TOKENS} virtual tokens x {head.in_features} (the language model's width)")
    elif scope.kind == "norm":
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
    return Selection(scope, modules, trainable, total, dead, dead_modules, notes, extra, feedforward)


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
    from peft import BeftConfig, IA3Config, LNTuningConfig, LoraConfig, PromptTuningConfig, get_peft_model

    if scope.kind in ("lora", "ln-lora"):
        # ln-lora: the norms ride in the same adapter as modules_to_save (a trainable copy beside
        # the frozen original, saved with the LoRA weights): one standard peft adapter.
        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                 target_modules=selection.modules, modules_to_save=selection.extra or None)
    elif scope.kind == "ia3":
        peft_config = IA3Config(target_modules=selection.modules, feedforward_modules=selection.feedforward)
    elif scope.kind == "bitfit":
        peft_config = BeftConfig(target_modules=selection.modules)
    elif scope.kind == "prompt":
        peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PROMPT_TOKENS)
    else:
        peft_config = LNTuningConfig(target_modules=selection.modules)
    model = get_peft_model(model, peft_config)
    if scope.kind == "prompt":
        _init_prompt_from_vocabulary(model, config)
    # Trainable tensors in fp32 (optimizer state and tiny updates to ~1.0 norm gains are lost
    # in bf16); frozen tensors keep their dtype: no blanket upcast of the base model.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, selection


def _init_prompt_from_vocabulary(model, config) -> None:
    """Virtual tokens start as copies of random vocabulary embeddings (Lester et al.'s sampled-vocab
    init; peft's random init is N(0, 1), far off the embeddings' scale). Never an image/special
    placeholder: LLaVA and Idefics3 find image positions by comparing embeddings with the image
    token's, so a copy of it would be taken for an image slot."""
    import torch

    embed = model.get_input_embeddings()
    vocab = embed.weight.shape[0]
    reserved = {v for k, v in config.to_dict().items() if k.endswith(("token_id", "token_index")) and isinstance(v, int)}
    reserved |= {v for k, v in config.get_text_config().to_dict().items() if k.endswith("token_id") and isinstance(v, int)}
    pool = torch.tensor([i for i in range(vocab) if i not in reserved])
    ids = pool[torch.randperm(len(pool))[:PROMPT_TOKENS]]  # global RNG: seeded by prepare()
    with torch.no_grad():
        target = model.prompt_encoder[model.active_adapter].embedding.weight
        target.copy_(embed.weight[ids.to(embed.weight.device)].to(target.dtype))


def param_groups(model, scope: TuningScope, lr: float, ln_lr: float) -> list[dict]:
    """Optimizer groups: ln-lora's norms take their own rate (LayerNorm tuning needs a far
    higher one than LoRA); every other scope is one group."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if scope.kind != "ln-lora":
        return [{"params": [p for _, p in params], "lr": lr}]
    norm = [p for n, p in params if ".modules_to_save." in n]
    rest = [p for n, p in params if ".modules_to_save." not in n]
    return [{"params": rest, "lr": lr, "name": "lora"}, {"params": norm, "lr": ln_lr, "name": "norms"}]


def trainable_summary(model, total: int) -> tuple[int, float]:
    """Trainable parameters of a (peft-)wrapped model against the BASE model's count: peft's
    print_trainable_parameters counts LNTuningLayer's copies in its denominator."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, 100.0 * trainable / total
