"""Scoring's generation (medln.generation): length-sorted batches that stop at the longest
reference plus a margin, rows still going continued from their KV cache, images encoded once
for all their questions. Every answer must equal the one a plain full-length generation gives
(each question in file order, its image encoded with it, MAX_NEW_TOKENS new tokens): on the
bundled model and data, and on every family's tiny model with caps forced low enough that the
continuation runs."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import FAMILY_NAMES
from medln import generation
from medln.data.images import load_image
from medln.evaluate import predict, subsample
from medln.prompts import batches, generate, question_text


def full_length(bb, model, samples, batch_size=16) -> list[str]:
    """The reference: batches in file order, every question encoding its image, no cap."""
    preds = {}
    for task in ("vqa", "report"):
        idx = [i for i, s in enumerate(samples) if s.task == task]
        for chunk in batches(idx, batch_size):
            answers = generate(bb, model, [load_image(samples[i].image) for i in chunk],
                               [question_text(samples[i]) for i in chunk],
                               max_new_tokens=generation.MAX_NEW_TOKENS[task])
            preds.update(zip(chunk, answers))
    return [preds[i] for i in range(len(samples))]


class Counting:
    """Counts what generation did: images through the vision tower, rows continued."""

    def __init__(self, monkeypatch):
        self.encoded = self.continued = 0
        outputs, cont = generation.ImageFeatures.outputs, generation._continue

        def counted_outputs(store, model, keys, pixels):
            before = store.encoded
            out = outputs(store, model, keys, pixels)
            self.encoded += store.encoded - before
            return out

        def counted_continue(*args, **kwargs):
            self.continued += len(args[4])
            return cont(*args, **kwargs)

        monkeypatch.setattr(generation.ImageFeatures, "outputs", counted_outputs)
        monkeypatch.setattr(generation, "_continue", counted_continue)


@pytest.fixture(scope="module")
def bundled():
    from medln.runs import BaseSpec

    return BaseSpec("medln-tiny").load("cpu")


def test_bundled_answers_equal_full_length_generation(bundled, monkeypatch):
    """The bundled model on a slice of both scored splits (both tasks, several questions per
    image): the same answers, fewer images encoded, and the cap really stopped some rows."""
    from medln.data import load_samples

    samples = subsample(load_samples("sample", "test").samples, 48) + \
        subsample(load_samples("sample", "source-test").samples, 48)
    # A margin of one token: the bundled model rarely runs 8 tokens past a reference, so the
    # default margin alone would leave the continuation untested on it.
    monkeypatch.setattr(generation, "MARGIN", 1)
    counting = Counting(monkeypatch)
    model = bundled.model.eval()
    got = predict(bundled, model, samples, adapter=False)
    assert got == full_length(bundled, model, samples)
    images = {str(s.image) for s in samples}
    assert counting.encoded == len(images) < len(samples)
    assert counting.continued > 0, "no row reached its batch's cap: the continuation went untested"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_answers_as_a_full_length_generation(family, tiny_model, train_samples, monkeypatch):
    """Caps forced to a few tokens, so rows are continued in every batch; questions repeated
    on the same images, so families that take pre-encoded images reuse them."""
    from medln.backbones import load_backbone

    bb = load_backbone(str(tiny_model(family)))
    samples = train_samples + [dataclasses.replace(s, id=s.id + "-again", question=s.question + " Again?")
                               for s in train_samples if s.task == "vqa"]
    monkeypatch.setattr(generation, "MARGIN", 1)
    monkeypatch.setattr(generation, "MAX_NEW_TOKENS", {"vqa": 6, "report": 9})
    counting = Counting(monkeypatch)
    model = bb.model.eval()
    got = predict(bb, model, samples, adapter=False, batch_size=4)
    want = full_length(bb, model, samples, batch_size=4)
    assert got == want
    if bb.family.image_features:
        assert counting.encoded == len({str(s.image) for s in samples}) < len(samples)
    if not bb.family.encoder_decoder:
        assert counting.continued > 0


def test_plan_sorts_by_length_and_caps_at_the_longest_reference(train_samples):
    class Words:  # a tokenizer stand-in: one token per word
        def __call__(self, texts, add_special_tokens=False):
            return type("Enc", (), {"input_ids": [t.split() for t in texts]})

    batches_ = generation.plan(train_samples, 3, Words())
    tasks = [t for t, _, _ in batches_]
    assert tasks == sorted(tasks, key=["vqa", "report"].index) and set(tasks) == {"vqa", "report"}
    for task, chunk, cap in batches_:
        lengths = [len(train_samples[i].answer.split()) for i in chunk]
        assert all(train_samples[i].task == task for i in chunk)
        assert cap == min(generation.MAX_NEW_TOKENS[task], max(lengths) + generation.MARGIN)
    order = [len(train_samples[i].answer.split()) for t, chunk, _ in batches_ if t == "vqa" for i in chunk]
    assert order == sorted(order)
    assert sorted(i for _, chunk, _ in batches_ for i in chunk) == list(range(len(train_samples)))


def test_progress_is_called_after_every_batch(tiny_model, train_samples):
    from medln.backbones import load_backbone

    bb = load_backbone(str(tiny_model("llava")))
    calls = []
    predict(bb, bb.model, train_samples, adapter=False, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    n = len(train_samples)
    assert calls[-1] == (n, n) and len(calls) == len(generation.plan(train_samples, 4, generation.tokenizer_of(bb)))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and all(t == n for _, t in calls)


@pytest.mark.parametrize("scope", ["prompt", "ln"])
def test_tuned_models_answer_as_a_full_length_generation(scope, tiny_model, train_samples, monkeypatch):
    """Through peft: LayerNorm copies (images pre-encoded by the tuned tower) and soft prompts
    (peft builds their inputs: no pre-encoding, no cap)."""
    import torch

    from medln.config import TrainConfig
    from medln.train import prepare

    tunable = prepare(TrainConfig(backbone=str(tiny_model("llava")), scope=scope), device="cpu")
    with torch.no_grad():
        for p in tunable.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)  # an adapter that changes the answers
    monkeypatch.setattr(generation, "MARGIN", 1)
    monkeypatch.setattr(generation, "MAX_NEW_TOKENS", {"vqa": 6, "report": 9})
    model = tunable.model.eval()
    got = predict(tunable.backbone, model, train_samples, batch_size=4)
    assert got == full_length(tunable.backbone, model, train_samples, batch_size=4)
    assert got != predict(tunable.backbone, model, train_samples, adapter=False, batch_size=4)
