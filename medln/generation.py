"""Greedy answers for many samples at once (medln.evaluate scores them), as fast as they can
be had without changing one of them:

- Batches hold one task each, sorted by length (the reference answer's tokens, then the
  question's): rows that end together are generated together, and padding stays short.
- A batch stops at its longest reference answer plus MARGIN tokens. A row still going there
  (no end-of-sequence yet) continues from its own KV cache, alone or with the other such rows,
  up to the task's full length (MAX_NEW_TOKENS): every answer is the one a full-length
  generation gives, and the rows that finished early no longer ride along
  (tests/test_generation.py checks the equality on the bundled data and on every family).
- An image is encoded once, however many questions ask about it: its features are handed to
  `generate` pre-encoded (transformers' `mm_encoder_outputs`), for families whose records say
  how those features lay out per image (Family.image_features).

Imports of torch stay inside the functions: `medln ask` and `--help` import this module.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator

MAX_NEW_TOKENS = {"vqa": 16, "report": 96}  # a full-length answer, per task
MARGIN = 8  # tokens past a batch's longest reference answer before its rows continue alone
FEATURE_BYTES = 256 * 2**20  # pre-encoded images kept per predict() call


def tokenizer_of(bb):
    return getattr(bb.processor, "tokenizer", bb.processor)


def plan(samples: list, batch_size: int, tokenizer) -> list[tuple[str, list[int], int]]:
    """(task, sample indices, cap in new tokens) for every batch: per task, sorted by the
    reference answer's length in tokens, then the question's; the cap is the batch's longest
    reference plus MARGIN, never past the task's full length."""
    out = []
    for task in ("vqa", "report"):
        idx = [i for i, s in enumerate(samples) if s.task == task]
        if not idx:
            continue
        ref = [len(t) for t in tokenizer([str(samples[i].answer) for i in idx], add_special_tokens=False).input_ids]
        length = {i: (r, len(samples[i].question or "")) for i, r in zip(idx, ref)}
        idx.sort(key=lambda i: length[i])
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            out.append((task, chunk, min(MAX_NEW_TOKENS[task], max(length[i][0] for i in chunk) + MARGIN)))
    return out


class ImageFeatures:
    """Images encoded once per call: image key -> the family's features for that image, at
    most `max_bytes` of them (oldest dropped). Valid for one model state only: the features
    of a tuned vision tower are not the base's, so each predict() makes its own."""

    def __init__(self, layout: str, max_bytes: int = FEATURE_BYTES):
        self.layout, self.max_bytes = layout, max_bytes
        self._store: OrderedDict = OrderedDict()
        self.encoded = 0  # images run through the vision tower (tests read it)

    def outputs(self, model, keys: list, pixel_values):
        """`mm_encoder_outputs` for a batch whose row r shows image keys[r] (pixels in row r)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        missing = list(dict.fromkeys(k for k in keys if k not in self._store))
        if missing:
            rows = [keys.index(k) for k in missing]
            out = _base(model).base_model.get_image_features(pixel_values=pixel_values[rows], return_dict=True)
            for k, feats in zip(missing, list(out.pooler_output)):
                self._store[k] = feats
            self.encoded += len(missing)
            self._trim(keep=set(keys))
        per_row = [self._store[k] for k in keys]
        pooled = per_row if self.layout == "list" else _stack(per_row)
        return {"image": BaseModelOutputWithPooling(pooler_output=pooled)}

    def _trim(self, keep: set) -> None:
        size = sum(t.numel() * t.element_size() for t in self._store.values())
        for k in list(self._store):
            if size <= self.max_bytes:
                break
            if k not in keep:
                size -= self._store[k].numel() * self._store[k].element_size()
                del self._store[k]


def _stack(tensors):
    import torch

    return torch.stack(tensors)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(config is not None and config.is_prompt_learning)


def features_for(bb, model) -> ImageFeatures | None:
    """An image-feature store for this model, or None where images are encoded per question:
    families without a per-image layout, and soft prompts (peft builds their inputs itself)."""
    layout = bb.family.image_features
    return ImageFeatures(layout) if layout and not _prompt_learning(model) else None


def answer_batch(bb, model, images: list, questions: list[str], *, cap: int, limit: int,
                 keys: list | None = None, features: ImageFeatures | None = None) -> list[str]:
    """Greedy answers: stop at `cap` new tokens, then rows that have not ended continue from
    their KV cache to `limit` (the answers of a `limit`-token generation). `keys` name each
    row's image for `features` (pre-encoded once per image)."""
    import torch

    from .precision import autocast_context, from_dtype
    from .prompts import encode_for_generation, to_device

    batch = encode_for_generation(bb, images, questions)
    device = next(p.device for p in model.parameters())
    precision = bb.precision or from_dtype(bb.dtype)
    batch = to_device(batch, device, precision.dtype if precision.autocast else None)
    tok = tokenizer_of(bb)
    decoder_only = not bb.family.encoder_decoder
    extra = {"pad_token_id": tok.pad_token_id} if decoder_only else {}
    if not decoder_only or _prompt_learning(model):
        cap = limit  # BLIP's decoder and peft's virtual tokens have no cache to continue from here
    with torch.inference_mode(), autocast_context(precision, device.type):
        if features is not None and keys is not None and "pixel_values" in batch:
            batch["mm_encoder_outputs"] = features.outputs(model, keys, batch.pop("pixel_values"))
        out = model.generate(**batch, max_new_tokens=cap, do_sample=False, return_dict_in_generate=True, **extra)
        seqs = out.sequences
        new = seqs[:, batch["input_ids"].shape[1]:] if decoder_only else seqs
        rows = [list(r) for r in new.tolist()]
        going = [i for i, r in enumerate(rows) if len(r) == cap and not _ended(r, _eos_ids(model, tok))] \
            if decoder_only and cap < limit else []
        if going:
            more = _continue(model, out.past_key_values, seqs, batch["attention_mask"], going, limit - cap, extra)
            for i, tail in zip(going, more):
                rows[i] += tail
    return [t.strip() for t in tok.batch_decode(rows, skip_special_tokens=True)]


def _eos_ids(model, tok) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return {int(e) for e in eos if e is not None} | ({tok.eos_token_id} if tok.eos_token_id is not None else set())


def _ended(row: list[int], eos: set[int]) -> bool:
    return any(t in eos for t in row)


def _continue(model, cache, seqs, attention_mask, rows: list[int], steps: int, extra: dict) -> list[list[int]]:
    """The rows still going, on from their cached keys and values (only their last token is
    new to the model): the same steps a longer first call would have taken."""
    import torch

    idx = torch.tensor(rows, device=seqs.device)
    cache.batch_select_indices(idx)
    done = seqs.shape[1] - attention_mask.shape[1]
    mask = torch.cat([attention_mask[idx], attention_mask.new_ones(len(rows), done)], dim=1)
    out = model.generate(input_ids=seqs[idx], attention_mask=mask, past_key_values=cache, max_new_tokens=steps,
                         do_sample=False, **extra)
    return out[:, seqs.shape[1]:].tolist()


def answering(bb, model, samples: list, *, batch_size: int, load: Callable, into: list) -> Iterator[tuple[int, int]]:
    """Fill `into` with the answers, in the order of `samples` (`load(sample)` gives its
    image), yielding (answered, total) after every batch."""
    from .prompts import question_text

    features = features_for(bb, model)
    answers: dict[int, str] = {}
    images: OrderedDict = OrderedDict()  # decoded images of the last few studies

    def image(s):
        key = _key(s)
        if key not in images:
            images[key] = load(s)
            if len(images) > 4 * batch_size:
                images.popitem(last=False)
        return images[key]

    for task, chunk, cap in plan(samples, batch_size, tokenizer_of(bb)):
        got = answer_batch(bb, model, [image(samples[i]) for i in chunk], [question_text(samples[i]) for i in chunk],
                           cap=cap, limit=MAX_NEW_TOKENS[task], keys=[_key(samples[i]) for i in chunk],
                           features=features)
        answers.update(zip(chunk, got))
        if len(answers) < len(samples):
            yield len(answers), len(samples)
    into[:] = [answers[i] for i in range(len(samples))]
    yield len(samples), len(samples)


def _key(sample):
    """What identifies a sample's image: its path, or its bytes' hash when it came inline."""
    if isinstance(sample.image, (bytes, bytearray)):
        import hashlib

        return hashlib.sha256(sample.image).hexdigest()
    return str(sample.image)
