"""`pathvqa:PATH` — PathVQA in the Hugging Face parquet layout (flaviagiammarino/path-vqa).

PATH is a folder holding `data/{train,validation,test}-*.parquet` with the columns `image`
(a struct {bytes, path}), `question` and `answer`. There is no answer type: yes/no answers are
CLOSED, the rest OPEN (about half of PathVQA is yes/no).

This image/question/answer layout is shared by other HF mirrors, so `load_parquet_split` and
`vqa_row` are also used by the VQA-RAD mirror (`vqa_rad.py`) and `hf:` datasets (`hub.py`).
Image bytes stay encoded in the Sample; they are checked when `load_image` decodes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from medln.data.loaded import (
    BadField,
    Found,
    Loaded,
    SplitBuilder,
    check_split,
    closed_if_yes_no,
    find,
    image_file,
    text,
)
from medln.data.sample import DataError, Sample

SPLITS = ("train", "validation", "test")
VQA_COLUMNS = ("image", "question", "answer")


def detect(root: Path) -> Found | None:
    """A data/ folder of train-*.parquet shards (image, question, answer), anywhere in `root`."""
    hits = [p for p in find(root, "data") if p.is_dir() and any(p.glob("train-*.parquet"))]
    return Found(hits[0].parent, "parquet image/question/answer (PathVQA layout)") if hits else None


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    check_split(split, SPLITS, "PathVQA")
    return load_parquet_split(Path(path), split, skip_bad=skip_bad, source="pathvqa")


def parquet_files(root: Path, split: str) -> list[Path]:
    """`root/data/<split>-*.parquet`, sorted (shard order = row order)."""
    files = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise DataError(f"{root}: no parquet files for split {split!r} (expected data/{split}-*.parquet)")
    return files


def iter_parquet_rows(files: list[Path], columns: tuple[str, ...]) -> Iterator[tuple[Path, int, dict]]:
    """(file, row index within the split, row) for every row; a missing column is fatal."""
    import pyarrow.parquet as pq

    index = 0
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except Exception as e:  # pyarrow.ArrowInvalid, OSError
            raise DataError(f"{file}: unreadable parquet file ({e})") from None
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise DataError(
                f"{file}: missing column(s) {', '.join(missing)} "
                f"(has {', '.join(parquet.schema_arrow.names)})"
            )
        for batch in parquet.iter_batches(batch_size=256, columns=list(columns)):
            for row in batch.to_pylist():
                yield file, index, row
                index += 1


def load_parquet_split(root: Path, split: str, *, skip_bad: bool, source: str) -> Loaded:
    files = parquet_files(root, split)
    build = SplitBuilder(where=str(files[0].parent / f"{split}-*.parquet"), split=split, skip_bad=skip_bad)
    for file, index, row in iter_parquet_rows(files, VQA_COLUMNS):
        record_id = f"{split}-{index}"
        with build.record(record_id, where=str(file)):
            build.add(vqa_row(row, record_id, image_root=root, source=source))
    build.notes.append("answer types inferred: yes/no answers are CLOSED, the rest OPEN")
    return build.finish()


def vqa_row(row: dict, record_id: str, *, image_root: Path, source: str) -> Sample:
    """One image/question/answer row -> a VQA Sample (raises BadField)."""
    answer = text(row, "answer")
    given_type = str(row.get("answer_type") or "").strip().upper()
    return Sample(
        id=record_id,
        image=image_value(row.get("image"), image_root),
        question=text(row, "question"),
        answer=answer,
        task="vqa",
        answer_type=given_type if given_type in ("CLOSED", "OPEN") else closed_if_yes_no(answer),
        question_type=text(row, "question_type", required=False),
        meta={"source": source},
    )


def image_value(value: object, image_root: Path) -> Path | bytes:
    """The HF `Image` feature stored undecoded: {"bytes": ..., "path": ...}, or plain bytes/path.

    Bytes win; a path alone must name a file under `image_root`.
    """
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    if isinstance(value, str) and value:
        return image_file(image_root, value, "image")
    raise BadField("image", "no image bytes and no image path")
