"""LayerNorm tuning plus LoRA in one adapter (scope ln-lora): the paper's combination question.

Selection: the scope's part targets as norm.py selects them, its projection groups as
lora.py does. peft: one LoraConfig whose modules_to_save are the norms (a trainable copy
beside the frozen original, saved with the LoRA weights): one standard peft adapter. The
norms take their own learning rate (TrainConfig.ln_lr): LayerNorm tuning needs a far higher
one than LoRA. Movement: the norms as norm.py reads them, the projections as lora.py does.
Merge: W += B·A·alpha/r, and the trained norm copies replace the originals.
"""

from __future__ import annotations

from dataclasses import replace

from . import lora, norm
from .method import Method, Selection


class LnLora(Method):
    name = "ln-lora"
    peft_type = "LORA"
    params = {**norm.METHOD.params, **lora.METHOD.params}
    saved_shapes = lora.METHOD.saved_shapes
    fold = "W += B·A·alpha/r; the trained norm copies (modules_to_save) replace the originals"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        parts = tuple(t for t in scope.targets if t in family.parts)
        groups = tuple(t for t in scope.targets if t not in family.parts)
        norms = norm.METHOD.select(structure, dead_prefixes, family, replace(scope, targets=parts), lora_r=lora_r)
        proj = lora.METHOD.select(structure, dead_prefixes, family, replace(scope, targets=groups), lora_r=lora_r)
        return Selection(scope, proj.modules, norms.trainable + proj.trainable, proj.total, norms.dead,
                         norms.dead_modules, norms.notes, extra=norms.modules)

    def peft_config(self, selection, family, *, lora_r, lora_alpha, lora_dropout):
        from peft import LoraConfig

        return LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=selection.modules, modules_to_save=selection.extra)

    def param_groups(self, model, lr, ln_lr):
        """The norms (peft's modules_to_save copies) at ln_lr, the LoRA matrices at lr."""
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        norms = [p for n, p in params if ".modules_to_save." in n]
        rest = [p for n, p in params if ".modules_to_save." not in n]
        return [{"params": rest, "lr": lr, "name": "lora"}, {"params": norms, "lr": ln_lr, "name": "norms"}]

    def moved(self, module, adapter):
        saved = getattr(module, "modules_to_save", None)
        if saved is not None and hasattr(module, "original_module") and adapter in saved:
            return norm.pair_movement(module.original_module, saved[adapter])
        return lora.METHOD.moved(module, adapter)


METHOD = LnLora()
