"""Where runs and downloaded models live, and whether they survive a restart.

A Hugging Face Space's own disk is wiped on every restart; a Space with persistent storage
mounts a volume at /data that is kept. When that folder exists (and is writable):

  runs (MEDLN_RUNS)           /data/medln/runs      the app's per-session run folders
  MedLN cache (MEDLN_CACHE)   /data/medln/cache     parameter-count cache, the browser-session key
  HF cache (HF_HOME)          /data/.huggingface    downloaded backbones and datasets (Hugging
                                                    Face's own advice for persistent storage)

An environment variable that is already set wins. Without /data the defaults stay: runs in
./runs/ui, the caches under ~/.cache. `MEDLN_DATA_ROOT` names another persistent root (tests
point it at a temporary folder; a server with its own volume may use it too).

HF_HOME is read by huggingface_hub when it is first imported (gradio and transformers import
it), so `configure()` must run before those imports: app.py calls it first thing.

Every JSON record MedLN keeps (a run's config.json and eval.json, a sweep's results.json,
inspect.json) is written by `write_json_atomic`: a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = "/data"
DEFAULT_RUNS = Path("runs/ui")


@dataclass(frozen=True)
class Storage:
    runs: Path  # root of the app's run folders
    persistent: bool | None  # True: on the persistent volume; False: on a disk a restart may wipe; None: unknown
    where: str  # one line for the About tab: where runs live and why


def data_root(env=None) -> Path | None:
    """The persistent volume (MEDLN_DATA_ROOT, default /data) if it is a writable folder."""
    env = os.environ if env is None else env
    root = Path(env.get("MEDLN_DATA_ROOT") or DEFAULT_DATA_ROOT)
    return root if root.is_dir() and os.access(root, os.W_OK) else None


def configure(env=None) -> Path | None:
    """Point MEDLN_RUNS, MEDLN_CACHE and HF_HOME at the persistent volume when there is one
    and they are not set already. Returns the volume (None without one)."""
    env = os.environ if env is None else env
    root = data_root(env)
    if root is not None:
        env.setdefault("MEDLN_RUNS", str(root / "medln" / "runs"))
        env.setdefault("MEDLN_CACHE", str(root / "medln" / "cache"))
        env.setdefault("HF_HOME", str(root / ".huggingface"))
    return root


def resolve(env=None) -> Storage:
    """Where the app keeps runs, after configure() (or an explicit MEDLN_RUNS)."""
    env = os.environ if env is None else env
    root = data_root(env)
    runs = Path(env.get("MEDLN_RUNS") or DEFAULT_RUNS).resolve()
    if root is not None and _inside(runs, root):
        return Storage(runs, True, f"on the persistent volume {root}: runs survive a restart")
    if root is not None:
        return Storage(runs, False, f"MEDLN_RUNS points outside the persistent volume {root}: runs may be lost "
                                    "when the Space restarts")
    if env.get("SPACE_ID"):  # a Hugging Face Space without persistent storage
        return Storage(runs, False, "on the Space's own disk, which a restart wipes: download adapters you want "
                                    "to keep, or enable persistent storage (/data) in the Space settings")
    return Storage(runs, None, "on this machine's disk: runs stay until you delete them")


def cache_root(env=None) -> Path:
    """MedLN's own cache folder (MEDLN_CACHE, else ~/.cache/medln): parameter counts, the
    base model's predictions (medln.prediction_cache), the app's speed book."""
    env = os.environ if env is None else env
    return Path(env.get("MEDLN_CACHE") or Path.home() / ".cache" / "medln")


def hf_cache(env=None) -> Path:
    """The Hugging Face cache folder that downloads go to (HF_HOME, else ~/.cache/huggingface)."""
    env = os.environ if env is None else env
    return Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def write_json_atomic(path: Path, obj) -> None:
    """JSON written to a temporary name, flushed to disk and renamed into place: a crash
    mid-write never leaves a half-written file that looks complete (medln.runs' contract)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """`text` into `path` through a fresh, uniquely named temporary file beside it (created
    exclusively: never someone else's file, nor another writer's), fsynced and renamed into
    place; the temporary file is removed if anything fails. A folder (or a link) at `path` is
    refused rather than replaced."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise FileExistsError(f"{path} exists and is not a regular file; move it away to write there")
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def give_default_modes(folder: Path) -> None:
    """Files saved into `folder` get the mode any new file gets here (0666 less the umask:
    0644 usually). safetensors >= 0.8 writes through a temporary file, which the Rust tempfile
    crate creates 0600, and renames it into place (safetensors PR #764, issue #782): the
    weights would be readable by their owner alone while every other file of the run is not."""
    probe = folder / f".mode-probe-{os.getpid()}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the mode the umask gives
    try:
        mode = os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()
    for file in folder.rglob("*"):
        if file.is_file() and not file.is_symlink() and file.stat().st_mode & 0o777 != mode:
            file.chmod(mode)
