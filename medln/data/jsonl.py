"""`jsonl:PATH` — one JSON object per line: image (relative to the file), question, answer or report.

Optional per line: id, answer_type (CLOSED/OPEN), question_type, synthetic, split, and (kept in
Sample.meta) style, target, findings, source, phrasing ("seen" / "held-out": medln.baselines).
A file holds one split unless its lines carry `split`; then `split` selects lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from .loaded import Found, Loaded, contained, find
from .sample import DataError, Sample


def parse_record(obj: object, *, where: str, root: Path) -> Sample:
    """One JSON line -> Sample; every problem names `where` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    image = obj.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: field 'image' is missing or not a string")
    path = inside(root, image, f"{where}: field 'image'")
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
        meta={**{k: v for k, v in obj.items() if k in ("split", "style", "findings", "source", "target", "phrasing")},
              "where": where, "image": image},
    )


def inside(root: Path, name: str, where: str) -> Path:
    """`root/name` resolved (symbolic links followed), which must be a file inside `root`.
    Records are untrusted (an upload in the app): an absolute path, a '..' that climbs out or
    a link pointing outside is refused before the file is looked at, so the answer is the
    same whether or not the target exists, and names the path as the record gave it."""
    path = contained(root, name)
    if path is None:
        raise DataError(f"{where}: image path {name!r} leads outside the dataset folder; "
                        "images must be files inside it, named relative to it")
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {name} (relative to the dataset folder)")
    return path


def detect(root: Path) -> Found | None:
    """The first JSONL file anywhere in `root` (the most general format: tried last)."""
    hits = find(root, "*.jsonl")
    return found(hits[0]) if hits else None


def found(path: Path) -> Found:
    """A single JSONL file: its lines' `split` fields decide what trains and what is scored."""
    splits: set[str] = set()
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # load() reports malformed lines with their line number
            if isinstance(obj, dict) and isinstance(obj.get("split"), str):
                splits.add(obj["split"])
    out = Found(Path(path), f"JSONL ({Path(path).name})")
    if not splits:
        out.notes.append("the file has no 'split' field: base and tuned are scored on training records")
    elif "train" not in splits:
        raise DataError(f"{Path(path).name}: the records carry split fields ({', '.join(sorted(splits))}) but none "
                        "is 'train'")
    elif "test" in splits:
        out.eval_split = "test"
    elif "validation" in splits:
        out.eval_split = "validation"
    else:
        out.eval_split = ""
        out.notes.append("no 'test' or 'validation' records: no base/tuned scores")
    return out


def load(path: str, split: str | None = None, *, skip_bad: bool = False) -> Loaded:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"jsonl: file not found: {file}")
    samples, skipped, seen = [], [], set()
    with file.open("rb") as f:  # bytes: a non-UTF-8 line is one bad record, named by its line
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                    "save the file as UTF-8") from None
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
