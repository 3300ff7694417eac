"""medln.probe: the image-aware ceiling (linear classifiers on frozen vision features), the
span projection it rests on, and the logistic regression the diagnosis used."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medln.backbones import load_backbone
from medln.baselines import fit_blind, score_blind
from medln.data.sample import Sample
from medln.probe import FeatureCache, Projection, fit_logreg, fit_probe, fit_ridge, score_probe, vision_features


def _q(i, question, answer, *, kind="OPEN", qtype="ORGAN", image="x.png", phrasing=None):
    meta = {"phrasing": phrasing} if phrasing else {}
    return Sample(id=f"s{i}", image=image, question=question, answer=answer, answer_type=kind, question_type=qtype,
                  meta=meta)


def test_logistic_regression_separates_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    x[:, 2] += np.where(x[:, 2] > 0, 1.0, -1.0)  # a margin around the boundary
    labels = ["a" if v > 0 else "b" for v in x[:, 2]]
    a, b = fit_logreg(x, labels), fit_logreg(x, labels)
    assert a.predict(x) == labels
    assert np.array_equal(a.weight, b.weight)
    assert fit_logreg(x, ["c"] * 60).predict(x[:3]) == ["c"] * 3  # one class: a constant


def test_projection_loses_nothing_a_penalised_linear_model_can_use():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 400)).astype(np.float32)
    labels = ["a" if v > 0 else "b" for v in x[:, 7]]
    p = Projection.fit(x)
    z = p(x)
    assert z.shape == (30, 29)  # rank n - 1 after centring: one axis per image, not 400
    assert np.allclose(p.basis.T @ p.basis, np.eye(29), atol=1e-4)  # orthonormal
    std = (x - x.mean(0)) / (x.std(0) + 1e-6)
    assert np.allclose(z @ z.T, std @ std.T, rtol=1e-3, atol=1e-2)  # the same geometry between images
    # the logistic regression solved in the span (29 unknowns per class) reaches the optimum of
    # the one solved on all 400 standardised features
    from medln.probe import _logreg

    w_full, b_full = _logreg(std, labels, ["a", "b"], 1e-1, 500)
    small = fit_logreg(x, labels, l2=1e-1, steps=500)
    assert small.weight.shape == (400, 2) and small.predict(x) == labels
    margins = lambda w, b: (std @ w + b) @ np.array([1.0, -1.0])  # noqa: E731
    assert np.allclose(margins(small.weight, small.bias), margins(w_full, b_full), atol=2e-2)


def test_ridge_classifier_is_closed_form_and_constant_for_one_class():
    x = np.array([[0.0], [0.1], [1.0], [1.1]], np.float32)
    clf = fit_ridge(x, ["lo", "lo", "hi", "hi"], alpha=1e-3)
    assert clf.predict(np.array([[0.05], [1.05]], np.float32)) == ["lo", "hi"]
    assert fit_ridge(x, ["c"] * 4).predict(x) == ["c"] * 4


@pytest.fixture(scope="module")
def llava(tiny_model):
    return load_backbone(str(tiny_model("llava")), device="cpu")


def _images(tmp_path, n: int) -> list[Sample]:
    """Half bright, half dark images; "Is it bright?" answers need the image, the question does not help."""
    out = []
    for i in range(n):
        bright = i % 2 == 0
        path = tmp_path / f"im{i}.png"
        grey = np.full((32, 32), 200 if bright else 40, np.uint8) + np.random.default_rng(i).integers(0, 20, (32, 32),
                                                                                                           dtype=np.uint8)
        Image.fromarray(grey, mode="L").save(path)
        out.append(_q(i, "Is it bright?", "yes" if bright else "no", kind="CLOSED", qtype="ATTRIB", image=path,
                      phrasing="seen"))
    return out


def test_vision_features_are_frozen_rows_per_image(llava, tmp_path):
    images = [Image.open(s.image) for s in _images(tmp_path, 3)]
    before = {k: v.clone() for k, v in llava.model.state_dict().items()}
    for where in ("vision", "connector", "pixels"):
        x = vision_features(llava, images, where=where)
        assert x.shape[0] == 3 and x.ndim == 2 and np.isfinite(x).all()
    assert all((before[k] == v).all() for k, v in llava.model.state_dict().items())
    with pytest.raises(ValueError, match="where"):
        vision_features(llava, images, where="nope")


def test_probe_ceiling_reads_the_image_where_the_blind_row_cannot(llava, tmp_path):
    from medln.probe import RIDGE_GRID

    samples = _images(tmp_path, 40)
    train, val, test = samples[:24], samples[24:32], samples[32:]
    features = FeatureCache(llava)
    probe = fit_probe(llava, train, validation=val, features=features)
    assert set(probe.validation) == set(RIDGE_GRID)  # the strength was chosen on validation
    assert "chosen on validation" in probe.describe()
    ceiling = score_probe(probe, test, features)
    blind = score_blind(fit_blind(train), test)
    assert ceiling["overall"] == 1.0 and blind["overall"] == 0.5
    assert ceiling["by_phrasing"]["seen"]["n"] == len(test)
    assert len(features.rows) == 40  # one feature row per image, reused
