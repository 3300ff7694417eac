"""The scopes: each a tuning method (one module of this package) applied to named targets,
one line each. A new scope is one line in SCOPES; a new method is one module plus its line
(docs/design.md, "Adding a tuning method").

Everything that depends on the method of a scope reads it from here: the adapter types a
run may hold (medln.runs), the labels and colours of the plots, the learning rate a scope
starts from.
"""

from __future__ import annotations

from ..backbones import registry_spec
from . import bitfit, full, ia3, ln_lora, lora, norm, prompt, whole_linear
from ..userfiles import short
from .method import Method, ScopeError, TuningScope

SCOPES: list[TuningScope] = [
    # LayerNorm-only needs a far higher learning rate than LoRA: peft's own benchmark saw
    # LN-tuning at 1e-4 learn nothing (docs/design.md). These are starting points for real-size
    # backbones (LoRA 3e-4 as QLoRA-style recipes, full 2e-5 as LLaVA's fine-tuning); a
    # backbone may carry measured ones (BackboneSpec.lrs; medln-tiny: chosen on validation by
    # `compare --tune-lr`, docs/compare-medln-tiny/TABLE.md). The LayerNorm scopes in blues
    # (the paper's method), the baselines in other hues.
    TuningScope("ln", "every LayerNorm/RMSNorm affine parameter that gets a gradient (vision, connector, LLM)", 3e-3,
                norm.METHOD, ("vision", "connector", "llm"), "#1d4ed8"),
    TuningScope("ln-vision", "the norms of the vision tower only", 3e-3, norm.METHOD, ("vision",), "#60a5fa"),
    # Measured at the SmolVLM-256M shape on a 2-core CPU (docs/design.md): `ln` is ~1.8x slower per
    # step than `lora` at 1.1x its memory (the vision norms need the backward pass through the
    # whole vision tower); `ln-llm` is 1.06-1.1x faster than `lora` at 0.88x its memory.
    TuningScope("ln-llm", "the norms of the language model only: the fast path (SmolVLM-256M shape, CPU: "
                "1.06-1.1x faster per step than lora at 0.88x its memory; ln, which also trains the vision "
                "norms, is ~1.8x slower than lora, as those need the backward pass through the vision tower)",
                3e-3, norm.METHOD, ("llm",), "#0e7490"),
    TuningScope("attn", "the language model's attention projections (q, k, v, o), whole weights", 1e-4,
                whole_linear.METHOD, ("attn",), "#d97706"),
    TuningScope("ffn", "the language model's MLP projections, whole weights", 1e-4, whole_linear.METHOD, ("ffn",),
                "#16a34a"),
    TuningScope("lora", f"LoRA (r={lora.RANK}, alpha={lora.ALPHA}) on the language model's attention and MLP "
                "projections", 3e-4,
                lora.METHOD, ("attn", "ffn"), "#db2777"),
    TuningScope("full", "every parameter", 2e-5, full.METHOD, (), "#4b5563"),
    # The rest of the paper's method table (Chen et al. 2024 compare LN tuning with LoRA, IA3,
    # prefix/prompt tuning) and its combination question. Rates: IA3 3e-3 as T-Few; prompt tuning
    # 3e-2 as peft's examples; BitFit 1e-3 (Ben Zaken et al. swept 1e-4..1e-3).
    TuningScope("ia3", "IA3 (peft): learned scales on the language model's attention keys/values and on the "
                "MLP down-projection's input", 3e-3, ia3.METHOD, ("kv", "down"), "#7c3aed"),
    TuningScope("bitfit", "BitFit: every bias of a linear layer (vision, connector, language model) through "
                "peft's BEFT adapter (b + Δb); norm biases belong to the ln scopes; Llama/Mistral/Gemma "
                "language models have no biases", 1e-3, bitfit.METHOD, ("vision", "connector", "llm"), "#92400e"),
    TuningScope("prompt", "soft prompt tuning (peft): 20 trained virtual tokens before the prompt, image tokens "
                "left in place; llava and idefics3 only (refused with the reason for other families)", 3e-2,
                prompt.METHOD, (), "#65a30d"),
    TuningScope("ln-lora", f"LayerNorm tuning plus LoRA in one adapter: every norm (as ln) and LoRA r={lora.RANK} on "
                "the language model's projections; each part has its own learning rate (--ln-lr for the norms)",
                3e-4, ln_lora.METHOD, ("vision", "connector", "llm", "attn", "ffn"), "#312e81"),  # the darkest blue
]

# The methods, in the order their first scope appears.
METHODS: dict[str, Method] = {s.method.name: s.method for s in SCOPES}
# What a MedLN adapter may be (medln.runs checks adapter_config.json against it).
PEFT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(m.peft_type for m in METHODS.values() if m.peft_type))
# Movement params (medln.inspect rows) -> (plot label, change read as absolute ‖Δ‖).
PARAMS: dict[str, tuple[str, bool]] = {k: v for m in METHODS.values() for k, v in m.params.items()}
ABSOLUTE_PARAMS: tuple[str, ...] = tuple(k for k, (_, absolute) in PARAMS.items() if absolute)


def find_scope(name: str) -> TuningScope | None:
    return next((s for s in SCOPES if s.name == name), None)


def scope_names() -> list[str]:
    return [s.name for s in SCOPES]


def get_scope(name: str) -> TuningScope:
    scope = find_scope(name)
    if scope is None:
        raise ScopeError(f"unknown scope {short(name)}; choose from {', '.join(scope_names())}")
    return scope


def methods_of(peft_type: str | None) -> list[Method]:
    """The methods whose adapters peft saves as `peft_type` (LN_TUNING: norm and whole-linear)."""
    return [m for m in METHODS.values() if m.peft_type == peft_type]


GENERIC_BATCH = 8  # samples per micro-batch where the registry has no measured budget for the backbone


def default_batch(backbone: str) -> int:
    """The micro-batch a run starts from: the one this backbone's default budget was measured
    with (a 7B model on one GPU takes far fewer images per step than the bundled 1.6 M one)."""
    spec = registry_spec(backbone)
    return spec.batch_size if spec and spec.batch_size else GENERIC_BATCH


def default_lr(backbone: str, scope: str) -> float:
    """The learning rate a scope starts from: measured for this backbone if the registry has
    it, else the scope's own default."""
    spec = registry_spec(backbone)
    return spec.lrs[scope] if spec and scope in spec.lrs else get_scope(scope).default_lr
