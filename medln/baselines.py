"""Reference rows beside every tuned score: how much needs the image, and how much the image holds.

Two rows, both fitted on the train split only and scored like any model (`evaluate.score`'s keys):

- **Image-blind** (`fit_blind`, `score_blind`): every VQA question gets the most frequent
  *train* answer for the same normalised question text (LLaVA-Med's `normalize_answer`),
  every report request the most frequent train report. A question never seen in train backs
  off to the most frequent train answer of its (answer type, question type), then of its
  answer type, then of all train questions: the blind model may read the question, never
  the image. Ties go to the answer seen first in train, so it is deterministic. A fine-tune
  that does not beat it has learned answer priors, not images.
- **Image-aware ceiling** (`fit_probe`, `score_probe`): the same table structure, but each
  entry is a logistic regression from the backbone's *frozen* vision features (the tokens
  the language model is given, before the connector) to the answer: one classifier per
  normalised train question, backing off to one per (answer type, question type). It shows
  what a linear read-out of the untouched vision tower gets; a tuned model far below it
  loses information between the image and the answer (connector, language model, training),
  not in the pixels. Reports get the blind row's report.

`phrasing` / `score_by_phrasing`: every bundled sample record says whether its question's
wording occurs in its target's train split ("seen") or not ("held-out"), so any score can
be split by it (a model that only matches train wordings is measured on the held-out part).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .data.sample import Sample
from .metrics import normalize_answer

PHRASINGS = ("seen", "held-out")


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
    it answered from an exact train question (`seen_questions`) and the split by phrasing."""
    from .evaluate import score

    answered = [baseline.answer(s) for s in samples]
    preds = [a for a, _ in answered]
    result = score(samples, preds)
    result["seen_questions"] = sum(how == "question" for _, how in answered)
    result["by_phrasing"] = score_by_phrasing(samples, preds)
    return result


# --------------------------------------------------------------------------- phrasing

def phrasing(sample: Sample) -> str | None:
    """"seen" / "held-out" as the record says (bundled sample), else None (unknown)."""
    value = sample.meta.get("phrasing") if sample.meta else None
    return value if value in PHRASINGS else None


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
    return {k: score(*groups[k]) for k in PHRASINGS if k in groups}


# --------------------------------------------------------------------------- image-aware ceiling

def vision_features(bb, images: list, *, batch_size: int = 64, where: str = "vision"):
    """Frozen features of `images` (PIL), one flat row per image (numpy float32).

    where="vision": the vision tower's hidden state at the layer the language model reads
    (LLaVA's `vision_feature_layer`, CLS token dropped as its "default" strategy does),
    shape (n, patches * vision_hidden); "connector": the same after the multimodal
    projector, (n, patches * text_hidden); "pixels": the processor's pixel values."""
    import numpy as np
    import torch

    from .prompts import _images_arg

    model = bb.model
    cfg = model.config
    if not hasattr(cfg, "vision_feature_layer"):
        raise ValueError(f"vision_features: {bb.name} ({bb.family.name}) has no LLaVA-style vision_feature_layer")
    rows = []
    image_processor = bb.processor.image_processor
    inner = model.model if hasattr(model, "model") else model
    for i in range(0, len(images), batch_size):
        chunk = [im.convert("RGB") for im in images[i:i + batch_size]]
        pixels = image_processor(images=_images_arg(bb, chunk), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(next(model.parameters()).device, next(model.parameters()).dtype)
        with torch.inference_mode():
            if where == "pixels":
                feats = pixels
            else:
                out = inner.vision_tower(pixels, output_hidden_states=True)
                feats = out.hidden_states[cfg.vision_feature_layer]
                if cfg.vision_feature_select_strategy == "default":
                    feats = feats[:, 1:]
                if where == "connector":
                    feats = inner.multi_modal_projector(feats)
                elif where != "vision":
                    raise ValueError(f"vision_features: where must be vision, connector or pixels, got {where!r}")
        rows.append(feats.float().reshape(len(chunk), -1).cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


@dataclass
class LogReg:
    """Multinomial logistic regression on standardised features (weights in numpy)."""

    classes: list[str]
    mean: object
    std: object
    weight: object  # (features, classes)
    bias: object  # (classes,)

    def predict(self, x) -> list[str]:
        z = ((x - self.mean) / self.std) @ self.weight + self.bias
        return [self.classes[i] for i in z.argmax(axis=1)]


def fit_logreg(x, labels: list[str], *, l2: float = 1e-2, steps: int = 200) -> LogReg:
    """Full-batch L-BFGS on the mean cross-entropy + l2 * |W|^2 (deterministic; torch, CPU).
    One class only: a constant classifier."""
    import numpy as np
    import torch

    classes = sorted(set(labels))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    if len(classes) == 1:
        return LogReg(classes, mean, std, np.zeros((x.shape[1], 1), np.float32), np.zeros(1, np.float32))
    xs = torch.from_numpy(((x - mean) / std).astype(np.float32))
    y = torch.tensor([classes.index(label) for label in labels])
    w = torch.zeros(xs.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogReg(classes, mean, std, w.detach().numpy(), b.detach().numpy())


L2_GRID = (1e-3, 1e-2, 1e-1)  # chosen on validation when fit_probe gets one
MIN_PER_QUESTION = 8  # train items a question needs for its own classifier (else its type's)


@dataclass
class ProbeCeiling:
    """Logistic regressions from frozen vision features to answers, blind-style tables."""

    by_question: dict[str, LogReg]
    by_type: dict[tuple[str, str], LogReg]
    blind: BlindBaseline  # answers what no classifier covers, and reports
    where: str = "vision"
    l2: float = 1e-2
    validation: dict = field(default_factory=dict)  # l2 -> validation overall (when chosen)

    def predict(self, samples: list[Sample], features) -> list[str]:
        """`features` (n, d): one row per sample (vision_features of its image)."""
        out = []
        for s, row in zip(samples, features):
            if s.is_report:
                out.append(self.blind.report)
                continue
            clf = self.by_question.get(normalize_answer(s.question or "")) or self.by_type.get(
                (s.answer_type or "", s.question_type or ""))
            out.append(clf.predict(row[None])[0] if clf else self.blind.answer(s)[0])
        return out


class FeatureCache:
    """Frozen features per image path (a study's questions share one image)."""

    def __init__(self, bb, where: str = "vision"):
        self.bb, self.where, self.rows = bb, where, {}

    def __call__(self, samples: list[Sample]):
        import numpy as np

        from .data.images import load_image

        missing = list(dict.fromkeys(_image_key(s) for s in samples if _image_key(s) not in self.rows))
        if missing:
            by_key = {_image_key(s): s for s in samples}
            images = [load_image(by_key[k].image, where=by_key[k].where) for k in missing]
            for k, row in zip(missing, vision_features(self.bb, images, where=self.where)):
                self.rows[k] = row
        return np.stack([self.rows[_image_key(s)] for s in samples])


def _image_key(sample: Sample) -> str:
    import hashlib

    image = sample.image
    return hashlib.sha1(image).hexdigest() if isinstance(image, (bytes, bytearray)) else str(image)


def _fit_tables(vqa: list[Sample], x, l2: float):
    by_q: dict[str, list[int]] = {}
    by_t: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(vqa):
        by_q.setdefault(normalize_answer(s.question or ""), []).append(i)
        by_t.setdefault((s.answer_type or "", s.question_type or ""), []).append(i)
    fit = lambda idx: fit_logreg(x[idx], [vqa[i].answer for i in idx], l2=l2)  # noqa: E731
    return ({q: fit(idx) for q, idx in by_q.items() if len(idx) >= MIN_PER_QUESTION},
            {k: fit(idx) for k, idx in by_t.items()})


def fit_probe(bb, train: list[Sample], *, validation: list[Sample] | None = None, where: str = "vision",
              features: FeatureCache | None = None) -> ProbeCeiling:
    """The ceiling probe from train samples; its L2 strength chosen on `validation` (overall)
    from L2_GRID when given, else 1e-2. The backbone stays frozen (no gradient reaches it)."""
    from .evaluate import score

    features = features or FeatureCache(bb, where)
    blind = fit_blind(train)
    vqa = [s for s in train if not s.is_report]
    x = features(vqa)
    val = [s for s in (validation or []) if not s.is_report]
    scores: dict = {}
    best = None
    for l2 in (L2_GRID if val else (1e-2,)):
        by_q, by_t = _fit_tables(vqa, x, l2)
        probe = ProbeCeiling(by_q, by_t, blind, where, l2)
        if val:
            scores[l2] = score(val, probe.predict(val, features(val)))["overall"]
        if best is None or (val and scores[l2] > scores[best.l2]):
            best = probe
    best.validation = scores
    return best


def score_probe(probe: ProbeCeiling, samples: list[Sample], features: FeatureCache) -> dict:
    """The probe's metrics on `samples` (evaluate.score's keys) and the split by phrasing."""
    from .evaluate import score

    preds = probe.predict(samples, features(samples))
    result = score(samples, preds)
    result["by_phrasing"] = score_by_phrasing(samples, preds)
    return result


__all__ = ["BlindBaseline", "FeatureCache", "LogReg", "PHRASINGS", "ProbeCeiling", "fit_blind", "fit_logreg",
           "fit_probe", "mark_phrasing", "phrasing", "score_blind", "score_by_phrasing", "score_probe",
           "vision_features"]
