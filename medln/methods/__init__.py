"""Tuning methods, one module each (as peft lays out its tuners), and the scopes that apply
them (registry.py: one line per scope). See method.py for what a method provides.

    norm.py          LayerNorm tuning: ln, ln-vision, ln-llm
    whole_linear.py  intrinsic attention / MLP tuning: attn, ffn
    lora.py          LoRA: lora
    full.py          full fine-tuning: full
    ia3.py           IA³: ia3
    bitfit.py        BitFit (peft BEFT): bitfit
    prompt.py        soft prompt tuning: prompt
    ln_lora.py       norms + LoRA in one adapter: ln-lora
"""

from .apply import apply_scope, count_from_config, kept_unquantized, param_groups, select, select_in_model
from .method import Method, Moved, ScopeError, Selection, TuningScope, in_target
from .prompt import PROMPT_TOKENS
from .registry import (ABSOLUTE_PARAMS, METHODS, PARAMS, PEFT_TYPES, SCOPES, default_batch, default_lr, find_scope,
                       get_scope, methods_of, scope_names)

__all__ = ["ABSOLUTE_PARAMS", "METHODS", "Method", "Moved", "PARAMS", "PEFT_TYPES", "PROMPT_TOKENS", "SCOPES",
           "ScopeError", "Selection", "TuningScope", "apply_scope", "count_from_config", "default_batch", "default_lr", "find_scope",
           "get_scope", "in_target", "kept_unquantized", "methods_of", "param_groups", "scope_names", "select",
           "select_in_model"]
