"""The bundled experiment (assets/sample, medln.make.task): reproducible from the generator,
loadable per target, balanced so that each target needs the image, phrasings flagged."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import PIL
import pytest
from PIL import Image

from medln.baselines import PHRASINGS, fit_blind, score_blind
from medln.data import DataError, load_samples
from medln.data import bundled
from medln.make import findings, questions, sample as bs, task

ASSETS = bundled.ASSETS
MANIFEST = json.loads(bundled.MANIFEST.read_text(encoding="utf-8"))
SPECS = {"scanner": "sample", "findings": "sample:findings"}  # the default target is the bare spec
SCORED = ("source-test", "scanner-test", "findings-test")


@pytest.fixture(scope="module")
def samples() -> dict:
    """{(target, split): samples} for every target split, plus ("", shared split)."""
    out = {(t, s): load_samples(spec, s).samples for t, spec in SPECS.items() for s in bundled.TARGET_SPLITS}
    out.update({("", s): load_samples("sample", s).samples for s in bundled.SHARED_SPLITS})
    return out


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (ASSETS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", list(task.SPLITS))
def test_rebuilt_studies_match_the_committed_ones(name):
    """A few studies of every split, rebuilt alone from their seeds: same records, same pixels."""
    split = task.SPLITS[name]
    records, images = bs.split_records(name, task.Split(split.domain, split.seed, 7, split.held_out))
    committed = _records(name)
    assert records == committed[:len(records)]
    assert MANIFEST["counts"][name]["vqa"] == len(committed)
    for rel, image in images:
        pixels = bs.pixel_sha256_of(image)
        assert pixels == MANIFEST["pixels"][rel], rel
    if MANIFEST["pillow"] == PIL.__version__:  # PNG bytes depend on the zlib inside Pillow
        assert bs.sha256(ASSETS / f"{name}.jsonl") == MANIFEST["files"][f"{name}.jsonl"]


def test_committed_files_match_manifest():
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    assert on_disk == set(MANIFEST["files"])
    for rel, digest in MANIFEST["files"].items():
        assert bs.sha256(ASSETS / rel) == digest, rel


def test_every_split_of_every_target_loads(samples):
    for key, items in samples.items():
        assert items, key
        assert all(Path(s.image).is_file() for s in items), key
    assert [s.id for s in load_samples("sample:scanner", "test").samples] == [s.id for s in samples["scanner", "test"]]
    assert {s.meta["target"] for s in samples["findings", "test"]} == {"findings"}


def test_unknown_split_lists_valid_ones_and_a_folder_copy_reads_the_default_target(tmp_path):
    with pytest.raises(DataError, match="source-test"):
        load_samples("sample", "nope")
    with pytest.raises(DataError, match="sample:findings: unknown split"):
        load_samples("sample:findings", "nope")
    assert bundled.split_file(str(ASSETS), "test") == ASSETS / "scanner-test.jsonl"  # a copy of the bundled folder
    (tmp_path / "test.jsonl").write_text("")
    assert bundled.split_file(str(tmp_path), "test") == tmp_path / "test.jsonl"  # a folder of its own


def test_synthetic_flag(samples):
    for (target, split), items in samples.items():
        assert all(s.synthetic for s in items) == (split != "real"), (target, split)
    assert not any(s.synthetic for s in samples["", "real"])


def test_counts_and_styles(samples):
    for name, split in task.SPLITS.items():
        c = MANIFEST["counts"][name]
        assert c["images"] == split.studies and c["closed_yes"] * 2 == c["closed"], name
    images = {k: {s.image for s in v} for k, v in samples.items()}
    for t in SPECS:
        assert not images[t, "train"] & (images[t, "validation"] | images[t, "test"])
        assert {s.meta["style"] for s in samples[t, "test"]} == {task.DOMAINS[t].style}
    assert len(images["", "real"]) >= 8
    with Image.open(next(iter(images["scanner", "test"]))) as a, Image.open(next(iter(images["", "source-test"]))) as b:
        assert a.size == (48, 48) and b.size == (64, 64)  # the new scanner's lower resolution


def test_scored_splits_fit_the_default_scoring():
    """The whole scored split is the fixed scored set: the CLI's and the app's default
    eval_limit take all of it."""
    from medln.config import TrainConfig
    from medln.ui.settings import Settings

    for name in SCORED:
        assert MANIFEST["counts"][name]["vqa"] <= min(TrainConfig().eval_limit, Settings().eval_limit), name


def test_each_target_needs_the_image(samples):
    """The image-blind baseline, fitted on a target's train split, scores <= 0.40 on its
    validation and test splits; and it does not do better on the seen phrasings."""
    for t in SPECS:
        blind = fit_blind(samples[t, "train"])
        for split in ("validation", "test"):
            r = score_blind(blind, samples[t, split])
            assert r["overall"] <= 0.40, (t, split, r["overall"])
            assert set(r["by_phrasing"]) == set(PHRASINGS)


def test_answer_priors_are_balanced(samples):
    for key, items in samples.items():
        if key[0] == "" and key[1] == "real":
            continue
        closed = [s.answer for s in items if s.answer_type == "CLOSED"]
        assert closed.count("yes") == closed.count("no"), key  # presence balanced in pairs
    for t in SPECS:
        by_type: dict[str, Counter] = {}
        for s in samples[t, "train"]:
            by_type.setdefault(s.question_type, Counter())[s.answer] += 1
        for qtype, counts in by_type.items():
            share = counts.most_common(1)[0][1] / sum(counts.values())
            assert share <= 0.55, (t, qtype, counts)


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)))


def test_phrasing_flags(samples):
    """Train splits use seen phrasings only; validation and test a share of held-out ones, which
    no train split and no pretraining item uses; every flag matches its template set."""
    held = [_pattern(t) for ts in questions.HELD_OUT.values() for t in ts]
    seen = [_pattern(t) for ts in questions.SEEN.values() for t in ts]
    train_questions = {s.question for t in SPECS for s in samples[t, "train"]}
    train_questions |= {s.question for extra in (False, True) for s in task.source_stream(60, extra=extra)
                        if not s.is_report}
    for key, items in samples.items():
        if key[1] == "real":
            continue
        flags = Counter(s.meta["phrasing"] for s in items)
        share = flags["held-out"] / len(items)
        assert share == 0 if key[1] in ("train", "source-test") else 0.1 <= share <= 0.35, (key, share)
        for s in items:
            patterns = held if s.meta["phrasing"] == "held-out" else seen
            assert any(p.fullmatch(s.question) for p in patterns), (key, s.question)
            if s.meta["phrasing"] == "held-out":
                assert s.question not in train_questions


def test_extra_wordings_are_pretraining_only_and_echo_no_held_out_one(samples):
    """The paraphrase stage's wordings (EXTRA) are in no committed split, are no held-out
    wording, and do not start with a held-out wording's first two words (unless a seen wording
    starts so too: "What is")."""
    extra = [_pattern(t) for ts in questions.EXTRA.values() for t in ts]
    for key, items in samples.items():  # (the real images' hand-written questions are no template)
        assert key[1] == "real" or not any(p.fullmatch(s.question) for s in items for p in extra), key
    def starts(sets):
        return {tuple(t.lower().split()[:2]) for ts in sets.values() for t in ts}

    held_starts = starts(questions.HELD_OUT) - starts(questions.SEEN)
    for kind, wordings in questions.EXTRA.items():
        assert set(wordings).isdisjoint(questions.HELD_OUT[kind]) and set(wordings).isdisjoint(questions.SEEN[kind])
        assert not {tuple(t.lower().split()[:2]) for t in wordings} & held_starts, kind
    stream = [s for s in task.source_stream(30, extra=True) if not s.is_report]
    flags = Counter(s.meta["phrasing"] for s in stream)
    assert flags["extra"] and flags["seen"] and not flags["held-out"]
    assert all(any(p.fullmatch(s.question) for p in extra) for s in stream if s.meta["phrasing"] == "extra")


def test_targets_differ_from_the_source_as_defined(samples):
    source_answers = {s.answer for s in samples["", "source-test"]} | {
        s.answer for s in task.source_stream(60) if not s.is_report}
    findings_abn = {s.answer for s in samples["findings", "train"] if s.question_type == "ABN"}
    assert findings_abn - {"none"} and not (findings_abn - {"none"}) & source_answers  # answers the source never had
    scanner = {s.answer for s in samples["scanner", "train"]}
    assert scanner <= source_answers  # the same vocabulary as the source
    assert not {s.question_type for s in samples["findings", "test"]} & {"MODALITY", "ORGAN"}


def test_every_study_records_its_findings_once(samples):
    for t in SPECS:
        per_image = Counter(s.image for s in samples[t, "test"] if s.meta.get("findings"))
        assert set(per_image.values()) == {1} and len(per_image) == len({s.image for s in samples[t, "test"]})
    examples = bundled.synthetic_examples()
    assert len(examples) == 5 and all(Path(p).is_file() and "SYNTHETIC" in c for p, c in examples)


def test_asset_sizes():
    total = sum(p.stat().st_size for p in ASSETS.parent.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) <= 10 * 1024 * 1024


def test_real_images_are_attributed_and_small(samples):
    attribution = bundled.ATTRIBUTION.read_text(encoding="utf-8")
    examples = dict(bundled.example_images())
    for image in {s.image for s in samples["", "real"]}:
        rel = Path(image).relative_to(ASSETS).as_posix()
        assert sum(line.startswith(f"| {rel} |") for line in attribution.splitlines()) == 1, rel
        assert examples[str(image)]
        with Image.open(image) as im:
            assert max(im.size) <= 512
    assert "CC0" in attribution and "synthetic" in attribution.lower()


def test_generator_is_deterministic_and_the_pretraining_stream_is_disjoint():
    a, b = task.make_study(7, 3, "scanner"), task.make_study(7, 3, "scanner")
    assert a.image.tobytes() == b.image.tobytes() and a.items == b.items and a.report == b.report
    stream = list(task.source_stream(8))
    assert stream and all(s.synthetic and s.meta["style"] == "source" for s in stream)
    assert all(s.meta["phrasing"] == "seen" for s in stream if not s.is_report)
    with pytest.raises(ValueError):
        next(task.source_stream(1, seed=task.SPLITS["scanner-train"].seed))


def test_wide_pretraining_kinds_are_new_to_every_split_and_leave_the_plain_stream_alone(samples):
    """pretrain-tiny --wide: three more finding kinds, in pretraining only. None is a source or
    target kind, none is an answer of a committed split, and the plain stream (and so every
    model built without --wide, and the tokenizer corpus) does not change."""
    def kinds_of(table):
        return {k for ks in table.values() for k in ks}

    extra_kinds = kinds_of(findings.PRETRAIN_KINDS)
    assert not extra_kinds & (kinds_of(findings.SOURCE_KINDS) | kinds_of(findings.NEW_KINDS))
    committed = {s.answer for items in samples.values() for s in items}
    assert not extra_kinds & committed
    wide = [s for s in task.source_stream(60, wide=True) if not s.is_report]
    kinds = Counter(s.meta["findings"]["kind"] for s in wide if s.question_type == "ABN")
    assert extra_kinds <= set(kinds) and all(s.meta["style"] == "source" for s in wide)
    assert extra_kinds & {s.answer for s in wide}  # asked and answered like any kind
    plain = list(task.source_stream(12))
    assert [s.question for s in plain] == [s.question for s in task.source_stream(12, wide=False)]
    assert not any(s.meta["findings"]["kind"] in extra_kinds for s in plain if s.meta.get("findings"))
    assert not any(k in t for t in task.corpus_texts(30) for k in extra_kinds)
