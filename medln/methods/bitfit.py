"""BitFit (scope bitfit): every bias of a linear layer in the scope's parts (Ben Zaken et
al. 2022), through peft's BEFT adapter (b + Δb).

Selection: linears with a bias term (a tied bias counts at its first owner); biases under
the family's dead prefixes get no gradient and are left out. Norm biases belong to the ln
scopes. Llama/Mistral/Gemma language models have no biases: said in a note, and a model with
no bias at all is refused. Movement: ‖Δb‖ (absolute). Merge: b += Δb.
"""

from __future__ import annotations

from .method import Method, Moved, ScopeError, in_target, pick


class BitFit(Method):
    name = "bitfit"
    peft_type = "BEFT"
    quant_note = "trains normally: biases stay full precision beside 4-bit weights"
    params = {"beft": ("b (BEFT)", True)}
    fold = "b += Δb"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        sel = pick(structure, dead_prefixes, family, scope, selects="linear", count=lambda m, t: m.out_features,
                   needs_bias=True, skips_dead=True)
        if not sel.modules:
            raise ScopeError(f"scope {scope.name!r}: this {family.name} model has no linear layer with a bias term, "
                             "so there is nothing to train; choose ln-llm or lora")
        missing = [t for t in scope.targets if t in family.parts and family.parts[t]
                   and not any(in_target(family, n, t) for n in sel.modules)]
        if "llm" in missing:
            sel.notes.append("the language model has no bias terms (bias-free projections): bitfit trains the other "
                             "parts' biases only")
        return sel

    def peft_config(self, selection, family, **_):
        from peft import BeftConfig

        return BeftConfig(target_modules=selection.modules)

    def moved(self, module, adapter):
        if not (hasattr(module, "beft_bias") and adapter in module.beft_bias):
            return None
        delta, bias = module.beft_bias[adapter], module.get_base_layer().bias
        base = float(bias.detach().float().norm()) if bias is not None else 0.0
        return [Moved("beft", base, float(delta.detach().float().norm()), delta.numel())]


METHOD = BitFit()
