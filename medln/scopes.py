"""Tuning scopes: which parameters train. One declarative rule per scope picks the
modules; the same selection is what gets counted, trained and saved (docs/design.md, principle 4).

Both are data: KINDS says how selected modules train (norm affine copies, whole linear
weights, LoRA, everything), SCOPES gives each scope a kind and its targets (model parts or
projection groups named by the family). A new scope is one line in SCOPES; a new way of
training is one Kind (plus its peft wrapper in apply_scope).

Norms are found by module type (nn.LayerNorm, or any class whose name ends in LayerNorm /
RMSNorm), never by peft's default LNTuningConfig mapping, which for LLaVA also trains the
projector, embeddings and lm_head (docs/design.md "Traps").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from .backbones import Family, meta_model, part_of
from .structure import ModuleInfo, describe


class ScopeError(ValueError):
    pass


def _whole_linear(m, lora_r: int) -> int:
    return m.in_features * m.out_features + (m.out_features if m.bias else 0)


@dataclass(frozen=True)
class Kind:
    """How the modules a scope selects are trained: a row of data, not a branch per scope.

    `selects`: the module kind targets pick from ("norm", "linear"; "all" takes the whole
    model). `count(module, lora_r)`: trainable numbers it adds per selected module.
    `wrap`: the peft method that makes exactly those trainable ("ln_tuning" keeps a trainable
    copy of each target, "lora" adds A/B matrices; None: requires_grad on every parameter).
    `quant_4bit`: under 4-bit the kind trains as is ("ok"), keeps its selected modules
    unquantized ("keep": Linear4bit weights take no gradient), or cannot run ("refuse").
    `needs_bias`: only linears with a bias count (BitFit). `skips_dead`: modules under the
    family's dead prefixes (no gradient) are left out and reported."""

    name: str
    selects: str
    count: Callable[[object, int], int]
    wrap: str | None
    quant_4bit: str = "ok"
    quant_note: str = "trains normally"
    needs_bias: bool = False
    skips_dead: bool = False


KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("norm", "norm", lambda m, r: m.params, "ln_tuning", skips_dead=True),
    Kind("whole-linear", "linear", _whole_linear, "ln_tuning", "keep",
         "trains; these projections are kept unquantized (bf16), the rest is 4-bit"),
    Kind("lora", "linear", lambda m, r: r * (m.in_features + m.out_features), "lora"),  # A: r x in, B: out x r
    Kind("full", "all", lambda m, r: m.params, None, "refuse",
         "refused: 4-bit weights cannot be trained; load in bf16 (--quant none)"),
    # IA3: one learned scale per output of k/v and per input of the down-projection (counted in select).
    Kind("ia3", "linear", lambda m, r: m.out_features, "ia3",
         quant_note="trains normally: the scale vectors are full precision beside 4-bit weights"),
    # BitFit through peft's BEFT: a trained b + Δb on every linear that has a bias.
    Kind("bitfit", "linear", lambda m, r: m.out_features, "beft",
         quant_note="trains normally: biases stay full precision beside 4-bit weights", needs_bias=True, skips_dead=True),
    # Soft prompt: virtual-token embeddings, no module of the model (counted in select).
    Kind("prompt", "virtual-tokens", lambda m, r: 0, "prompt",
         quant_note="trains normally: only the virtual-token embeddings train"),
    # Norms (the part targets, as `norm`) and LoRA (the projection targets) in one adapter.
    Kind("ln-lora", "norm+linear", lambda m, r: 0, "lora+norms"),
]}
PROMPT_TOKENS = 20  # virtual tokens of the `prompt` scope (Lester et al. 2021 found 20 ample)


@dataclass(frozen=True)
class TuningScope:
    """A scope: a kind of training applied to named targets. A target is a model part of the
    family ("vision", "connector", "llm": Family.parts) or a projection group of its language
    model ("attn", "ffn": Family.projections); the kind says which modules of the target count."""

    name: str
    description: str
    default_lr: float
    kind: str  # a key of KINDS
    targets: tuple[str, ...] = ()

    @property
    def how(self) -> Kind:
        return KINDS[self.kind]

    @property
    def quant_4bit(self) -> str:
        """What happens under 4-bit, shown in every listing."""
        return self.how.quant_note

    @property
    def trains_whole_linears(self) -> bool:
        return self.how.quant_4bit == "keep"


SCOPES: list[TuningScope] = [
    # LayerNorm-only needs a far higher learning rate than LoRA: peft's own benchmark saw
    # LN-tuning at 1e-4 learn nothing (docs/design.md). These are starting points for real-size
    # backbones (LoRA 3e-4 as QLoRA-style recipes, full 2e-5 as LLaVA's fine-tuning); a
    # backbone may carry measured ones (BackboneSpec.lrs; medln-tiny: chosen on validation by
    # `compare --tune-lr`, docs/compare-medln-tiny/TABLE.md).
    TuningScope("ln", "every LayerNorm/RMSNorm affine parameter that gets a gradient (vision, connector, LLM)", 3e-3, "norm", ("vision", "connector", "llm")),
    TuningScope("ln-vision", "the norms of the vision tower only", 3e-3, "norm", ("vision",)),
    # Measured at the SmolVLM-256M shape on a 2-core CPU (docs/design.md): `ln` is ~1.8x slower per
    # step than `lora` at 1.1x its memory (the vision norms need the backward pass through the
    # whole vision tower); `ln-llm` is 1.06-1.1x faster than `lora` at 0.88x its memory.
    TuningScope("ln-llm", "the norms of the language model only: the fast path (SmolVLM-256M shape, CPU: "
                "1.06-1.1x faster per step than lora at 0.88x its memory; ln, which also trains the vision "
                "norms, is ~1.8x slower than lora, as those need the backward pass through the vision tower)",
                3e-3, "norm", ("llm",)),
    TuningScope("attn", "the language model's attention projections (q, k, v, o), whole weights", 1e-4, "whole-linear", ("attn",)),
    TuningScope("ffn", "the language model's MLP projections, whole weights", 1e-4, "whole-linear", ("ffn",)),
    TuningScope("lora", "LoRA (r=8, alpha=16) on the language model's attention and MLP projections", 3e-4, "lora", ("attn", "ffn")),
    TuningScope("full", "every parameter", 2e-5, "full"),
    # The rest of the paper's method table (Chen et al. 2024 compare LN tuning with LoRA, IA3,
    # prefix/prompt tuning) and its combination question. Rates: IA3 3e-3 as T-Few; prompt tuning
    # 3e-2 as peft's examples; BitFit 1e-3 (Ben Zaken et al. swept 1e-4..1e-3).
    TuningScope("ia3", "IA3 (peft): learned scales on the language model's attention keys/values and on the "
                "MLP down-projection's input", 3e-3, "ia3", ("kv", "down")),
    TuningScope("bitfit", "BitFit: every bias of a linear layer (vision, connector, language model) through "
                "peft's BEFT adapter (b + Δb); norm biases belong to the ln scopes; Llama/Mistral/Gemma "
                "language models have no biases", 1e-3, "bitfit", ("vision", "connector", "llm")),
    TuningScope("prompt", "soft prompt tuning (peft): 20 trained virtual tokens before the prompt, image tokens "
                "left in place; llava and idefics3 only (refused with the reason for other families)", 3e-2,
                "prompt"),
    TuningScope("ln-lora", "LayerNorm tuning plus LoRA in one adapter: every norm (as ln) and LoRA r=8 on the "
                "language model's projections; each part has its own learning rate (--ln-lr for the norms)",
                3e-4, "ln-lora", ("vision", "connector", "llm", "attn", "ffn")),
]


def find_scope(name: str) -> TuningScope | None:
    return next((s for s in SCOPES if s.name == name), None)


def scope_names() -> list[str]:
    return [s.name for s in SCOPES]


def get_scope(name: str) -> TuningScope:
    scope = find_scope(name)
    if scope is None:
        raise ScopeError(f"unknown scope {name!r}; choose from {', '.join(scope_names())}")
    return scope


def default_lr(backbone: str, scope: str) -> float:
    """The learning rate a scope starts from: measured for this backbone if the registry has
    it, else the scope's own default."""
    from .backbones import BACKBONES_BY_NAME

    spec = BACKBONES_BY_NAME.get(backbone)
    return spec.lrs[scope] if spec and scope in spec.lrs else get_scope(scope).default_lr


def in_target(family: Family, module_name: str, target: str) -> bool:
    """Whether a module lies in a scope target: a family part, or a projection group of the LLM."""
    if target in family.projections:
        return part_of(family, module_name) == "llm" and re.search(family.projections[target], module_name) is not None
    if target in family.parts:
        return part_of(family, module_name) == target
    raise ScopeError(f"unknown scope target {target!r}: a part ({', '.join(family.parts)}) or a projection group "
                     f"({', '.join(family.projections)}) of the {family.name} family")


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

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def select(structure: list[ModuleInfo], dead_prefixes: list[str], family: Family, scope: TuningScope, *,
           quant: str = "none", lora_r: int = 8) -> Selection:
    """The scope's rule. `structure` comes from describe(); `dead_prefixes` from
    family.dead_norms(config) (module-name prefixes whose norms get no gradient)."""
    how = scope.how
    if how.quant_4bit == "refuse" and quant != "none":
        raise ScopeError(f"scope {scope.name!r} cannot run on a 4-bit model: 4-bit weights cannot be trained; "
                         "use --quant none (bf16)")
    total = sum(m.params for m in structure)
    if how.selects == "all":
        return Selection(scope, [""], total, total, 0, [], [])
    if how.selects == "virtual-tokens":
        return _select_prompt(structure, family, scope, total)
    if how.selects == "norm+linear":  # ln-lora: the part targets as `norm`, the projection targets as `lora`
        parts = tuple(t for t in scope.targets if t in family.parts)
        groups = tuple(t for t in scope.targets if t not in family.parts)
        norms = select(structure, dead_prefixes, family, TuningScope(scope.name, "", 0, "norm", parts), lora_r=lora_r)
        lora = select(structure, dead_prefixes, family, TuningScope(scope.name, "", 0, "lora", groups), lora_r=lora_r)
        return Selection(scope, lora.modules, norms.trainable + lora.trainable, total, norms.dead, norms.dead_modules,
                         norms.notes, extra=norms.modules)
    dead_prefixes = tuple(dead_prefixes)
    modules, dead_modules, trainable, dead, notes = [], [], 0, 0, []
    for m in structure:
        # (A tied bias counts at its first owner: BLIP's output layer owns no parameter of its
        # own, yet its bias is a bias term BitFit trains.)
        if m.kind != how.selects or (m.params == 0 and not how.needs_bias) or (how.needs_bias and not m.bias):
            continue
        target = next((t for t in scope.targets if in_target(family, m.name, t)), None)
        if target is None:
            continue
        # Modules after the layer a model reads its features from never get a gradient: left out.
        if how.skips_dead and m.name.startswith(dead_prefixes):
            dead_modules.append(m.name)
            dead += m.out_features if how.needs_bias else m.params
            continue
        modules.append(m.name)
        # IA3 scales the down-projection's input, every other target's output.
        trainable += m.in_features if how.name == "ia3" and target == "down" else how.count(m, lora_r)
    if dead_modules:
        what = "biases" if how.needs_bias else "norms"
        notes.append(f"{len(dead_modules)} {what} ({dead:,} parameters) get no gradient and are left out")
    if how.needs_bias:
        if not modules:
            raise ScopeError(f"scope {scope.name!r}: this {family.name} model has no linear layer with a bias term, "
                             "so there is nothing to train; choose ln-llm or lora")
        missing = [t for t in scope.targets if t in family.parts and family.parts[t]
                   and not any(in_target(family, n, t) for n in modules)]
        if "llm" in missing:
            notes.append("the language model has no bias terms (bias-free projections): bitfit trains the other "
                         "parts' biases only")
    if not modules:
        raise ScopeError(f"scope {scope.name!r} selects nothing in this {family.name} model")
    return Selection(scope, modules, trainable, total, dead, dead_modules, notes)


def _select_prompt(structure: list[ModuleInfo], family: Family, scope: TuningScope, total: int) -> Selection:
    """PROMPT_TOKENS virtual tokens as wide as the language model (its lm_head's input)."""
    if family.prompt_refusal:
        raise ScopeError(f"scope {scope.name!r} cannot run on a {family.name} model: {family.prompt_refusal}")
    head = next((m for m in structure if m.kind == "linear" and m.name.endswith("lm_head")), None)
    if head is None:
        raise ScopeError(f"scope {scope.name!r}: no lm_head in this {family.name} model to size the virtual tokens")
    return Selection(scope, ["(virtual tokens)"], PROMPT_TOKENS * head.in_features, total, 0, [],
                     [f"{PROMPT_TOKENS} virtual tokens x {head.in_features} (the language model's width)"])


def select_in_model(model, config, family: Family, scope: TuningScope, **kw) -> Selection:
    return select(describe(model), family.dead_norms(config), family, scope, **kw)


def kept_unquantized(backbone: str, scope: TuningScope, quant: str, *, trust_remote_code: bool = False) -> tuple[str, ...]:
    """Linear layers a 4-bit load must leave in full precision because the scope trains them
    whole: known from config.json alone (meta model), before the weights load."""
    if quant != "4bit" or not scope.trains_whole_linears:
        return ()
    from .backbones import load_config

    _, config, family = load_config(backbone, trust_remote_code=trust_remote_code)
    return tuple(count_from_config(config, family, scope).modules)


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
    wrap = scope.how.wrap
    if wrap is None:
        model.requires_grad_(True)
        return model, selection
    from peft import BeftConfig, IA3Config, LNTuningConfig, LoraConfig, PromptTuningConfig, get_peft_model

    peft_configs = {
        "ln_tuning": lambda: LNTuningConfig(target_modules=selection.modules),
        "lora": lambda: LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                   target_modules=selection.modules),
        # ln-lora: the norms ride in the same adapter as modules_to_save (a trainable copy beside
        # the frozen original, saved with the LoRA weights): one standard peft adapter.
        "lora+norms": lambda: LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                         target_modules=selection.modules, modules_to_save=selection.extra),
        "ia3": lambda: IA3Config(target_modules=selection.modules, feedforward_modules=[
            n for n in selection.modules if in_target(family, n, "down")]),
        "beft": lambda: BeftConfig(target_modules=selection.modules),
        "prompt": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PROMPT_TOKENS),
    }
    model = get_peft_model(model, peft_configs[wrap]())
    if wrap == "prompt":
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
    if scope.how.wrap != "lora+norms":
        return [{"params": [p for _, p in params], "lr": lr}]
    norm = [p for n, p in params if ".modules_to_save." in n]
    rest = [p for n, p in params if ".modules_to_save." not in n]
    return [{"params": rest, "lr": lr, "name": "lora"}, {"params": norm, "lr": ln_lr, "name": "norms"}]
