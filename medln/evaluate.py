"""predict() and evaluate(): greedy answers for samples (medln.generation), scored with
medln.metrics; the base model's answers come from medln.prediction_cache when it holds them.

Base answers come from the same weights as tuned answers: a peft model's
`disable_adapter()` context runs the frozen originals (docs/design.md: one copy in memory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .adapters import adapter_off
from .backbones import Backbone
from .data.sample import PHRASINGS, Sample
from .generation import MAX_NEW_TOKENS, answering  # noqa: F401 (MAX_NEW_TOKENS: ask's length)
from . import prediction_cache


def predicting(bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
               into: list) -> Iterator[tuple[int, int]]:
    """Greedy answers into `into`, in the order of `samples`, batched by task and length, each
    image encoded once (medln.generation); yields (answered, total) after every batch."""
    # Imported here: the CLI's --help imports this module without numpy/PIL.
    from .data.images import load_image

    model.eval()
    with adapter_off(model, off=not adapter):
        yield from answering(bb, model, samples, batch_size=batch_size, into=into,
                             load=lambda s: load_image(s.image, where=s.where))


def predict(bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
            progress=None) -> list[str]:
    """The answers; `progress(done, total)` is called after every generated batch."""
    preds: list[str] = []
    for done, total in predicting(bb, model, samples, adapter=adapter, batch_size=batch_size, into=preds):
        if progress:
            progress(done, total)
    return preds


def score(samples: list[Sample], preds: list[str], *, with_meteor: bool = False, by_phrasing: bool = True) -> dict:
    """Flat metric dict: VQA keys (n, closed_accuracy, open_recall, overall, ...; n counts the report
    items instead when the split has no VQA item) and, when
    the split has report items, report keys (bleu_1..bleu_4, rouge_l, meteor, cider).
    When the VQA records say their phrasing (Sample.phrasing), also `by_phrasing`:
    {"seen": VQA keys, "held-out": VQA keys} over those items (a kind with none is left out;
    data that does not say gets no such key: no split is invented)."""
    from .metrics import score_vqa
    from .scoring import score_report

    result: dict = {}
    vqa = [(s, p) for s, p in zip(samples, preds) if s.task == "vqa"]
    rep = [(s, p) for s, p in zip(samples, preds) if s.task == "report"]
    if vqa:
        refs = [{"answer": s.answer, "answer_type": s.answer_type, "question_type": s.question_type} for s, _ in vqa]
        result.update(score_vqa([p for _, p in vqa], refs))
        groups = {k: [(s, p) for s, p in vqa if s.phrasing == k] for k in PHRASINGS} if by_phrasing else {}
        if any(groups.values()):
            result["by_phrasing"] = {k: score([s for s, _ in g], [p for _, p in g], by_phrasing=False)
                                     for k, g in groups.items() if g}
    else:
        result["n"] = len(rep)  # a report-only split: its item count (n_report below says the same)
    if rep:
        # METEOR starts a Java process (~20 s): on for `eval`/`score`, off inside training runs.
        report = score_report([p for _, p in rep], [s.answer for s, _ in rep], with_meteor=with_meteor)
        result["n_report"] = report.pop("n")
        result.update(report)
    return result


def subsample(samples: list[Sample], n: int) -> list[Sample]:
    """At most n samples, each task (vqa, report) in proportion to its share, evenly spaced
    within it: the files are ordered by study, so a prefix would cover only the first few
    studies, and one stride over the mixed list aliases with the items per study (a report
    every ~8 lines: 240 of 861 picked 15 reports, 200 picked 20)."""
    if not n or n >= len(samples):
        return samples
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task, []).append(i)
    exact = {t: n * len(idx) / len(samples) for t, idx in by_task.items()}
    share = {t: int(v) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: exact[t] - share[t], reverse=True)[: n - sum(share.values())]:
        share[t] += 1  # largest remainders
    picked = [idx[int(k * len(idx) / share[t])] for t, idx in by_task.items() for k in range(share[t])]
    return [samples[i] for i in sorted(picked)]


class Scoring:
    """One split scored, step by step: iterating yields (answered, total) after every
    generated batch; then `metrics` holds the scores, and `cached` says whether the answers
    came from the base-prediction cache (`base_key`: these are the base model's answers, read
    from and written to medln.prediction_cache)."""

    def __init__(self, bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
                 base_key: dict | None = None, predictions_path: Path | None = None, with_meteor: bool = False):
        self.bb, self.model, self.samples, self.adapter, self.batch_size = bb, model, samples, adapter, batch_size
        self.base_key, self.predictions_path, self.with_meteor = base_key, predictions_path, with_meteor
        self.metrics: dict | None = None
        self.cached = False

    def __iter__(self) -> Iterator[tuple[int, int]]:
        preds = prediction_cache.load(self.base_key, self.samples)
        self.cached = preds is not None
        if preds is None:
            preds = []
            yield from predicting(self.bb, self.model, self.samples, adapter=self.adapter,
                                  batch_size=self.batch_size, into=preds)
            prediction_cache.save(self.base_key, self.samples, preds)
        else:
            yield len(self.samples), len(self.samples)
        if self.predictions_path is not None:
            with Path(self.predictions_path).open("w", encoding="utf-8") as f:
                for s, p in zip(self.samples, preds):
                    f.write(json.dumps({"id": s.id, "task": s.task, "question": s.question, "prediction": p,
                                        "answer": s.answer}) + "\n")
        self.metrics = score(self.samples, preds, with_meteor=self.with_meteor)


def evaluate(bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
             predictions_path: Path | None = None, progress=None, with_meteor: bool = False,
             base_key: dict | None = None) -> dict:
    """A split's scores; `progress(done, total)` after every generated batch (once, at the
    end, when `base_key` finds the base's answers cached)."""
    scoring = Scoring(bb, model, samples, adapter=adapter, batch_size=batch_size, base_key=base_key,
                      predictions_path=predictions_path, with_meteor=with_meteor)
    for done, total in scoring:
        if progress:
            progress(done, total)
    return scoring.metrics


def scored(parts: list[tuple[str, str, Scoring]], *, later: int = 0) -> Iterator[dict]:
    """Score each (which, split, Scoring) in turn, yielding a "score" record after every
    generated batch (medln.train.EVENTS): `left` counts the answers still to come in the run,
    these parts' and `later` more, so a reader can tell how much scoring remains."""
    sizes = [len(scoring.samples) for _, _, scoring in parts]
    for k, (which, split, scoring) in enumerate(parts):
        ahead = sum(sizes[k + 1:]) + later
        for done, total in scoring:
            yield {"event": "score", "which": which, "split": split, "done": done, "total": total,
                   "left": total - done + ahead, "cached": scoring.cached}

