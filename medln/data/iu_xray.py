"""`iu-xray:PATH` — IU-Xray (Open-I chest X-ray reports) for report generation.

Two layouts:
- R2Gen: PATH/annotation.json = {"train": [...], "val": [...], "test": [...]}, each record
  {"id", "report", "image_path": [...], "split"}, images under PATH/images/. Splits are R2Gen's
  (the common 7:1:2 split used by report-generation papers).
- Open-I XML: PATH/ecgen-radiology/*.xml, one report per file with
  <AbstractText Label="FINDINGS"> and <AbstractText Label="IMPRESSION">, images referenced by
  <parentImage id="CXR1_1_IM-0001-3001"> -> PATH/images/<id>.png. The report is findings then
  impression (either alone is accepted; neither makes the record bad). Open-I has no official
  split, so a stable hash of the report id assigns 70 % train, 10 % validation, 20 % test.

Each report becomes one Sample (task "report", no question) with the study's FIRST image;
meta says how many images the study has.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from medln.data.loaded import BadField, Found, Loaded, SplitBuilder, check_split, find, image_file, text
from medln.data.sample import DataError, Sample

SPLITS = ("train", "validation", "test")
R2GEN_KEYS = {"train": "train", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".dcm")  # Open-I ships PNG; accept the others if converted


def detect(root: Path) -> Found | None:
    """R2Gen's annotation.json or Open-I's ecgen-radiology/ folder, anywhere in `root`."""
    hits = find(root, "annotation.json") or find(root, "ecgen-radiology")
    return Found(hits[0].parent, "IU-Xray (reports)") if hits else None


def load(path: str, split: str, *, skip_bad: bool = False) -> Loaded:
    check_split(split, SPLITS, "IU-Xray")
    root = Path(path)
    if (root / "annotation.json").is_file():
        return _load_r2gen(root, split, skip_bad=skip_bad)
    if (root / "ecgen-radiology").is_dir():
        return _load_openi(root, split, skip_bad=skip_bad)
    raise DataError(
        f"{root}: not an IU-Xray folder: expected annotation.json + images/ (R2Gen) "
        "or ecgen-radiology/*.xml + images/ (Open-I)"
    )


def _load_r2gen(root: Path, split: str, *, skip_bad: bool) -> Loaded:
    json_file = root / "annotation.json"
    try:
        annotation = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_file}: unreadable JSON ({e})") from None
    key = R2GEN_KEYS[split]
    if not isinstance(annotation, dict) or not isinstance(annotation.get(key), list):
        raise DataError(f"{json_file}: no list under key {key!r} (R2Gen layout: train / val / test)")
    build = SplitBuilder(where=f"{json_file} [{key}]", split=split, skip_bad=skip_bad)
    for index, record in enumerate(annotation[key]):
        record_id = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
        with build.record(record_id):
            if not isinstance(record, dict):
                raise BadField("record", f"expected a JSON object, got {type(record).__name__}")
            images = record.get("image_path")
            if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
                raise BadField("image_path", "expected a non-empty list of image paths")
            build.add(
                Sample(
                    id=str(text(record, "id")),
                    image=image_file(root / "images", images[0], "image_path"),
                    answer=text(record, "report"),
                    question=None,
                    task="report",
                    meta={"source": "iu-xray (R2Gen)", "image_count": len(images), "images": images},
                )
            )
    return build.finish()


def _load_openi(root: Path, split: str, *, skip_bad: bool) -> Loaded:
    folder = root / "ecgen-radiology"
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(f"{folder}: no *.xml report files")
    build = SplitBuilder(where=str(folder), split=split, skip_bad=skip_bad)
    for file in files:
        with build.record(file.stem, where=str(file)):
            try:
                # ElementTree resolves no external entities; expat (>= 2.4) caps entity expansion.
                tree = ET.parse(file)
            except (ET.ParseError, OSError) as e:
                raise BadField("xml", f"unreadable XML ({e})") from None
            report_id = _attr(tree, "uId", "id") or file.stem
            if _openi_split(report_id) != split:
                continue
            sections = {
                str(node.get("Label", "")).upper(): " ".join("".join(node.itertext()).split())
                for node in tree.iter("AbstractText")
            }
            findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
            if not findings and not impression:
                raise BadField("AbstractText", "neither FINDINGS nor IMPRESSION has text")
            image_ids = [node.get("id") for node in tree.iter("parentImage") if node.get("id")]
            if not image_ids:
                raise BadField("parentImage", "no image referenced")
            build.add(
                Sample(
                    id=report_id,
                    image=_openi_image(root / "images", image_ids[0]),
                    answer=" ".join(part for part in (findings, impression) if part),
                    question=None,
                    task="report",
                    meta={
                        "source": "iu-xray (Open-I)",
                        "file": file.name,
                        "image_count": len(image_ids),
                        "images": image_ids,
                        "findings": findings or None,
                        "impression": impression or None,
                    },
                )
            )
    build.notes.append("Open-I has no official split: assigned by a hash of the report id (70/10/20)")
    return build.finish()


def _attr(tree: ET.ElementTree, tag: str, name: str) -> str | None:
    node = tree.find(f".//{tag}")
    return node.get(name) if node is not None else None


def _openi_split(report_id: str) -> str:
    """Stable across runs and machines (unlike hash()): 0-6 train, 7 validation, 8-9 test."""
    bucket = int(hashlib.sha256(report_id.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 7 else "validation" if bucket == 7 else "test"


def _openi_image(folder: Path, image_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{image_id}{suffix}").is_file():
            return image_file(folder, f"{image_id}{suffix}", "parentImage")
    raise BadField("parentImage", f"image file not found: {folder / image_id}.png")
