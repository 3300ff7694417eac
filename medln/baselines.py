"""Reference rows that look at no image: how much of a score needs the image at all.

The image-blind baseline answers every VQA question with the most frequent *train*
answer for the same normalised question text (LLaVA-Med's `normalize_answer`), and every
report request with the most frequent train report. A question never seen in train backs
off to the most frequent train answer of its (answer type, question type), then of its
answer type, then of all train questions: the blind model may read the question, never the
image. Ties go to the answer seen first in train, so the baseline is deterministic.

It is fitted on the train split only (`fit_blind`), then scored like any model
(`evaluate.score`): a fine-tune that does not beat it has learned answer priors, not images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .data.sample import Sample
from .metrics import normalize_answer


def _mode(counts: Counter) -> str:
    # Counter.most_common keeps insertion order among equal counts: the first seen wins.
    return counts.most_common(1)[0][0]


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
    it answered from an exact train question (`seen_questions`)."""
    from .evaluate import score

    answered = [baseline.answer(s) for s in samples]
    result = score(samples, [a for a, _ in answered])
    result["seen_questions"] = sum(how == "question" for _, how in answered)
    return result


__all__ = ["BlindBaseline", "fit_blind", "score_blind"]
