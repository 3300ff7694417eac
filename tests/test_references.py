"""medln.references: the image-blind row and the probe ceiling on the items a run scores,
cached on disk; the score table every surface prints (CLI, app) from a run's result."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medln.backbones import load_backbone
from medln.data.sample import Sample
from medln.references import NO_PHRASING, cache_folder, has_phrasing, reference_rows, score_table


def _images(tmp_path, n: int, start: int = 0) -> list[Sample]:
    """Bright or dark images; "Is it bright?" needs the image; every third question is worded
    as train never words it (phrasing: held-out)."""
    out = []
    for i in range(start, start + n):
        bright = i % 2 == 0
        path = tmp_path / f"im{i}.png"
        grey = np.full((32, 32), 200 if bright else 40, np.uint8)
        Image.fromarray(grey + np.random.default_rng(i).integers(0, 20, (32, 32), dtype=np.uint8), mode="L").save(path)
        held = i % 3 == 0
        out.append(Sample(id=f"s{i}", image=path, question="Does it look bright?" if held else "Is it bright?",
                          answer="yes" if bright else "no", answer_type="CLOSED", question_type="ATTRIB",
                          meta={"phrasing": "held-out" if held else "seen"}))
    return out


@pytest.fixture(scope="module")
def llava(tiny_model):
    return load_backbone(str(tiny_model("llava")), device="cpu")


def test_blind_and_ceiling_on_the_same_items_cached_by_content(llava, tmp_path):
    train = [s for s in _images(tmp_path, 30) if s.meta["phrasing"] == "seen"]  # train holds one wording
    test = _images(tmp_path, 12, start=100)
    ood = _images(tmp_path, 6, start=200)
    revision = {"source": "local", "sha256": "x" * 64, "name": "tiny"}
    refs = reference_rows(train, {"test": test, "ood": ood}, backbone=llava, backbone_revision=revision)
    assert refs["about"]["cached"] is False
    for split, items in (("test", test), ("ood", ood)):
        assert refs["blind"][split]["n"] == refs["ceiling"][split]["n"] == len(items)  # the same items, the same n
    # the question alone cannot tell bright from dark; a read-out of the frozen vision tower can
    assert refs["blind"]["test"]["overall"] == 0.5 and refs["ceiling"]["test"]["overall"] == 1.0
    held = refs["ceiling"]["test"]["by_phrasing"]["held-out"]
    assert held["n"] == sum(s.meta["phrasing"] == "held-out" for s in test)
    assert "ridge" in refs["about"]["ceiling"] and "no image is read" in refs["about"]["blind"]
    # computed once: the same inputs read the cache; another test set is another key
    assert len(list(cache_folder().glob("*.json"))) >= 1
    again = reference_rows(train, {"test": test, "ood": ood}, backbone=llava, backbone_revision=revision)
    assert again["about"]["cached"] is True and again["ceiling"] == refs["ceiling"]
    other = reference_rows(train, {"test": test[:4]}, backbone=llava, backbone_revision=revision)
    assert other["about"]["cached"] is False and other["blind"]["test"]["n"] == 4
    # no revision known (a Hub id without a commit): nothing is cached
    hub = {"source": "hub", "commit": None}
    assert reference_rows(train, {"test": test}, backbone=llava, backbone_revision=hub)["about"]["cached"] is False
    assert reference_rows(train, {"test": test}, backbone=llava, backbone_revision=hub)["about"]["cached"] is False


def test_without_a_backbone_the_ceiling_is_na_with_the_reason(tmp_path):
    train, test = _images(tmp_path, 6), _images(tmp_path, 4, start=50)
    refs = reference_rows(train, {"test": test})
    assert refs["ceiling"] == {} and refs["about"]["ceiling"].startswith("n/a")
    assert refs["blind"]["test"]["n"] == 4


def _result(phrasing: bool = True):
    def m(overall, n=40, seen=None, held=None):
        out = {"n": n, "n_closed": 10, "n_open": 30, "overall": overall, "closed_accuracy": 0.5, "open_recall": 0.3}
        if phrasing:
            out["by_phrasing"] = {"seen": {"n": 25, "overall": seen}, "held-out": {"n": 15, "overall": held}}
        return out

    return {"base": {"test": m(0.1, seen=0.1, held=0.1)}, "tuned": {"test": m(0.5, seen=0.6, held=0.33)},
            "blind": {"test": m(0.4, seen=0.45, held=0.33)}, "ceiling": {"test": m(0.8, seen=0.8, held=0.8)},
            "references": {"blind": "rule", "fitted_on": "9 questions, 0 reports", "ceiling": "ridge ..."}}


def test_score_table_rows_split_by_phrasing_only_where_the_records_say():
    rows = score_table(_result(), brief=True)
    overall = [r for r in rows if r["metric"] == "overall"]
    assert [r["phrasing"] for r in overall] == ["all", "seen", "held-out"]
    held = overall[2]
    assert (held["n"], held["base"], held["tuned"], held["blind"], held["ceiling"]) == (15, 0.1, 0.33, 0.33, 0.8)
    assert all(r["phrasing"] == "all" for r in rows if r["metric"] != "overall")  # only what the split holds
    assert has_phrasing(_result()) and not has_phrasing(_result(phrasing=False))
    assert {r["phrasing"] for r in score_table(_result(phrasing=False))} == {"all"}
    # a split whose questions are all in seen wordings (source-test) has no rows repeating "all"
    seen_only = _result()
    for c in ("base", "tuned", "blind", "ceiling"):
        seen_only[c]["source-test"] = {**seen_only[c]["test"], "by_phrasing": {"seen": seen_only[c]["test"]}}
    rows = score_table(seen_only, brief=True)
    assert {r["phrasing"] for r in rows if r["split"] == "source-test"} == {"all"}
    assert [r["phrasing"] for r in rows if r["split"] == "test" and r["metric"] == "overall"] == ["all", "seen", "held-out"]


def test_train_summary_prints_blind_and_ceiling_with_n():
    from medln.__main__ import scores_text

    text = scores_text(_result())
    line = next(r for r in text.splitlines() if "held-out" in r and "overall" in r)
    assert line.split() == ["test", "held-out", "overall", "15", "0.100", "0.330", "0.330", "0.800"]
    assert "image-blind" in text and "probe ceiling" in text and "fitted on the training data's 9 questions" in text
    assert NO_PHRASING in scores_text(_result(phrasing=False))
