"""A safetensors file's header, read and checked before anything is allocated.

The format (huggingface/safetensors, "Format"): 8 bytes, a little-endian u64 N; N bytes of
UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}};
then the tensor bytes, offsets relative to the end of the header. A crafted file can claim an
N of 2**64 - 1, or shapes whose product overflows memory, so N is checked against the file's
own size and a cap before the header is read, and every entry against the bytes that really
follow it, before any tensor is built (peft and transformers load only files that pass here).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

MAX_HEADER_BYTES = 100 * 2**20  # the library's own limit (safetensors: 100 MB)
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 0.5, "F6_E2M3": 0.75,
               "F6_E3M2": 0.75, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
               "U64": 8, "I64": 8, "F64": 8, "C64": 8}


class TensorFileError(ValueError):
    """Not a usable safetensors file; the message names the file and the entry."""


def read_header(path: str | Path) -> dict[str, dict]:
    """{tensor name: {"dtype", "shape", "data_offsets"}} of a safetensors file, every entry
    checked against the file (no tensor data is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise TensorFileError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", prefix)
            if n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
                raise TensorFileError(f"{path}: not a safetensors file (its header claims {n:,} bytes; the file holds "
                                      f"{max(size - 8, 0):,} after the length, and headers are at most "
                                      f"{MAX_HEADER_BYTES:,})")
            raw = f.read(n)
    except FileNotFoundError:
        raise TensorFileError(f"{path.parent}: no {path.name}") from None
    except OSError as e:
        raise TensorFileError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TensorFileError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: not a safetensors file (its header is not a JSON object)")
    body = size - 8 - n
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in entries.items():
        _check_entry(path, name, entry, body)
    spans = sorted(tuple(e["data_offsets"]) for e in entries.values())
    for (b0, e0), (b1, _) in zip(spans, spans[1:]):
        if b1 < e0:
            raise TensorFileError(f"{path}: tensors overlap in the file (offsets {b0}-{e0} and {b1}-)")
    return entries


def _check_entry(path: Path, name: str, entry, body: int) -> None:
    where = f"{path}: tensor {name[:80]!r}"
    if not isinstance(entry, dict):
        raise TensorFileError(f"{where}: its entry is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise TensorFileError(f"{where}: unknown dtype {str(dtype)[:20]!r}")
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)):
        raise TensorFileError(f"{where}: shape must be a list of at most 8 non-negative whole numbers")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body):
        raise TensorFileError(f"{where}: data_offsets must be [begin, end] within the {body:,} bytes after the header")
    need = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != need:
        raise TensorFileError(f"{where}: its shape {shape} in {dtype} needs {need:,} bytes but data_offsets span "
                              f"{offsets[1] - offsets[0]:,}")


def shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a checked safetensors file."""
    return {name: tuple(e["shape"]) for name, e in read_header(path).items()}
