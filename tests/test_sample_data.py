"""The bundled sample set: reproducible from the generator, loadable, balanced, attributed."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import PIL
from PIL import Image
import pytest

from medln.data import DataError, load_samples
from medln.make import sample as bs
from medln.data import bundled
from medln.make import synth

ASSETS = bundled.ASSETS
MANIFEST = json.loads(bundled.MANIFEST.read_text(encoding="utf-8"))
SYNTH_SPLITS = ("train", "validation", "test", "source-test")


def _is_synthetic_file(rel: str) -> bool:
    return rel in {f"{s}.jsonl" for s in SYNTH_SPLITS} or any(rel.startswith(f"images/{s}-0") for s in SYNTH_SPLITS)


@pytest.fixture(scope="module")
def samples() -> dict:
    return {split: load_samples("sample", split).samples for split in bundled.SPLIT_FILES}


def test_rebuild_reproduces_committed_synthetic_files(tmp_path: Path):
    counts = bs.build_synthetic(tmp_path)
    for split in SYNTH_SPLITS:
        assert counts[split] == MANIFEST["counts"][split]
    expected = {rel: h for rel, h in MANIFEST["files"].items() if _is_synthetic_file(rel)}
    built = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert built == set(expected)
    # PNG bytes depend on the zlib inside Pillow; pixels must match everywhere, bytes on the
    # Pillow the manifest was built with.
    same_pillow = MANIFEST["pillow"] == PIL.__version__
    for rel in sorted(expected):
        if rel.endswith(".png") and not same_pillow:
            assert bs.pixel_sha256(tmp_path / rel) == MANIFEST["pixels"][rel], rel
        else:
            assert bs.sha256(tmp_path / rel) == expected[rel], rel


def test_committed_files_match_manifest():
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    assert on_disk == set(MANIFEST["files"])
    for rel, digest in MANIFEST["files"].items():
        assert bs.sha256(ASSETS / rel) == digest, rel


@pytest.mark.parametrize("split", list(bundled.SPLIT_FILES))
def test_every_split_loads(samples, split):
    assert samples[split]
    for s in samples[split]:
        assert Path(s.image).is_file()


def test_unknown_split_lists_valid_ones():
    with pytest.raises(DataError, match="source-test"):
        load_samples("sample", "nope")


def test_synthetic_flag(samples):
    for split in SYNTH_SPLITS:
        assert all(s.synthetic for s in samples[split])
    assert not any(s.synthetic for s in samples["real"])


def test_counts(samples):
    images = {split: {s.image for s in samples[split]} for split in samples}
    for split, (_, _, n) in bs.SPLITS.items():
        assert len(images[split]) == n, split
    assert not images["train"] & images["validation"]  # carved from the train stream, never shared
    assert len(images["real"]) >= 8
    for split in SYNTH_SPLITS:
        assert sum(not s.is_report for s in samples[split]) == MANIFEST["counts"][split]["vqa"]
        assert {s.meta["style"] for s in samples[split]} == {bs.SPLITS[split][0]}


def test_closed_answers_are_balanced_yes_no(samples):
    for split in SYNTH_SPLITS:
        closed = [s.answer for s in samples[split] if s.answer_type == "CLOSED"]
        assert set(closed) == {"yes", "no"}
        assert 0.4 <= closed.count("yes") / len(closed) <= 0.6, split
        pres = [s.answer for s in samples[split] if s.question_type == "PRES"]
        assert pres.count("yes") == pres.count("no"), split  # balanced in pairs by construction


def test_source_and_target_phrasings_differ_answers_do_not(samples):
    questions = {split: {s.question for s in samples[split] if not s.is_report} for split in SYNTH_SPLITS}
    assert not questions["source-test"] & (questions["train"] | questions["validation"] | questions["test"])
    answers = {split: {s.answer for s in samples[split] if not s.is_report} for split in SYNTH_SPLITS}
    assert answers["source-test"] <= answers["train"]  # one canonical vocabulary


def test_every_synthetic_image_has_one_report(samples):
    for split in SYNTH_SPLITS:
        reports = Counter(s.image for s in samples[split] if s.is_report)
        assert set(reports) == {s.image for s in samples[split]}
        assert set(reports.values()) == {1}
        assert all("FINDINGS:" in s.answer and "IMPRESSION:" in s.answer for s in samples[split] if s.is_report)


def test_asset_sizes():
    total = sum(p.stat().st_size for p in ASSETS.parent.rglob("*") if p.is_file())
    assert total <= 15 * 1024 * 1024
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) <= 8 * 1024 * 1024


def test_real_images_are_attributed_and_small(samples):
    attribution = bundled.ATTRIBUTION.read_text(encoding="utf-8")
    examples = dict(bundled.example_images())
    for image in {s.image for s in samples["real"]}:
        rel = Path(image).relative_to(ASSETS).as_posix()
        assert sum(line.startswith(f"| {rel} |") for line in attribution.splitlines()) == 1, rel
        assert examples[str(image)]
        with Image.open(image) as im:
            assert max(im.size) <= 512
    assert "CC0" in attribution and "synthetic" in attribution.lower()


def test_generator_is_deterministic_and_source_stream_is_disjoint():
    a, b = synth.make_study(7, 3, "target"), synth.make_study(7, 3, "target")
    assert a.image.tobytes() == b.image.tobytes() and a.items == b.items and a.report == b.report
    stream = list(synth.source_stream(2))
    assert stream and all(s.synthetic and s.meta["style"] == "source" for s in stream)
    assert sum(s.is_report for s in stream) == 2
    with pytest.raises(ValueError):
        next(synth.source_stream(1, seed=synth.SPLIT_SEEDS["train"]))


def test_test_split_uses_phrasings_held_out_from_train(samples):
    """About half of the test questions are worded as no train or validation question is."""
    seen = {s.question for split in ("train", "validation") for s in samples[split] if not s.is_report}
    test = [s.question for s in samples["test"] if not s.is_report]
    novel = sum(q not in seen for q in test) / len(test)
    assert 0.25 <= novel <= 0.75
    held_out = [re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)))
                for kind in synth.TEMPLATES["target"].values() for t in kind[synth.SHARED:]]
    assert not [q for q in seen if any(h.fullmatch(q) for h in held_out)]
    assert any(h.fullmatch(q) for q in test for h in held_out)
