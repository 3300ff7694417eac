"""`slake:PATH` — SLAKE (Liu et al. 2021), English questions only.

PATH holds `train.json`, `validate.json`, `test.json` (lists of records with qid, img_id,
img_name, question, answer, q_lang, answer_type, content_type, modality, location, base_type)
and `imgs/<img_name>` (e.g. imgs/xmlab102/source.jpg). Records with q_lang "zh" are left out
(counted in `Loaded.notes`); a file with no English record at all is an error, because it
is then almost certainly the wrong file. content_type ("Modality", "Organ", ...) becomes the
question type; modality, location and base_type go to meta.
"""

from __future__ import annotations

from pathlib import Path

from medln.data.loaded import (BadField, Found, Loaded, SplitBuilder, answer_type, check_split, find, image_file,
                               read_json_records, text)
from medln.data.sample import DataError, Sample

SPLITS = ("train", "validation", "test")
FILES = {"train": "train.json", "validation": "validate.json", "test": "test.json"}


def detect(root: Path) -> Found | None:
    """train.json beside an imgs/ folder, anywhere in `root`."""
    hits = [p for p in find(root, "train.json") if (p.parent / "imgs").is_dir()]
    return Found(hits[0].parent, "SLAKE") if hits else None


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    check_split(split, SPLITS, "SLAKE")
    root = Path(path)
    json_file = root / FILES[split]
    if not json_file.is_file():
        raise DataError(f"{json_file}: not found (a SLAKE folder holds {', '.join(FILES.values())} and imgs/)")
    records = read_json_records(json_file)

    build = SplitBuilder(where=str(json_file), split=split, skip_bad=skip_bad)
    other_language = 0
    for index, record in enumerate(records):
        record_id = record.get("qid", f"#{index}") if isinstance(record, dict) else f"#{index}"
        with build.record(record_id):
            if not isinstance(record, dict):
                raise BadField("record", f"expected a JSON object, got {type(record).__name__}")
            language = text(record, "q_lang")
            if language != "en":
                other_language += 1
                continue
            build.add(
                Sample(
                    id=str(text(record, "qid")),
                    image=image_file(root / "imgs", text(record, "img_name"), "img_name"),
                    question=text(record, "question"),
                    answer=text(record, "answer"),
                    task="vqa",
                    answer_type=answer_type(record),
                    question_type=text(record, "content_type", required=False),
                    meta={
                        "source": "slake",
                        "img_id": record.get("img_id"),
                        "modality": text(record, "modality", required=False),
                        "location": text(record, "location", required=False),
                        "base_type": text(record, "base_type", required=False),
                    },
                )
            )
    if other_language and not build.samples and not build.skipped:
        raise DataError(
            f"{json_file}: all {other_language} records are Chinese (q_lang != 'en'); MedLN uses "
            "SLAKE's English questions only: is this the right file?"
        )
    if other_language:
        build.notes.append(f"{other_language} non-English (q_lang 'zh') record(s) left out")
    return build.finish()
