"""A model's structure as plain data: one ModuleInfo per module (kind, own parameters,
linear widths), so selection and counting run the same rule on a loaded model, a
meta-device model (medln.backbones.meta_model: no weights) or a cached description
(medln.accounting).

Norms are found by module type (nn.LayerNorm, or any class whose name ends in LayerNorm /
RMSNorm), never by name: CLIP's is `pre_layrnorm`, Qwen2-VL's merger norm is `ln_q`
(docs/design.md "Traps").
"""

from __future__ import annotations

from dataclasses import dataclass


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


def shape_of(tensor) -> tuple[int, ...] | None:
    """Logical shape of a tensor (None for none), 4-bit packed weights included."""
    if tensor is None:
        return None
    quant_state = getattr(tensor, "quant_state", None)
    return tuple(quant_state.shape) if quant_state is not None else tuple(tensor.shape)


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


def trainable_summary(model, total: int) -> tuple[int, float]:
    """Trainable parameters of a (peft-)wrapped model against the BASE model's count: peft's
    print_trainable_parameters counts LNTuningLayer's copies in its denominator."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, 100.0 * trainable / total
