"""medln.baselines beyond the blind row (tests/test_protocol.py covers that): the image-aware
probe ceiling on frozen vision features, and the seen / held-out phrasing scorers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medln.backbones import load_backbone
from medln.baselines import (FeatureCache, fit_blind, fit_logreg, fit_probe, mark_phrasing, phrasing, score_blind,
                             score_by_phrasing, score_probe, vision_features)
from medln.data.sample import Sample


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


def test_phrasing_flags_and_the_split_scorer():
    test = [_q(0, "What organ?", "liver", phrasing="seen"), _q(1, "Which organ?", "lung", phrasing="held-out"),
            _q(2, "Name the organ.", "lung", phrasing="held-out"), _q(3, "Unflagged?", "x")]
    assert [phrasing(s) for s in test] == ["seen", "held-out", "held-out", None]
    split = score_by_phrasing(test, ["liver", "lung", "kidney", "x"])
    assert split["seen"]["n"] == 1 and split["seen"]["overall"] == 1.0
    assert split["held-out"]["n"] == 2 and split["held-out"]["overall"] == 0.5  # the unflagged item is left out
    train = [_q(9, "what organ", "liver")]
    labels = mark_phrasing(test, train)  # for data whose records do not say: by the train questions
    assert labels == {"s0": "seen", "s1": "held-out", "s2": "held-out", "s3": "held-out"}
    assert score_by_phrasing(test, ["liver"] * 4, labels)["held-out"]["n"] == 3
    r = score_blind(fit_blind(train), test)
    assert r["by_phrasing"]["seen"]["overall"] == 1.0 and r["by_phrasing"]["held-out"]["overall"] == 0.0


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
    samples = _images(tmp_path, 40)
    train, val, test = samples[:24], samples[24:32], samples[32:]
    features = FeatureCache(llava)
    probe = fit_probe(llava, train, validation=val, features=features)
    assert set(probe.validation) == {1e-3, 1e-2, 1e-1}  # the strength was chosen on validation
    ceiling = score_probe(probe, test, features)
    blind = score_blind(fit_blind(train), test)
    assert ceiling["overall"] == 1.0 and blind["overall"] == 0.5
    assert ceiling["by_phrasing"]["seen"]["n"] == len(test)
    assert len(features.rows) == 40  # one feature row per image, reused
