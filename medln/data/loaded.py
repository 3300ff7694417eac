"""What a format loader returns, and the rules every loader applies while building it.

Rules (the same for every format):
- a bad record (missing field, missing image file, duplicate id, unknown answer type) raises a
  `DataError` naming the file, the record and the field; with `skip_bad=True` it is recorded in
  `Loaded.skipped` instead, never dropped silently;
- records left out *by design* (Chinese SLAKE questions, VQA-RAD paraphrases of test
  questions) are not bad: they are counted in `Loaded.notes`;
- an empty split is an error.

A loader's shape:

    build = SplitBuilder(where=str(json_file), split=split, skip_bad=skip_bad)
    for index, record in enumerate(records):
        with build.record(record.get("qid", index)):
            build.add(Sample(id=..., answer=text(record, "answer"), ...))
    return build.finish()
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from medln.data.sample import DataError, Sample

SPLITS = ("train", "validation", "test")


@dataclass
class Found:
    """A dataset a loader recognised in a folder (an extracted upload): the PATH of its data
    spec, how to name it, which splits to score (eval: base vs tuned; ood: retention) and notes."""

    path: Path
    label: str
    eval_split: str = "test"
    ood_split: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    """The samples of one split, the bad records skipped (id, reason), and notes."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "12 Chinese records left out"
    revision: dict | None = None  # where the data came from, for the run record (medln.hub: an hf: commit)


class BadField(Exception):
    """Raised inside `SplitBuilder.record()`: `field` of the current record is wrong."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"field {field_name!r}: {problem}")
        self.field = field_name
        self.problem = problem


class SplitBuilder:
    """Collects the samples of one split, enforcing the rules in the module docstring."""

    def __init__(self, *, where: str, split: str, skip_bad: bool):
        self.where, self.split, self.skip_bad = where, split, skip_bad
        self.samples: list[Sample] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self._ids: set[str] = set()

    @contextlib.contextmanager
    def record(self, record_id: object, where: str | None = None) -> Iterator[None]:
        """Parse one record in this block; a `BadField` raised in it makes the record bad."""
        try:
            yield
        except BadField as e:
            self.bad(str(record_id), str(e), where=where)

    def add(self, sample: Sample) -> None:
        if sample.id in self._ids:
            raise BadField("id", f"duplicate id {sample.id!r} in split {self.split!r}")
        self._ids.add(sample.id)
        self.samples.append(sample)

    def bad(self, record_id: str, reason: str, *, where: str | None = None) -> None:
        if not self.skip_bad:
            raise DataError(f"{where or self.where}: record {record_id}: {reason}")
        self.skipped.append((record_id, reason))

    def finish(self) -> Loaded:
        if not self.samples:
            why = f" (all {len(self.skipped)} records were bad; first: {self.skipped[0][1]})" if self.skipped else ""
            raise DataError(f"{self.where}: split {self.split!r} is empty{why}")
        return Loaded(self.samples, self.skipped, self.notes)


def find(root: Path, pattern: str, depth: int = 3) -> list[Path]:
    """Files or folders matching `pattern` at `root` or up to `depth` folders below it (an
    upload's zip may hold the dataset in a folder of its own)."""
    found = []
    for d in range(depth + 1):
        found += sorted(Path(root).glob("/".join(["*"] * d + [pattern])))
    return found


# --- field helpers (raise BadField) ---------------------------------------------------------


def read_json_records(json_file: Path) -> list:
    """A JSON file holding a list of records (VQA-RAD's public file, SLAKE's splits)."""
    try:
        records = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_file}: unreadable JSON ({e})") from None
    if not isinstance(records, list):
        raise DataError(f"{json_file}: expected a list of records, got {type(records).__name__}")
    return records


def check_split(split: str, available: tuple[str, ...], dataset: str) -> None:
    if split not in available:
        raise DataError(f"{dataset} has no split {split!r}; choose one of {', '.join(available)}")


def text(record: dict, key: str, *, required: bool = True) -> str | None:
    """A non-empty string field; numbers (VQA-RAD answers such as 2) become strings."""
    value = record.get(key)
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        if required:
            raise BadField(key, "missing" if value is None else f"expected text, got {type(value).__name__}")
        return None
    value = str(value).strip()
    if not value and required:
        raise BadField(key, "empty")
    return value or None


def answer_type(record: dict, key: str = "answer_type") -> str:
    value = str(record.get(key) or "").strip().upper()
    if value not in ("CLOSED", "OPEN"):
        raise BadField(key, f"expected CLOSED or OPEN, got {record.get(key)!r}")
    return value


def closed_if_yes_no(answer: str) -> str:
    """Layouts without an answer type (HF mirrors, PathVQA): yes/no answers are CLOSED, by
    the same rule the metrics apply to references without a type (medln.metrics)."""
    from ..metrics import inferred_answer_type

    return inferred_answer_type(answer)


def contained(folder: Path, name: str) -> Path | None:
    """`folder/name` resolved (symbolic links followed), or None when it leads outside `folder`
    (absolute, a '..' that climbs out, a link pointing out, a NUL byte, a link loop). Decided
    before the file is looked at, so the answer does not tell whether a file outside exists."""
    root = Path(folder).resolve()
    try:
        path = (root / name).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symbolic-link loop
        return None
    if Path(name).is_absolute() or (path != root and root not in path.parents):
        return None
    return path


def image_file(folder: Path, name: str, key: str) -> Path:
    """`folder/name`, which must exist and stay inside `folder` (`contained`; records are
    untrusted); messages name the path as the record does."""
    path = contained(folder, name)
    if path is None:
        raise BadField(key, f"image path {name!r} leads outside the image folder")
    if not path.is_file():
        raise BadField(key, f"image file not found: {name} (in {Path(folder).name}/)")
    return path
