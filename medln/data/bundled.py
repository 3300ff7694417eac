"""`sample` — the bundled demo set in assets/sample (committed; built by build_sample.py).

Splits:
  train        target-style synthetic studies: the fine-tune set
  test         target-style synthetic studies: fine-tune evaluation
  source-test  held-out source-style studies: how much of the original ability a scope keeps
  real         real images (pydicom, pydicom-data, scikit-image) with hand-checked questions

Each synthetic image has several VQA items and one report item in the same file.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import jsonl
from .loaded import Loaded
from .sample import DataError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "sample"
SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl", "source-test": "source-test.jsonl", "real": "real.jsonl"}
MANIFEST = ASSETS / "MANIFEST.json"
ATTRIBUTION = ASSETS / "ATTRIBUTION.md"


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    """Load one split; `path` may name another copy of the sample folder ("" = bundled)."""
    if split not in SPLIT_FILES:
        raise DataError(f"sample: unknown split {split!r}; valid splits: {', '.join(SPLIT_FILES)}")
    root = Path(path) if path else ASSETS
    return jsonl.load(str(root / SPLIT_FILES[split]), None, skip_bad=skip_bad)


_ROW = re.compile(r"^\|\s*(images/real-[^|]+?\.png)\s*\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")


def example_images(root: Path = ASSETS) -> list[tuple[str, str]]:
    """(path, caption) for each real image, captions from ATTRIBUTION.md (for the app's examples)."""
    out = []
    for line in (root / "ATTRIBUTION.md").read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            image, package, file, licence, shows = (g.strip() for g in m.groups())
            out.append((str(root / image), f"{shows} ({package}: {file}, {licence})"))
    return out
