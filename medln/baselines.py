"""The image-blind row beside every tuned score: how much of a score needs no image at all.

Fitted on the train split only and scored like any model (`evaluate.score`'s keys); its
image-aware counterpart, the probe ceiling, is medln.probe, and medln.references computes
both for the items a run scores.

- **Image-blind** (`fit_blind`, `score_blind`): every VQA question gets the most frequent
  *train* answer for the same normalised question text (LLaVA-Med's `normalize_answer`),
  every report request the most frequent train report. A question never seen in train backs
  off to the most frequent train answer of its (answer type, question type), then of its
  answer type, then of all train questions: the blind model may read the question, never
  the image. Ties go to the answer seen first in train, so it is deterministic. A fine-tune
  that does not beat it has learned answer priors, not images.

`phrasing` / `score_by_phrasing`: every bundled sample record says whether its question's
wording occurs in its target's train split ("seen") or not ("held-out"), so any score can
be split by it (a model that only matches train wordings is measured on the held-out part).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .data.sample import PHRASINGS, Sample
from .metrics import normalize_answer


def _mode(counts: Counter) -> str:
    # Counter.most_common keeps insertion order among equal counts: the first seen wins.
    return counts.most_common(1)[0][0]


# --------------------------------------------------------------------------- image-blind

@dataclass
class BlindBaseline:
    """Most-frequent-train-answer tables, from the finest key to the coarsest."""

    by_question: dict[str, str] = field(default_factory=dict)
    by_type: dict[tuple[str, str], str] = field(default_factory=dict)
    by_answer_type: dict[str, str] = field(default_factory=dict)
    any_answer: str = ""
    report: str = ""
    n_train: int = 0
    n_train_reports: int = 0

    def answer(self, sample: Sample) -> tuple[str, str]:
        """(prediction, which table answered: question | type | answer_type | any | report)."""
        if sample.is_report:
            return self.report, "report"
        q = normalize_answer(sample.question or "")
        if q in self.by_question:
            return self.by_question[q], "question"
        key = (sample.answer_type or "", sample.question_type or "")
        if key in self.by_type:
            return self.by_type[key], "type"
        if (sample.answer_type or "") in self.by_answer_type:
            return self.by_answer_type[sample.answer_type or ""], "answer_type"
        return self.any_answer, "any"

    def predict(self, samples: list[Sample]) -> list[str]:
        return [self.answer(s)[0] for s in samples]


def fit_blind(train: list[Sample]) -> BlindBaseline:
    """The blind baseline from train samples (questions, answers and reports; no image read)."""
    by_q: dict[str, Counter] = {}
    by_t: dict[tuple[str, str], Counter] = {}
    by_at: dict[str, Counter] = {}
    every, reports = Counter(), Counter()
    for s in train:
        if s.is_report:
            reports[s.answer] += 1
            continue
        by_q.setdefault(normalize_answer(s.question or ""), Counter())[s.answer] += 1
        by_t.setdefault((s.answer_type or "", s.question_type or ""), Counter())[s.answer] += 1
        by_at.setdefault(s.answer_type or "", Counter())[s.answer] += 1
        every[s.answer] += 1
    return BlindBaseline(
        by_question={q: _mode(c) for q, c in by_q.items()},
        by_type={k: _mode(c) for k, c in by_t.items()},
        by_answer_type={k: _mode(c) for k, c in by_at.items()},
        any_answer=_mode(every) if every else "",
        report=_mode(reports) if reports else "",
        n_train=sum(every.values()),
        n_train_reports=sum(reports.values()),
    )


def score_blind(baseline: BlindBaseline, samples: list[Sample]) -> dict:
    """The baseline's metrics on `samples` (evaluate.score's keys), plus how many questions
    it answered from an exact train question (`seen_questions`); `by_phrasing` as score gives it."""
    from .evaluate import score

    answered = [baseline.answer(s) for s in samples]
    preds = [a for a, _ in answered]
    result = score(samples, preds)
    result["seen_questions"] = sum(how == "question" for _, how in answered)
    return result


# --------------------------------------------------------------------------- phrasing

def phrasing(sample: Sample) -> str | None:
    """"seen" / "held-out" as the record says (bundled sample), else None (unknown)."""
    return sample.phrasing


def mark_phrasing(samples: list[Sample], train: list[Sample]) -> dict[str, str]:
    """{sample id: "seen" | "held-out"} by whether its normalised question occurs in `train`
    (for data whose records do not say; reports are left out)."""
    seen = {normalize_answer(s.question or "") for s in train if not s.is_report}
    return {s.id: "seen" if normalize_answer(s.question or "") in seen else "held-out"
            for s in samples if not s.is_report}


def score_by_phrasing(samples: list[Sample], preds: list[str], labels: dict[str, str] | None = None) -> dict:
    """{"seen": metrics, "held-out": metrics} over the VQA items of each kind of phrasing
    (a kind with no item is left out). `labels` {id: kind} overrides the records' own flags."""
    from .evaluate import score

    groups: dict[str, tuple[list, list]] = {}
    for s, p in zip(samples, preds):
        kind = (labels or {}).get(s.id) or phrasing(s)
        if s.is_report or kind is None:
            continue
        group = groups.setdefault(kind, ([], []))
        group[0].append(s)
        group[1].append(p)
    return {k: score(*groups[k], by_phrasing=False) for k in PHRASINGS if k in groups}


__all__ = ["BlindBaseline", "PHRASINGS", "fit_blind", "mark_phrasing", "phrasing", "score_blind", "score_by_phrasing"]
