"""LayerNorm tuning (scopes ln, ln-vision, ln-llm): the affine parameters of every norm in the
scope's parts that gets a gradient (Chen et al. 2024).

Selection: norms by module type (medln.structure.is_norm); the norms after the layer a
model reads its features from get no gradient and are left out ("dead": LLaVA's last
vision block and post_layernorm). peft: LNTuningConfig with the explicit full module names
(its default mapping is not LayerNorm-only: docs/design.md "Traps"); it keeps a trainable
copy of each norm beside the frozen original. Movement: ‖Δγ‖/‖γ‖ for the gain (against
the effective gain: Gemma's RMSNorm computes x * (1 + w)), ‖Δβ‖ for the bias. Merge: the
trained copy replaces the original, an exact swap.
"""

from __future__ import annotations

from ..structure import is_norm, shape_of
from .method import Method, Moved, nothing_selected, pick


def gain_offset(module) -> float:
    """1.0 for RMSNorms that compute x * (1 + w) (Gemma's: identity is w = 0), else 0.0. Found by
    running the module on a vector of ones (rms 1, so the output is the effective gain), not by
    a table of class names."""
    import torch

    w = getattr(module, "weight", None)
    if w is None or not type(module).__name__.endswith("RMSNorm"):
        return 0.0
    with torch.no_grad():
        out = module(torch.ones(1, w.shape[-1], dtype=w.dtype, device=w.device)).float().flatten()
    return 1.0 if torch.allclose(out, 1 + w.float().flatten(), rtol=1e-2, atol=1e-3) else 0.0


def _norm(t) -> float:
    return float(t.detach().float().norm())


def pair_movement(base, tuned) -> list[Moved]:
    """A trained copy against its frozen original, per parameter: norms as gain / bias (the
    gain against its effective value), any other module by its parameter names."""
    norm = is_norm(base)
    offset = gain_offset(base) if norm else 0.0
    trained = dict(tuned.named_parameters(recurse=False))
    out = []
    for pname, b in base.named_parameters(recurse=False):
        if pname not in trained:
            continue
        kind = ("gain" if pname == "weight" else "bias") if norm else pname
        ref = b.float() + offset if kind == "gain" else b.float()
        out.append(Moved(kind, _norm(ref), _norm(trained[pname].float() - b.float()), b.numel()))
    return out


def ln_tuning_pair(module, adapter: str):
    """(frozen original, trained copy) of a peft LN-tuning layer holding `adapter`, else None."""
    layers = getattr(module, "ln_tuning_layers", None)
    if layers is None or adapter not in layers:
        return None
    base, tuned = module.base_layer, layers[adapter]
    if adapter in getattr(module, "merged_adapters", ()):  # merged: peft swapped the two
        base, tuned = tuned, base
    return base, tuned


class Norm(Method):
    name = "norm"
    peft_type = "LN_TUNING"
    params = {"gain": ("γ", False), "bias": ("β", True)}
    # a trained copy of the whole module: the same shapes as the base module's
    saved_shapes = {".ln_tuning_layers.": lambda layer, param, saved: shape_of(getattr(layer, param.split(".")[-1], None))}
    fold = "the trained copy of each module replaces the original (a swap: exact)"
    swaps_in = True

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        sel = pick(structure, dead_prefixes, family, scope, selects="norm", count=lambda m, t: m.params,
                   skips_dead=True)
        if not sel.modules:
            raise nothing_selected(scope, family)
        return sel

    def peft_config(self, selection, family, **_):
        from peft import LNTuningConfig

        return LNTuningConfig(target_modules=selection.modules)

    def moved(self, module, adapter):
        pair = ln_tuning_pair(module, adapter)
        return pair_movement(*pair) if pair else None


METHOD = Norm()
