"""predict() and evaluate(): greedy answers for samples, scored with medln.metrics.

Base answers come from the same weights as tuned answers: a peft model's
`disable_adapter()` context runs the frozen originals (docs/design.md: one copy in memory).
"""

from __future__ import annotations

import json
from pathlib import Path

from .adapters import adapter_off
from .backbones import Backbone
from .data.sample import PHRASINGS, Sample

MAX_NEW_TOKENS = {"vqa": 16, "report": 96}

def predict(bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
            progress=None) -> list[str]:
    # Imported here: the CLI's --help imports this module without numpy/PIL.
    from .data.images import load_image
    from .prompts import batches, generate, question_text

    model.eval()
    preds: list[str] = []
    with adapter_off(model, off=not adapter):
        for task in ("vqa", "report"):
            idx = [i for i, s in enumerate(samples) if s.task == task]
            for chunk in batches(idx, batch_size):
                images = [load_image(samples[i].image, where=samples[i].where) for i in chunk]
                questions = [question_text(samples[i]) for i in chunk]
                answers = generate(bb, model, images, questions, max_new_tokens=MAX_NEW_TOKENS[task])
                preds.extend(zip(chunk, answers))
                if progress:
                    progress(len(preds), len(samples))
    return [a for _, a in sorted(preds, key=lambda t: t[0])]


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


def evaluate(bb: Backbone, model, samples: list[Sample], *, adapter: bool = True, batch_size: int = 16,
             predictions_path: Path | None = None, progress=None, with_meteor: bool = False) -> dict:
    preds = predict(bb, model, samples, adapter=adapter, batch_size=batch_size, progress=progress)
    if predictions_path is not None:
        with Path(predictions_path).open("w", encoding="utf-8") as f:
            for s, p in zip(samples, preds):
                f.write(json.dumps({"id": s.id, "task": s.task, "question": s.question, "prediction": p,
                                    "answer": s.answer}) + "\n")
    return score(samples, preds, with_meteor=with_meteor)
