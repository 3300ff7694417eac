"""Intrinsic attention / MLP tuning (scopes attn, ffn): the whole weights of the language
model's projections in the scope's groups, the paper's "intrinsic" baselines.

Selection: the linear layers matching the family's projection group. peft: the LN-tuning
mechanism wraps any module, so LNTuningConfig on these linears trains a copy of each whole
weight (the adapter saves and reloads in peft's format; `disable_adapter()` gives base
answers from the same weights). Under 4-bit these projections are kept unquantized:
Linear4bit weights take no gradient. Movement: ‖ΔW‖/‖W‖, read like any LN-tuning layer
(norm.pair_movement). Merge: the trained copy replaces the original, an exact swap.
"""

from __future__ import annotations

from .method import Method, nothing_selected, pick
from . import norm


def _whole(m, target) -> int:
    return m.in_features * m.out_features + (m.out_features if m.bias else 0)


class WholeLinear(Method):
    name = "whole-linear"
    peft_type = "LN_TUNING"
    quant_4bit = "keep"
    quant_note = "trains; these projections are kept unquantized (bf16), the rest is 4-bit"
    params = {"weight": ("W", False), "bias": ("β", True)}
    saved_shapes = norm.METHOD.saved_shapes
    fold = norm.METHOD.fold
    swaps_in = True

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        sel = pick(structure, dead_prefixes, family, scope, selects="linear", count=_whole)
        if not sel.modules:
            raise nothing_selected(scope, family)
        return sel

    def peft_config(self, selection, family, **kw):
        return norm.METHOD.peft_config(selection, family, **kw)

    def moved(self, module, adapter):
        return norm.METHOD.moved(module, adapter)


METHOD = WholeLinear()
