"""Samples -> model inputs, per family: prompts, training labels, generation, decoding.

Decoder-only families (llava, idefics3, qwen2_vl, gemma3) see `prompt + answer + eos`;
only the answer tokens carry labels. BLIP (encoder-decoder) takes the question as the
encoder text and the answer as decoder labels.
"""

from __future__ import annotations

from typing import Iterable

from .backbones import REPORT_PROMPT, Backbone
from .data.images import load_image
from .data.sample import DataError, Sample

IGNORE = -100  # label value the loss skips
MAX_QUESTION_CHARS = 500  # a question, not a document: the CLI and the app refuse longer ones


def check_question(question: str | None) -> None:
    """A free-text question of bounded length (None: a report is asked for)."""
    if question is not None and len(question) > MAX_QUESTION_CHARS:
        raise DataError(f"the question is too long ({len(question)} characters; the limit is {MAX_QUESTION_CHARS})")


def question_text(sample: Sample) -> str:
    return sample.question if sample.question else REPORT_PROMPT


def render_prompt(bb: Backbone, question: str) -> str:
    """The text before the answer, with the family's image placeholder."""
    if bb.prompt:
        return bb.prompt.format(question=question)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return bb.processor.apply_chat_template(messages, add_generation_prompt=True)


def render_full(bb: Backbone, question: str, answer: str) -> tuple[str, str]:
    """(prompt, prompt + answer + end-of-turn). Chat families render the assistant turn with
    their own template, so the answer ends with the token the model stops on
    (<end_of_utterance>, <|im_end|>, <end_of_turn>)."""
    prompt = render_prompt(bb, question)
    eos = _tokenizer(bb).eos_token or ""
    if not bb.prompt:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        full = bb.processor.apply_chat_template(messages, add_generation_prompt=False)
        if full.startswith(prompt):
            return prompt, full
    return prompt, f"{prompt} {answer}{eos}"


def _process(bb: Backbone, images: list, texts: list[str]) -> dict:
    """Run the processor; templates that render <bos> themselves must not get a second one
    (Gemma 3's does)."""
    bos = _tokenizer(bb).bos_token
    kwargs = {"add_special_tokens": False} if bos and all(t.startswith(bos) for t in texts) else {}
    return bb.processor(images=_images_arg(bb, images), text=texts, padding=True, return_tensors="pt", **kwargs)


def _images_arg(bb: Backbone, images: list):
    return [[im] for im in images] if bb.family.nested_images else images


def _tokenizer(bb: Backbone):
    return getattr(bb.processor, "tokenizer", bb.processor)


class _padding_side:
    """Right padding for training (labels line up), left for batched generation."""

    def __init__(self, bb: Backbone, side: str):
        self.tok, self.side = _tokenizer(bb), side

    def __enter__(self):
        self.old, self.tok.padding_side = self.tok.padding_side, self.side

    def __exit__(self, *exc):
        self.tok.padding_side = self.old


def encode_for_training(bb: Backbone, samples: list[Sample], max_length: int = 512) -> dict:
    images = [load_image(s.image, where=s.where) for s in samples]
    questions = [question_text(s) for s in samples]
    answers = [s.answer for s in samples]
    if bb.family.encoder_decoder:
        tok = _tokenizer(bb)
        with _padding_side(bb, "right"):
            batch = bb.processor(images=images, text=questions, padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
            target = tok(answers, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ids = target.input_ids.clone()
        # BLIP's decoder starts from its BOS ([DEC]) in place of [CLS]; the LM head shifts labels.
        ids[:, 0] = bb.model.config.text_config.bos_token_id
        labels = ids.masked_fill(target.attention_mask == 0, IGNORE)
        batch["decoder_input_ids"], batch["labels"] = ids, labels
        return dict(batch)

    prompts, full = zip(*(render_full(bb, q, a) for q, a in zip(questions, answers)))
    with _padding_side(bb, "right"):
        batch = _process(bb, images, list(full))
        # Same images, prompt only: image-token expansion is counted the same way.
        prompt_only = _process(bb, images, list(prompts))
    labels = batch["input_ids"].clone()
    prompt_len = prompt_only["attention_mask"].sum(dim=1)
    for i, n in enumerate(prompt_len.tolist()):
        labels[i, :n] = IGNORE
    labels[batch["attention_mask"] == 0] = IGNORE
    batch["labels"] = labels
    if batch["input_ids"].shape[1] > max_length:
        # Truncating would cut image tokens out of sync with pixel features: refuse clearly.
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        i = max(range(len(lengths)), key=lengths.__getitem__)
        raise DataError(f"{samples[i].where}: {lengths[i]} tokens (the prompt with its image tokens, "
                        f"and the answer) exceed max_length={max_length}; raise --max-length to at least {lengths[i]}")
    return dict(batch)


def encode_for_generation(bb: Backbone, images: list, questions: list[str]) -> dict:
    if bb.family.encoder_decoder:
        with _padding_side(bb, "right"):
            return dict(bb.processor(images=images, text=questions, padding=True, return_tensors="pt"))
    prompts = [render_prompt(bb, q) for q in questions]
    with _padding_side(bb, "left"):
        return dict(_process(bb, images, prompts))


def to_device(batch: dict, device, dtype=None) -> dict:
    """Move tensors; floating inputs (pixel values) take the model's compute dtype."""
    out = {}
    for k, v in batch.items():
        if hasattr(v, "to"):
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def generate(bb: Backbone, model, images: list, questions: list[str], *, max_new_tokens: int = 24,
             streamer=None) -> list[str]:
    """Greedy answers, one per (image, question). `model` may be the peft wrapper."""
    import torch

    from .precision import autocast_context, from_dtype

    batch = encode_for_generation(bb, images, questions)
    device = next(p.device for p in model.parameters())
    precision = bb.precision or from_dtype(bb.dtype)
    # Pixel values take the weights' dtype (bf16/fp16 loads; fp32 stays fp32).
    batch = to_device(batch, device, precision.dtype if precision.autocast else None)
    tok = _tokenizer(bb)
    # BLIP's generate sets its own pad/bos ids; decoder-only models need the pad id.
    extra = {} if bb.family.encoder_decoder else {"pad_token_id": tok.pad_token_id}
    # The trained norm copies are fp32 beside bf16/fp16 weights: autocast, as in training.
    with torch.inference_mode(), autocast_context(precision, device.type):
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer, **extra)
    if not bb.family.encoder_decoder:
        out = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


def batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
