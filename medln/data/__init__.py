"""Data specs (`KIND:PATH`, or `sample`) -> lists of Sample.

The registry maps a spec's kind to its loader module; each loader has
`load(path, split, *, skip_bad=False) -> Loaded` and, when a folder can hold it,
`detect(root) -> Found | None`: which layout an upload holds is asked of the loaders, in
registry order (the specific layouts first, a bare JSONL last). A new format is one loader
module and one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .loaded import Found, Loaded
from .sample import DataError, Sample

# kind -> module (imported lazily: `datasets` and `pydicom` are slow to import), in the order
# detect() asks them: the specific layouts first, the sample layout, then any JSONL file
LOADERS: dict[str, str] = {
    "vqa-rad": "medln.data.vqa_rad",
    "slake": "medln.data.slake",
    "iu-xray": "medln.data.iu_xray",
    "pathvqa": "medln.data.pathvqa",
    "sample": "medln.data.bundled",
    "jsonl": "medln.data.jsonl",
    "hf": "medln.data.hub",  # a hub id: nothing to detect in a folder
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


def detect(root: Path, where: str = "") -> tuple[str, Found]:
    """(kind, what it found) for the dataset in folder `root` (`where`: how messages name it):
    the first loader that recognises it."""
    for kind, name in LOADERS.items():
        found = getattr(importlib.import_module(name), "detect", lambda root: None)(Path(root))
        if found is not None:
            return kind, found
    raise DataError(f"no supported dataset found{' in ' + where if where else ''}: expected a JSONL file "
                    "(image, question, answer), train.jsonl + test.jsonl, or a VQA-RAD / SLAKE / PathVQA / "
                    "IU-Xray folder")


__all__ = ["DataError", "Found", "Loaded", "Sample", "LOADERS", "detect", "load_samples", "parse_spec"]
