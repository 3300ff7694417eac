"""Full fine-tuning (scope full): every parameter trains; no adapter.

Selection: the whole model. No peft wrapper: requires_grad on every parameter, and a run
saves a whole checkpoint. Under 4-bit it cannot run (Linear4bit weights take no gradient):
load in bf16. There is no base to merge into and no adapter to inspect.
"""

from __future__ import annotations

from .method import Method, Selection


class Full(Method):
    name = "full"
    peft_type = None
    quant_4bit = "refuse"
    quant_note = "refused: 4-bit weights cannot be trained; load in bf16 (--quant none)"
    fold = "nothing to fold: the run saved whole weights"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        total = sum(m.params for m in structure)
        return Selection(scope, [""], total, total, 0, [], [])


METHOD = Full()
