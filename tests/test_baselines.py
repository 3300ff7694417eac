"""medln.baselines beyond the blind row's own rules (tests/test_compare_protocol.py covers those):
the seen / held-out phrasing scorers, and evaluate.score's split by the records' phrasing
(medln.probe's ceiling: tests/test_probe.py)."""

from __future__ import annotations

from medln.baselines import fit_blind, mark_phrasing, phrasing, score_blind, score_by_phrasing
from medln.data.sample import Sample
from medln.evaluate import score


def _q(i, question, answer, *, kind="OPEN", qtype="ORGAN", image="x.png", phrasing=None):
    meta = {"phrasing": phrasing} if phrasing else {}
    return Sample(id=f"s{i}", image=image, question=question, answer=answer, answer_type=kind, question_type=qtype,
                  meta=meta)


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


def test_every_score_is_split_by_the_records_phrasing_and_only_by_it():
    test = [_q(0, "What organ?", "liver", phrasing="seen"), _q(1, "Which organ?", "lung", phrasing="held-out"),
            _q(2, "Name the organ.", "lung", phrasing="held-out")]
    r = score(test, ["liver", "lung", "kidney"])
    assert r["n"] == 3 and set(r["by_phrasing"]) == {"seen", "held-out"}
    assert r["by_phrasing"]["held-out"] == {**score(test[1:], ["lung", "kidney"], by_phrasing=False)}
    assert "by_phrasing" not in r["by_phrasing"]["seen"]  # one level only
    # data whose records do not say gets no split at all (nothing is inferred from train)
    plain = [_q(i, "What organ?", "liver") for i in range(3)]
    assert "by_phrasing" not in score(plain, ["liver"] * 3)
    report = Sample(id="r", image="x.png", answer="Normal chest.", task="report", meta={"phrasing": "seen"})
    assert score([report], ["Normal chest."]).get("by_phrasing") is None  # reports are never split


def test_jsonl_records_keep_their_phrasing(tmp_path):
    from medln.data import load_samples
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "test.jsonl").write_text(
        '{"image": "a.png", "question": "q?", "answer": "a", "phrasing": "held-out"}\n'
        '{"image": "a.png", "question": "r?", "answer": "b", "phrasing": "sideways"}\n', encoding="utf-8")
    got = load_samples(f"jsonl:{tmp_path / 'test.jsonl'}", "test").samples
    assert [s.phrasing for s in got] == ["held-out", None]  # an unknown value is no phrasing
