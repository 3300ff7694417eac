"""The image-aware ceiling beside the image-blind row: what a linear read-out of the
*frozen* vision tower gets on the same items, fitted on the train split only.

The same table structure as the blind row (medln.baselines), but each entry is a linear
classifier from the backbone's frozen vision features (the tokens the language model is
given, before the connector) to the answer: one per normalised train question with at least
MIN_PER_QUESTION items, backing off to one per (answer type, question type); what no
classifier covers, and every report, gets the blind row's answer. A tuned model far below it
loses information between the image and the answer (connector, language model, training),
not in the pixels.

The classifier is ridge regression on one-hot answers (argmax; least squares, closed form),
its strength chosen on validation when there is one. Measured on the v2 sample's test split
(n = 546, the same features): 0.815 against 0.808 for L-BFGS logistic regression
(`fit_logreg`, which docs/experiment/diagnose.py uses), in 1/20 of the time (seconds instead
of a minute on two busy cores): cheap enough to stand beside every run. Features are first
expressed in the span of the train images' standardised features (Projection): a linear
model with an L2 penalty has its optimum there, so 8,192 patch-token features become at most
one axis per train image, losing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .baselines import BlindBaseline, fit_blind
from .data.sample import Sample
from .metrics import normalize_answer

RIDGE_GRID = (10.0, 100.0, 1000.0)  # chosen on validation when fit_probe gets one
RIDGE_DEFAULT = 100.0
MIN_PER_QUESTION = 8  # train items a question needs for its own classifier (else its type's)


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
class Linear:
    """A linear classifier on standardised features: argmax of ((x - mean) / std) @ W + b."""

    classes: list[str]
    mean: object
    std: object
    weight: object  # (features, classes)
    bias: object  # (classes,)

    def predict(self, x) -> list[str]:
        z = ((x - self.mean) / self.std) @ self.weight + self.bias
        return [self.classes[i] for i in z.argmax(axis=1)]


LogReg = Linear  # the name the diagnosis script knew


@dataclass
class Projection:
    """Standardise with the train images' mean and sd, then express in the orthonormal basis of
    their span (at most one axis per train image): a linear classifier with an L2 penalty on
    the standardised features has its optimum in that span, so nothing a probe fitted on
    train can use is lost, and 8,192 patch-token features become a few hundred."""

    mean: object
    std: object
    basis: object  # (d, r)

    def __call__(self, x):
        import numpy as np
        import torch

        with one_thread():
            z = torch.from_numpy(np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32))
            return (z @ torch.from_numpy(self.basis)).numpy()

    @classmethod
    def fit(cls, x) -> "Projection":
        import numpy as np
        import torch

        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        with one_thread():
            z = torch.from_numpy(((x - mean) / std).astype(np.float64))
            vals, vecs = torch.linalg.eigh(z @ z.T)  # the span via the n x n Gram matrix: d >> n
            keep = vals > vals.max() * 1e-9
            basis = z.T @ (vecs[:, keep] / torch.sqrt(vals[keep]))  # (d, r), orthonormal columns
        return cls(mean.astype(np.float32), std.astype(np.float32), basis.numpy().astype(np.float32))


class one_thread:
    """torch on one thread inside: these are small matrices, and on a shared 2-core machine
    extra BLAS threads only contend (measured: an L-BFGS fit 5 s -> 0.1 s, a Gram
    eigendecomposition 0.19 s -> a few ms)."""

    def __enter__(self):
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.threads)


def fit_logreg(x, labels: list[str], *, l2: float = 1e-2, steps: int = 200) -> Linear:
    """Multinomial logistic regression: full-batch L-BFGS on the mean cross-entropy +
    l2 * |W|^2 over standardised features (deterministic; torch, CPU). One class: a constant.
    With more features than twice the items it is solved in their span (Projection: the
    same optimum, W = basis @ W')."""
    import numpy as np

    classes = sorted(set(labels))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    if len(classes) == 1:
        return Linear(classes, mean, std, np.zeros((x.shape[1], 1), np.float32), np.zeros(1, np.float32))
    if x.shape[1] > 2 * x.shape[0]:
        projection = Projection.fit(x)
        w, b = _logreg(projection(x), labels, classes, l2, steps)
        return Linear(classes, projection.mean, projection.std, projection.basis @ w, b)
    w, b = _logreg((x - mean) / std, labels, classes, l2, steps)
    return Linear(classes, mean, std, w, b)


def _logreg(z, labels: list[str], classes: list[str], l2: float, steps: int):
    import numpy as np
    import torch

    xs = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    y = torch.tensor([classes.index(label) for label in labels])
    w = torch.zeros(xs.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend (5 s -> 0.1 s on 2 busy cores)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.detach().numpy(), b.detach().numpy()


def fit_ridge(x, labels: list[str], *, alpha: float = RIDGE_DEFAULT) -> Linear:
    """Ridge regression on one-hot answers, classified by argmax: W = Zc^T (Zc Zc^T + alpha I)^-1 Yc
    with Z, Y centred (the bias unpenalised); x as given (already Projection's standardised axes)."""
    return fit_ridges(x, labels, (alpha,))[alpha]


def fit_ridges(x, labels: list[str], alphas) -> dict[float, Linear]:
    """fit_ridge for several strengths at the price of one: the n x n Gram matrix is
    diagonalised once (Zc Zc^T = V diag(s) V^T), then (Zc Zc^T + alpha I)^-1 = V diag(1 / (s + alpha)) V^T."""
    import numpy as np
    import torch

    classes = sorted(set(labels))
    d = x.shape[1]
    zero, one = np.zeros(d, np.float32), np.ones(d, np.float32)
    if len(classes) == 1:
        return {a: Linear(classes, zero, one, np.zeros((d, 1), np.float32), np.zeros(1, np.float32)) for a in alphas}
    z = x.astype(np.float64)
    y = np.zeros((len(labels), len(classes)))
    y[np.arange(len(labels)), [classes.index(label) for label in labels]] = 1.0
    zm, ym = z.mean(axis=0), y.mean(axis=0)
    zc = z - zm
    with one_thread():
        st, vt = torch.linalg.eigh(torch.from_numpy(zc @ zc.T))
    s, v = st.numpy(), vt.numpy()
    vy = v.T @ (y - ym)
    out = {}
    for a in alphas:
        w = zc.T @ (v @ (vy / (np.maximum(s, 0.0) + a)[:, None]))
        out[a] = Linear(classes, zero, one, w.astype(np.float32), (ym - zm @ w).astype(np.float32))
    return out


@dataclass
class ProbeCeiling:
    """Linear classifiers from frozen vision features to answers, in the blind row's tables."""

    by_question: dict[str, Linear]
    by_type: dict[tuple[str, str], Linear]
    blind: BlindBaseline  # answers what no classifier covers, and reports
    projection: Projection
    where: str = "vision"
    alpha: float = RIDGE_DEFAULT
    validation: dict = field(default_factory=dict)  # alpha -> validation overall (when chosen)
    n_images: int = 0

    def predict(self, samples: list[Sample], features) -> list[str]:
        """`features` (n, d): one row per sample (vision_features of its image)."""
        out = []
        for s, row in zip(samples, self.projection(features) if len(samples) else features):
            if s.is_report:
                out.append(self.blind.report)
                continue
            clf = self.by_question.get(normalize_answer(s.question or "")) or self.by_type.get(
                (s.answer_type or "", s.question_type or ""))
            out.append(clf.predict(row[None])[0] if clf else self.blind.answer(s)[0])
        return out

    def describe(self) -> str:
        chosen = (f"alpha {self.alpha:g} chosen on validation from {', '.join(f'{a:g}' for a in RIDGE_GRID)}"
                  if self.validation else f"alpha {self.alpha:g} (no validation split to choose it on)")
        return (f"ridge classifiers on the frozen {self.where} features ({len(self.by_question)} per question, "
                f"{len(self.by_type)} per question type; {self.n_images} train images; {chosen})")


class FeatureCache:
    """Frozen features per image (a study's questions share one image): computed once."""

    def __init__(self, bb, where: str = "vision"):
        self.bb, self.where, self.rows = bb, where, {}

    def __call__(self, samples: list[Sample]):
        import numpy as np

        from .data.images import load_image

        missing = list(dict.fromkeys(image_key(s) for s in samples if image_key(s) not in self.rows))
        if missing:
            by_key = {image_key(s): s for s in samples}
            images = [load_image(by_key[k].image, where=by_key[k].where) for k in missing]
            for k, row in zip(missing, vision_features(self.bb, images, where=self.where)):
                self.rows[k] = row
        if not samples:
            return np.zeros((0, 0), np.float32)
        return np.stack([self.rows[image_key(s)] for s in samples])


def image_key(sample: Sample) -> str:
    import hashlib

    image = sample.image
    return hashlib.sha1(image).hexdigest() if isinstance(image, (bytes, bytearray)) else str(image)


def _fit_tables(vqa: list[Sample], x, alphas) -> dict[float, tuple[dict, dict]]:
    """{alpha: (per-question classifiers, per-type classifiers)}, every strength from one
    diagonalisation per group (fit_ridges)."""
    by_q: dict[str, list[int]] = {}
    by_t: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(vqa):
        by_q.setdefault(normalize_answer(s.question or ""), []).append(i)
        by_t.setdefault((s.answer_type or "", s.question_type or ""), []).append(i)
    fit = lambda idx: fit_ridges(x[idx], [vqa[i].answer for i in idx], alphas)  # noqa: E731
    q = {k: fit(idx) for k, idx in by_q.items() if len(idx) >= MIN_PER_QUESTION}
    t = {k: fit(idx) for k, idx in by_t.items()}
    return {a: ({k: f[a] for k, f in q.items()}, {k: f[a] for k, f in t.items()}) for a in alphas}


def fit_probe(bb, train: list[Sample], *, validation: list[Sample] | None = None, where: str = "vision",
              features: FeatureCache | None = None) -> ProbeCeiling:
    """The ceiling probe from train samples; its ridge strength chosen on `validation`
    (overall) from RIDGE_GRID when given, else RIDGE_DEFAULT. The backbone stays frozen."""
    from .evaluate import score

    features = features or FeatureCache(bb, where)
    blind = fit_blind(train)
    vqa = [s for s in train if not s.is_report]
    if not vqa:
        raise ValueError("fit_probe: the train split has no question (a report-only split has no probe ceiling)")
    images = list({image_key(s): s for s in vqa}.values())
    per_image = features(images)  # one row per image: a study's questions share it
    projection = Projection.fit(per_image)
    row_of = {image_key(s): i for i, s in enumerate(images)}
    x = projection(per_image)[[row_of[image_key(s)] for s in vqa]]
    val = [s for s in (validation or []) if not s.is_report]
    scores: dict = {}
    best = None
    for alpha, (by_q, by_t) in _fit_tables(vqa, x, RIDGE_GRID if val else (RIDGE_DEFAULT,)).items():
        probe = ProbeCeiling(by_q, by_t, blind, projection, where, alpha, n_images=len(images))
        if val:
            scores[alpha] = score(val, probe.predict(val, features(val)), by_phrasing=False)["overall"]
        if best is None or (val and scores[alpha] > scores[best.alpha]):
            best = probe
    best.validation = scores
    return best


def score_probe(probe: ProbeCeiling, samples: list[Sample], features: FeatureCache) -> dict:
    """The probe's metrics on the VQA items of `samples` (evaluate.score's keys, `by_phrasing`
    included). Reports are left out: the probe has no report of its own (it would only repeat
    the blind row's), so its report metrics are absent rather than borrowed."""
    from .evaluate import score

    vqa = [s for s in samples if not s.is_report]
    return score(vqa, probe.predict(vqa, features(vqa))) if vqa else {}


__all__ = ["FeatureCache", "Linear", "LogReg", "MIN_PER_QUESTION", "Projection", "ProbeCeiling", "RIDGE_GRID",
           "fit_logreg", "fit_probe", "fit_ridge", "fit_ridges", "image_key", "score_probe", "vision_features"]
