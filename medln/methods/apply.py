"""A scope applied: the same selection is what gets counted (before anything loads, from
config.json on the meta device), trained and saved (docs/design.md, principle 4).

`select` runs the scope's method on a model's structure (medln.structure.describe);
`apply_scope` makes exactly those parameters trainable through the method's peft config, so
the adapter saves in peft's format, reloads with PeftModel.from_pretrained, and
`disable_adapter()` gives base answers from the same weights.
"""

from __future__ import annotations

from ..backbones import Family, meta_model
from ..structure import ModuleInfo, describe
from .lora import ALPHA, DROPOUT, RANK
from .method import ScopeError, Selection, TuningScope


def select(structure: list[ModuleInfo], dead_prefixes: list[str], family: Family, scope: TuningScope, *,
           quant: str = "none", lora_r: int = RANK) -> Selection:
    """The scope's rule. `structure` comes from describe(); `dead_prefixes` from
    family.dead_norms(config) (module-name prefixes whose norms get no gradient)."""
    if scope.refuses_4bit and quant != "none":
        raise ScopeError(f"scope {scope.name!r} cannot run on a 4-bit model: 4-bit weights cannot be trained; "
                         "use --quant none (bf16)")
    return scope.method.select(structure, dead_prefixes, family, scope, lora_r=lora_r)


def select_in_model(model, config, family: Family, scope: TuningScope, **kw) -> Selection:
    return select(describe(model), family.dead_norms(config), family, scope, **kw)


def count_from_config(config, family: Family, scope: TuningScope, *, quant: str = "none", lora_r: int = RANK,
                      model=None) -> Selection:
    """Parameter accounting from config.json alone, with the same selection as training."""
    model = model if model is not None else meta_model(config, family)
    return select_in_model(model, config, family, scope, quant=quant, lora_r=lora_r)


def kept_unquantized(backbone: str, scope: TuningScope, quant: str, *, trust_remote_code: bool = False) -> tuple[str, ...]:
    """Linear layers a 4-bit load must leave in full precision because the scope trains them
    whole: known from config.json alone (meta model), before the weights load."""
    if quant != "4bit" or not scope.trains_whole_linears:
        return ()
    from ..backbones import load_config

    _, config, family = load_config(backbone, trust_remote_code=trust_remote_code)
    return tuple(count_from_config(config, family, scope).modules)


def apply_scope(model, config, family: Family, scope: TuningScope, *, quant: str = "none",
                lora_r: int = RANK, lora_alpha: int = ALPHA, lora_dropout: float = DROPOUT):
    """Make exactly the scope's parameters trainable; returns (model, Selection)."""
    import torch

    selection = select_in_model(model, config, family, scope, quant=quant, lora_r=lora_r)
    peft_config = scope.method.peft_config(selection, family, lora_r=lora_r, lora_alpha=lora_alpha,
                                           lora_dropout=lora_dropout)
    if peft_config is None:
        model.requires_grad_(True)
        return model, selection
    from peft import get_peft_model

    model = get_peft_model(model, peft_config)
    scope.method.after_wrap(model, config)
    # Trainable tensors in fp32 (optimizer state and tiny updates to ~1.0 norm gains are lost
    # in bf16); frozen tensors keep their dtype: no blanket upcast of the base model.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, selection


def param_groups(model, scope: TuningScope, lr: float, ln_lr: float) -> list[dict]:
    """Optimizer groups: ln-lora's norms take their own rate (LayerNorm tuning needs a far
    higher one than LoRA); every other scope is one group."""
    return scope.method.param_groups(model, lr, ln_lr)
