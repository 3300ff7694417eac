"""`jsonl:PATH` — one JSON object per line: image (relative to the file), question, answer or report.

Optional per line: id, answer_type (CLOSED/OPEN), question_type, synthetic, split.
A file holds one split unless its lines carry `split`; then `split` selects lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from .loaded import Loaded
from .sample import DataError, Sample


def parse_record(obj: object, *, where: str, root: Path) -> Sample:
    """One JSON line -> Sample; every problem names `where` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    image = obj.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: field 'image' is missing or not a string")
    path = (root / image).resolve()
    if not path.is_file():
        raise DataError(f"{where}: field 'image': file not found: {path}")
    has_answer, has_report = "answer" in obj, "report" in obj
    if has_answer == has_report:
        raise DataError(f"{where}: exactly one of 'answer' (VQA) or 'report' must be present")
    text = obj["answer"] if has_answer else obj["report"]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: field '{'answer' if has_answer else 'report'}' is empty or not a string")
    question = obj.get("question")
    if has_answer and (not isinstance(question, str) or not question.strip()):
        raise DataError(f"{where}: field 'question' is missing or empty (required with 'answer')")
    answer_type = obj.get("answer_type")
    if answer_type is not None:
        answer_type = str(answer_type).upper()
        if answer_type not in ("CLOSED", "OPEN"):
            raise DataError(f"{where}: field 'answer_type' must be CLOSED or OPEN, got {obj['answer_type']!r}")
    return Sample(
        id=str(obj.get("id", where)),
        image=path,
        answer=text.strip(),
        question=question.strip() if has_answer else None,
        task="vqa" if has_answer else "report",
        answer_type=answer_type if has_answer else None,
        question_type=obj.get("question_type"),
        synthetic=bool(obj.get("synthetic", False)),
        meta={k: v for k, v in obj.items() if k in ("split", "style", "findings", "source")},
    )


def load(path: str, split: str | None = None, *, skip_bad: bool = False) -> Loaded:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"jsonl: file not found: {file}")
    samples, skipped, seen = [], [], set()
    with file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                obj = json.loads(line)
                if split and isinstance(obj, dict) and "split" in obj and obj["split"] != split:
                    continue
                sample = parse_record(obj, where=where, root=file.parent)
                if sample.id in seen:
                    raise DataError(f"{where}: duplicate id {sample.id!r}")
            except json.JSONDecodeError as e:
                err = DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})")
                if not skip_bad:
                    raise err from None
                skipped.append((where, str(err)))
                continue
            except DataError as err:
                if not skip_bad:
                    raise
                skipped.append((where, str(err)))
                continue
            seen.add(sample.id)
            samples.append(sample)
    if not samples:
        raise DataError(f"{file}: no samples" + (f" in split {split!r}" if split else ""))
    return Loaded(samples, skipped)
