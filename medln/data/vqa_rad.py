"""`vqa-rad:PATH` — VQA-RAD (Lau et al. 2018), from the public release or its HF mirror.

Public release: PATH holds `VQA_RAD Dataset Public.json` (a list of records with qid,
phrase_type, qid_linked_id, image_name, question, question_type, answer, answer_type) and
`VQA_RAD Image Folder/`.
- test  = phrase_type `test_freeform` or `test_para` (451 questions);
- train = every other record MINUS those whose `qid_linked_id` is shared with a test record:
  `para` questions are rephrasings linked to a free-form question, and keeping the rephrasing
  of a test question in train would leak its answer. The count left out is in `Loaded.notes`.
- answer_type CLOSED/OPEN and question_type ("PRES", "PRES, POS", ...) come from the record.

HF mirror (flaviagiammarino/vqa-rad): PATH holds `data/train-*.parquet` and
`data/test-*.parquet` with image/question/answer only, so CLOSED is inferred from yes/no
answers and the paraphrase links are unknown.
"""

from __future__ import annotations

from pathlib import Path

from medln.data.loaded import (BadField, Found, Loaded, SplitBuilder, answer_type, check_split, find, image_file,
                               read_json_records, text)
from medln.data.pathvqa import load_parquet_split
from medln.data.sample import DataError, Sample

SPLITS = ("train", "test")
JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
TEST_PHRASES = ("test_freeform", "test_para")
TRAIN_PHRASES = ("freeform", "para")


def detect(root: Path) -> Found | None:
    """The public release's JSON file, anywhere in `root`."""
    hits = find(root, JSON_NAME)
    return Found(hits[0].parent, "VQA-RAD (public release)") if hits else None


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    check_split(split, SPLITS, "VQA-RAD")
    root = Path(path)
    if (root / JSON_NAME).is_file():
        return _load_public(root, split, skip_bad=skip_bad)
    if list((root / "data").glob("*.parquet")):
        return load_parquet_split(root, split, skip_bad=skip_bad, source="vqa-rad (HF mirror)")
    raise DataError(
        f"{root}: not a VQA-RAD folder: expected '{JSON_NAME}' and '{IMAGE_FOLDER}/' "
        f"(public release) or data/train-*.parquet and data/test-*.parquet (HF mirror)"
    )


def _load_public(root: Path, split: str, *, skip_bad: bool) -> Loaded:
    json_file = root / JSON_NAME
    records = read_json_records(json_file)

    # The leakage rule needs the test links before any train record is kept.
    test_links = {
        str(r["qid_linked_id"])
        for r in records
        if isinstance(r, dict) and r.get("phrase_type") in TEST_PHRASES and r.get("qid_linked_id")
    }
    build = SplitBuilder(where=str(json_file), split=split, skip_bad=skip_bad)
    leaked = 0
    for index, record in enumerate(records):
        record_id = record.get("qid", f"#{index}") if isinstance(record, dict) else f"#{index}"
        with build.record(record_id):
            if not isinstance(record, dict):
                raise BadField("record", f"expected a JSON object, got {type(record).__name__}")
            phrase = text(record, "phrase_type")
            if phrase not in TEST_PHRASES + TRAIN_PHRASES:
                raise BadField("phrase_type", f"unknown value {phrase!r}")
            if (phrase in TEST_PHRASES) != (split == "test"):
                continue
            link = str(record.get("qid_linked_id") or "") or None
            if split == "train" and link in test_links:
                leaked += 1
                continue
            build.add(
                Sample(
                    id=str(text(record, "qid")),
                    image=image_file(root / IMAGE_FOLDER, text(record, "image_name"), "image_name"),
                    question=text(record, "question"),
                    answer=text(record, "answer"),
                    task="vqa",
                    answer_type=answer_type(record),
                    question_type=text(record, "question_type", required=False),
                    meta={
                        "source": "vqa-rad",
                        "phrase_type": phrase,
                        "qid_linked_id": link,
                        "image_organ": text(record, "image_organ", required=False),
                    },
                )
            )
    if leaked:
        build.notes.append(
            f"{leaked} train record(s) left out: their qid_linked_id is shared with a test "
            "question (paraphrase leakage)"
        )
    return build.finish()
