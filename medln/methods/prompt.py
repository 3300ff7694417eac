"""Soft prompt tuning (scope prompt): PROMPT_TOKENS trained virtual tokens before the prompt,
image tokens left in place (Lester et al. 2021), through peft's PromptTuning.

Selection: no module of the model; PROMPT_TOKENS x the language model's width (its lm_head's
input). Refused, with the reason, for families whose image tokens virtual tokens would
misplace (Family.prompt_refusal). The virtual tokens start as copies of random vocabulary
embeddings, never an image placeholder's. A soft prompt is extra input, not a change to
weights: nothing to merge, nothing to inspect per layer.
"""

from __future__ import annotations

from .method import Method, ScopeError, Selection

PROMPT_TOKENS = 20  # virtual tokens of the `prompt` scope (Lester et al. 2021 found 20 ample)


class Prompt(Method):
    name = "prompt"
    peft_type = "PROMPT_TUNING"
    quant_note = "trains normally: only the virtual-token embeddings train"
    no_weights = "a soft prompt is extra input tokens, not a change to weights"

    def select(self, structure, dead_prefixes, family, scope, *, lora_r):
        if family.prompt_refusal:
            raise ScopeError(f"scope {scope.name!r} cannot run on a {family.name} model: {family.prompt_refusal}")
        head = next((m for m in structure if m.kind == "linear" and m.name.endswith("lm_head")), None)
        if head is None:
            raise ScopeError(f"scope {scope.name!r}: no lm_head in this {family.name} model to size the virtual tokens")
        total = sum(m.params for m in structure)
        return Selection(scope, ["(virtual tokens)"], PROMPT_TOKENS * head.in_features, total, 0, [],
                         [f"{PROMPT_TOKENS} virtual tokens x {head.in_features} (the language model's width)"])

    def peft_config(self, selection, family, **_):
        from peft import PromptTuningConfig

        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PROMPT_TOKENS)

    def after_wrap(self, model, config) -> None:
        """Virtual tokens start as copies of random vocabulary embeddings (Lester et al.'s
        sampled-vocab init; peft's random init is N(0, 1), far off the embeddings' scale). Never an
        image/special placeholder: LLaVA and Idefics3 find image positions by comparing embeddings
        with the image token's, so a copy of it would be taken for an image slot."""
        import torch

        embed = model.get_input_embeddings()
        vocab = embed.weight.shape[0]
        reserved = {v for k, v in config.to_dict().items()
                    if k.endswith(("token_id", "token_index")) and isinstance(v, int)}
        reserved |= {v for k, v in config.get_text_config().to_dict().items()
                     if k.endswith("token_id") and isinstance(v, int)}
        pool = torch.tensor([i for i in range(vocab) if i not in reserved])
        ids = pool[torch.randperm(len(pool))[:PROMPT_TOKENS]]  # global RNG: seeded by prepare()
        with torch.no_grad():
            target = model.prompt_encoder[model.active_adapter].embedding.weight
            target.copy_(embed.weight[ids.to(embed.weight.device)].to(target.dtype))


METHOD = Prompt()
