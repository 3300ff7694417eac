"""LoRA (scope lora): low-rank A/B matrices beside the language model's attention and MLP
projections, r = TrainConfig.lora_r, alpha = lora_alpha (Hu et al. 2021).

Selection: the projections of the scope's groups; each adds r x (in + out) numbers
(A: r x in, B: out x r). peft: LoraConfig on exactly those modules. Movement: ‖ΔW‖/‖W‖ with
ΔW = B·A·alpha/r (peft's get_delta_weight), W dequantized under 4-bit. Merge: W += B·A·alpha/r.
"""

from __future__ import annotations

from .method import Method, Moved, nothing_selected, pick

# The LoRA defaults, written once (TrainConfig, bench and the scope descriptions read them):
# r = 8, alpha = 16 as in the QLoRA-style recipes; dropout 0.05.
RANK = 8
ALPHA = 16
DROPOUT = 0.05


def dense_weight(layer):
    """The base weight of a (possibly 4-bit) linear layer, dequantized."""
    w = layer.weight
    if getattr(w, "quant_state", None) is not None:
        import bitsandbytes.functional as F

        return F.dequantize_4bit(w.data, w.quant_state)
    return w


class LoRA(Method):
    name = "lora"
    peft_type = "LORA"
    params = {"lora": ("ΔW (LoRA)", False)}
    saved_shapes = {
        ".lora_A.": lambda layer, param, saved: (saved[0], getattr(layer, "in_features", saved[-1])),  # (rank, in)
        ".lora_B.": lambda layer, param, saved: (getattr(layer, "out_features", saved[0]), saved[-1]),  # (out, rank)
    }
    fold = "W += B·A·alpha/r"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        sel = pick(structure, dead_prefixes, family, scope, selects="linear",
                   count=lambda m, t: lora_r * (m.in_features + m.out_features))
        if not sel.modules:
            raise nothing_selected(scope, family)
        return sel

    def peft_config(self, selection, family, *, lora_r, lora_alpha, lora_dropout):
        from peft import LoraConfig

        return LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=selection.modules)

    def moved(self, module, adapter):
        if not (hasattr(module, "lora_A") and adapter in module.lora_A):
            return None
        base = float(dense_weight(module.get_base_layer()).detach().float().norm())
        delta = float(module.get_delta_weight(adapter).detach().float().norm())
        return [Moved("lora", base, delta, module.lora_A[adapter].weight.numel() + module.lora_B[adapter].weight.numel())]


METHOD = LoRA()
