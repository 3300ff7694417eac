"""Build the committed sample set in assets/sample (run by a maintainer, never at start-up).

    python -m medln.make.sample [--out assets/sample] [--no-real]

Writes, for every split of medln.make.task.SPLITS, images/<split>-NNNN.png and <split>.jsonl
(scanner-train, scanner-validation, scanner-test, findings-train, findings-validation,
findings-test, source-test), plus real.jsonl, ATTRIBUTION.md and MANIFEST.json (sha256 of
every other file, counts, generator seed and version). The synthetic part needs only numpy
+ Pillow and is reproduced exactly by tests/test_sample_data.py; the real part
(medln.make.real) reads files from packages installed only at build time. With
`real=False` (or when those packages are missing) the committed real PNGs are kept as they
are and only re-listed.

Records are VQA items only (reports are a pretraining-only item: they were 71 % of the v2
sample's label tokens, docs/experiment.md). Each carries `target`, `style` and `phrasing`
("seen" / "held-out"); the first question of each study also carries its ground-truth
`findings`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

from PIL import Image

from . import task
from .findings import GENERATOR_SEED, GENERATOR_VERSION
from .real import _jsonl, build_real, save_png


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel_sha256_of(im: Image.Image) -> str:
    """Hash of an image's pixels (mode, size, bytes): stable across zlib builds."""
    return hashlib.sha256(f"{im.mode}{im.size}".encode() + im.tobytes()).hexdigest()


def pixel_sha256(path: Path) -> str:
    with Image.open(path) as im:
        return pixel_sha256_of(im)


def split_records(name: str, split: task.Split) -> tuple[list[dict], list[tuple[str, Image.Image]]]:
    """(records, [(image path, image)]) of one split."""
    records, images = [], []
    domain = task.DOMAINS[split.domain]
    for i in range(split.studies):
        study = task.make_study(split.seed, i, split.domain, held_out=split.held_out)
        rel = f"images/{name}-{i:04d}.png"
        images.append((rel, study.image))
        for j, item in enumerate(study.items):
            rec = {"id": f"{name}-{i:04d}-q{j}", "image": rel, **item, "synthetic": True, "style": domain.style,
                   "target": split.domain}
            if j == 0:  # the ground truth once per study: the assets stay small
                rec["findings"] = study.findings.as_dict()
            records.append(rec)
    return records, images


def split_counts(records: list[dict], studies: int) -> dict:
    answers = Counter(r["answer"] for r in records)
    closed = [r for r in records if r["answer_type"] == "CLOSED"]
    return {"images": studies, "vqa": len(records), "closed": len(closed),
            "closed_yes": sum(r["answer"] == "yes" for r in closed),
            "held_out_phrasing": sum(r["phrasing"] == "held-out" for r in records),
            "distinct_questions": len({r["question"] for r in records}),
            "top_answer_share": round(answers.most_common(1)[0][1] / len(records), 3)}


def build_synthetic(out_dir: Path, splits: dict[str, task.Split] = task.SPLITS) -> dict[str, dict]:
    """Write images/<split>-NNNN.png and <split>.jsonl for every synthetic split; return counts."""
    counts = {}
    for name, split in splits.items():
        for old in (out_dir / "images").glob(f"{name}-[0-9]*.png"):
            old.unlink()
        records, images = split_records(name, split)
        for rel, image in images:
            save_png(image, out_dir / rel)
        (out_dir / f"{name}.jsonl").write_text(_jsonl(records), encoding="utf-8")
        counts[name] = {"domain": split.domain, **split_counts(records, split.studies)}
    return counts


def attribution_text(real: list) -> str:
    lines = [
        "# Attribution — assets/sample",
        "",
        "## Real images",
        "",
        "Converted to PNG (at most 512 px; DICOM windowed with the header's or a stated window)",
        "by `medln/make/real.py` from files shipped in permissively licensed packages.",
        "",
        "| image | package | file | licence | shows |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| images/real-{r.name}.png | {r.package} | {r.file} | {r.licence} | {r.shows} |" for r in real]
    lines += [
        "",
        "pydicom and pydicom-data are MIT-licensed (https://github.com/pydicom/pydicom,",
        "https://github.com/pydicom/pydicom-data). scikit-image's `retina.jpg` is Wikimedia Commons",
        "\"Fundus photograph of normal left eye\" (CC0 1.0); `ihc.png` was acquired at the Center for",
        "Microscopy And Molecular Imaging (CMMI), \"no known copyright restrictions\" per scikit-image.",
        "",
        "## Synthetic images",
        "",
        "Every other image (" + ", ".join(f"`images/{name}-*`" for name in task.SPLITS) + ")",
        "and every synthetic question and answer is generated procedurally by `medln.make.task`",
        f"(generator version {GENERATOR_VERSION}, seed {GENERATOR_SEED}). They depict no patient. They are ours and",
        "are dedicated to the public domain under CC0 1.0. Records carry `\"synthetic\": true`.",
        "",
    ]
    return "\n".join(lines)


def build_sample(out_dir: Path, *, real: bool = True, splits: dict[str, task.Split] = task.SPLITS) -> dict:
    """Write the whole sample set into out_dir and return the manifest (also written)."""
    import PIL

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    counts = build_synthetic(out_dir, splits)
    kept = build_real(out_dir, convert=real)
    counts["real"] = {"images": len(kept), "vqa": sum(len(r.questions) for r in kept)}
    (out_dir / "ATTRIBUTION.md").write_text(attribution_text(kept), encoding="utf-8")
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {
        "generator": {"module": "medln.make.task", "version": GENERATOR_VERSION, "seed": GENERATOR_SEED,
                      "splits": {k: {"domain": v.domain, "seed": v.seed, "studies": v.studies, "held_out": v.held_out}
                                 for k, v in splits.items()},
                      "default_target": task.DEFAULT_TARGET,
                      "targets": {t: task.DOMAINS[t].tests for t in task.TARGETS}},
        "pillow": PIL.__version__,
        "counts": counts,
        "total_bytes": sum(p.stat().st_size for p in files),
        "files": {p.relative_to(out_dir).as_posix(): sha256(p) for p in files},
        "pixels": {p.relative_to(out_dir).as_posix(): pixel_sha256(p) for p in files if p.suffix == ".png"},
    }
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "assets" / "sample")
    parser.add_argument("--no-real", action="store_true", help="keep the committed real PNGs (no pydicom-data / scikit-image)")
    args = parser.parse_args(argv)
    m = build_sample(args.out, real=not args.no_real)
    print(json.dumps(m["counts"], indent=1))
    print(f"{len(m['files'])} files, {m['total_bytes'] / 1e6:.2f} MB -> {args.out}")


if __name__ == "__main__":
    main()
