"""IA³ (scope ia3): one learned scale per output of the attention keys and values and per
input of the MLP down-projection (Liu et al. 2022, T-Few), through peft's IA3.

Selection: the linears of the scope's groups (kv, down); each adds its out_features scales,
the down-projection its in_features. peft: IA3Config, with the down-projections as
feedforward_modules (scaled on their input). Movement: ‖l − 1‖/‖1‖, the learned scale against
identity. Merge: W scaled by l (rows for k/v, columns for the down-projection).
"""

from __future__ import annotations

import math

from .method import Method, Moved, in_target, nothing_selected, pick


class IA3(Method):
    name = "ia3"
    peft_type = "IA3"
    quant_note = "trains normally: the scale vectors are full precision beside 4-bit weights"
    params = {"ia3": ("l (IA³)", False)}
    fold = "W scaled by l (rows for k/v, columns for the MLP down-projection)"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        # IA³ scales the down-projection's input, every other target's output.
        sel = pick(structure, dead_prefixes, family, scope, selects="linear",
                   count=lambda m, target: m.in_features if target == "down" else m.out_features)
        if not sel.modules:
            raise nothing_selected(scope, family)
        return sel

    def peft_config(self, selection, family, **_):
        from peft import IA3Config

        return IA3Config(target_modules=selection.modules,
                         feedforward_modules=[n for n in selection.modules if in_target(family, n, "down")])

    def moved(self, module, adapter):
        if not (hasattr(module, "ia3_l") and adapter in module.ia3_l):
            return None
        scale = module.ia3_l[adapter]
        return [Moved("ia3", math.sqrt(scale.numel()), float((scale.detach().float() - 1).norm()), scale.numel())]


METHOD = IA3()
