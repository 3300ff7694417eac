"""`sample` — the bundled experiment in assets/sample (committed; built by medln/make/sample.py).

medln-tiny was pretrained on a *source* domain of synthetic studies; the sample holds two
*target* domains to fine-tune it to (docs/experiment.md defines the task):

  sample             = sample:scanner, the default target: the same findings, questions and
                       answers as the source, in images from a "new scanner" (inverted greyscale,
                       another contrast curve, lower resolution, coarser noise)
  sample:findings    new findings the source never had (pneumothorax, infarct, kidney stone),
                       with new answer words, in the familiar image style
  sample:PATH        a folder laid out like a target: train.jsonl, test.jsonl, ... (or a copy of
                       the bundled folder, whose default target it then reads). A target name wins
                       over a folder of the same name: write ./findings for the folder.

Splits of a target: train (the fine-tune set), validation (for choices such as learning
rates; never trained on), test (scored once, at the end); shared by both: source-test
(held-out source-domain studies: how much of the pretrained ability a scope keeps) and
real (real images with hand-checked questions). Every synthetic record says whether its
question's wording occurs in train (`phrasing`: seen / held-out).
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import ASSETS as MEDLN_ASSETS
from . import jsonl
from .loaded import Found, Loaded, find
from .sample import DataError

ASSETS = MEDLN_ASSETS / "sample"
TARGETS = ("scanner", "findings")
DEFAULT_TARGET = "scanner"
TARGET_SPLITS = ("train", "validation", "test")
SHARED_SPLITS = {"source-test": "source-test.jsonl", "real": "real.jsonl"}
# The default target's files by split name (what `--data sample` reads).
SPLIT_FILES = {**{s: f"{DEFAULT_TARGET}-{s}.jsonl" for s in TARGET_SPLITS}, **SHARED_SPLITS}
MANIFEST = ASSETS / "MANIFEST.json"
ATTRIBUTION = ASSETS / "ATTRIBUTION.md"


def target_of(path: str) -> str | None:
    """The bundled target a `sample:` path names ("" is the default), else None (a folder)."""
    if not path:
        return DEFAULT_TARGET
    return path if path in TARGETS else None


def split_file(path: str, split: str) -> Path:
    """The JSONL file of `split` for the spec `sample:<path>`; a DataError names the valid ones."""
    target = target_of(path)
    if target is not None:
        root, files = ASSETS, {**{s: f"{target}-{s}.jsonl" for s in TARGET_SPLITS}, **SHARED_SPLITS}
    else:
        root = Path(path)
        files = {s: f"{s}.jsonl" for s in (*TARGET_SPLITS, *SHARED_SPLITS)}
        if not (root / files.get(split, "")).is_file() and (root / SPLIT_FILES.get(split, "/")).is_file():
            files = SPLIT_FILES  # a copy of the bundled folder: its default target
    if split not in files:
        where = f"sample:{path}" if path else "sample"
        raise DataError(f"{where}: unknown split {split!r}; valid splits: {', '.join(files)}")
    return root / files[split]


def detect(root: Path) -> Found | None:
    """A folder laid out as a target: train.jsonl beside test.jsonl (or a copy of the bundled
    folder: scanner-train.jsonl beside scanner-test.jsonl), and source-test.jsonl, the
    retention split, when present; anywhere in `root`."""
    hits = [p for p in find(root, "train.jsonl") if (p.parent / "test.jsonl").is_file()]
    hits += [p for p in find(root, SPLIT_FILES["train"]) if (p.parent / SPLIT_FILES["test"]).is_file()]
    if not hits:
        return None
    folder = hits[0].parent
    ood = "source-test" if (folder / "source-test.jsonl").is_file() else ""
    return Found(folder, "JSONL splits (train.jsonl + test.jsonl)", "test", ood)


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    """Load one split of a bundled target ("" = the default, "findings") or of a folder."""
    return jsonl.load(str(split_file(path, split)), None, skip_bad=skip_bad)


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


def describe_findings(f: dict) -> str:
    """A one-line caption of a synthetic study's ground truth."""
    modality = {"x-ray": "Chest radiograph", "ct": "CT", "mri": "MRI"}[f["modality"]]
    title = modality if f["region"] == "chest" else f"{modality} of the {f['region']}"
    if not f["present"]:
        return f"{title}: no {f['kind']}"
    words = [w for w in (f.get("size"), f["kind"]) if w]
    count = f"{f['count']} × " if f.get("count", 1) > 1 else ""
    where = f" ({f['location']})" if f.get("location") else ""
    return f"{title}: {count}{' '.join(words)}{where}"


def synthetic_examples(split: str = "test", target: str = DEFAULT_TARGET) -> list[tuple[str, str]]:
    """(path, caption) for one held-out synthetic image per modality/region pair of a target:
    the domain the bundled medln-tiny was tuned for, so its answers on them are meaningful."""
    seen, out = set(), []
    for s in load(target, split).samples:
        findings = s.meta.get("findings")
        if not findings:
            continue
        key = (findings["modality"], findings["region"])
        if key not in seen:
            seen.add(key)
            out.append((str(s.image), f"SYNTHETIC ({target} target, {split} split): {describe_findings(findings)}. "
                                      f"Generated by medln.make.task."))
    return out
