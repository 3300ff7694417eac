"""Data specs (`KIND:PATH`, or `sample`) -> lists of Sample.

The registry maps a spec's kind to its loader module; each loader has
`load(path, split, *, skip_bad=False) -> Loaded`.
"""

from __future__ import annotations

import importlib

from .loaded import Loaded
from .sample import DataError, Sample

# kind -> module (imported lazily: `datasets` and `pydicom` are slow to import)
LOADERS: dict[str, str] = {
    "sample": "medln.data.bundled",
    "jsonl": "medln.data.jsonl",
    "vqa-rad": "medln.data.vqa_rad",
    "slake": "medln.data.slake",
    "pathvqa": "medln.data.pathvqa",
    "iu-xray": "medln.data.iu_xray",
    "hf": "medln.data.hub",
}


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if kind == "sample" and not sep:
        return "sample", ""
    if kind not in LOADERS or (not path and kind != "sample"):
        known = ", ".join(f"{k}:PATH" if k != "sample" else k for k in LOADERS)
        raise DataError(f"bad data spec {spec!r}: expected one of {known}")
    return kind, path


def load_samples(spec: str, split: str = "train", *, skip_bad: bool = False) -> Loaded:
    kind, path = parse_spec(spec)
    module = importlib.import_module(LOADERS[kind])
    return module.load(path, split, skip_bad=skip_bad)


__all__ = ["DataError", "Loaded", "Sample", "LOADERS", "load_samples", "parse_spec"]
