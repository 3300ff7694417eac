"""What a session may download, handed to Gradio as per-download copies.

The runs root is never one of Gradio's `allowed_paths`: everything under it (every
session's runs, uploads and images) would then be served to anyone who knows or guesses a
path (`/gradio_api/file=<runs>/<session>/...`). Instead, a file the page offers (an
adapter zip, a comparison CSV, the preview of an uploaded image) is copied into a fresh
folder with a random name inside Gradio's own upload folder, which Gradio serves without
copying again; only that copy's URL ever reaches the browser.
"""

from __future__ import annotations

import secrets
import shutil
import time
import zipfile
from pathlib import Path

PREFIX = "medln-download-"
MAX_AGE_S = 24 * 3600  # copies older than this are removed when the next one is made


def served_copy(path: str | Path) -> str:
    """A fresh copy of `path` that Gradio may serve; returns its path."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder())
    _sweep(root)
    folder = root / f"{PREFIX}{secrets.token_hex(16)}"
    folder.mkdir(parents=True, mode=0o700)
    target = folder / Path(path).name
    shutil.copyfile(path, target)
    return str(target)


def _sweep(root: Path) -> None:
    cutoff = time.time() - MAX_AGE_S
    try:
        old = [p for p in root.glob(f"{PREFIX}*") if p.stat().st_mtime < cutoff]
    except OSError:
        return
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------ what the page offers


def adapter_zip(run_path: Path) -> Path | None:
    """run/<id>-adapter.zip: the adapter folder plus config.json, eval.json and metrics.jsonl."""
    run_path = Path(run_path)
    adapter = run_path / "adapter"
    if not adapter.is_dir():
        return None
    target = run_path / f"{run_path.name}-adapter.zip"
    if target.exists():
        return target
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(adapter.rglob("*")):
            if f.is_file():
                zf.write(f, f"{run_path.name}/adapter/{f.relative_to(adapter)}")
        for name in ("config.json", "eval.json", "metrics.jsonl"):
            if (run_path / name).is_file():
                zf.write(run_path / name, f"{run_path.name}/{name}")
    shutil.move(tmp, target)
    return target


def merged_zip(run_path: Path) -> Path:
    """run/<id>-merged.zip: the run's adapter folded into the base weights (medln.merge)."""
    from medln.merge import merge_run

    run_path = Path(run_path)
    target = run_path / f"{run_path.name}-merged.zip"
    if target.exists():
        return target
    merged = run_path / "merged"
    if not (merged / "config.json").exists():
        shutil.rmtree(merged, ignore_errors=True)
        merge_run(run_path, merged, in_run=True)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(merged.rglob("*")):
            if f.is_file():
                zf.write(f, f"{run_path.name}-merged/{f.relative_to(merged)}")
    shutil.move(tmp, target)
    return target
