"""Deployment settings, from the environment only (a Space sets them as variables).

    MEDLN_BACKBONE        default backbone in the app            (medln-tiny, the bundled model)
    MEDLN_RUNS            root of the per-session run folders    (./runs/ui; /data/medln/runs when a
                          persistent volume is mounted at /data: medln.storage)
    MEDLN_MAX_UPLOAD_MB   largest upload accepted                 (200)
    MEDLN_MAX_UNZIP_MB    largest total size a zip may expand to  (1024)
    MEDLN_QUEUE_SIZE      Gradio queue bound (waiting events)     (16)
    MEDLN_MAX_JOBS        training/compare jobs waiting at most   (4)
    MEDLN_MAX_MODELS      base models kept loaded at most         (2)
    MEDLN_MAX_MODEL_GB    memory bound of the model cache, GB     (0: count bound only)
    MEDLN_JOB_MEMORY_GB   memory one training job may plan for   (what the device has free;
                          read by medln.memory, so the CLI honours it too)
    MEDLN_SECRET          key that encrypts the browser's session id in localStorage
                          (default: a random key kept in $MEDLN_CACHE/browser-secret, outside
                          the served folders, so a browser finds its session after a restart)
    HF_TOKEN              Hub token for gated models (or the one `hf auth login` saved; never
                          shown, never logged)
    MEDLN_ZEROGPU_MAX_S   longest GPU call asked of ZeroGPU, seconds (300)
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from medln.config import EVAL_LIMIT


def _int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Settings:
    default_backbone: str = "medln-tiny"
    runs_root: Path = Path("runs/ui")
    max_upload_mb: int = 200
    max_unzip_mb: int = 1024
    queue_size: int = 16
    max_jobs: int = 4
    max_models: int = 2
    max_model_gb: float = 0.0
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    # How much a demo fine-tune scores per split: the CLI's default (medln.config.EVAL_LIMIT).
    eval_limit: int = EVAL_LIMIT
    poll_s: float = 1.0
    storage: str = ""  # where runs live and whether they survive a restart (medln.storage), for About

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        from medln import storage

        storage.configure()  # a persistent /data volume: runs and caches there, unless set otherwise
        s = cls(
            default_backbone=os.environ.get("MEDLN_BACKBONE") or cls.default_backbone,
            runs_root=Path(os.environ.get("MEDLN_RUNS") or cls.runs_root),
            max_upload_mb=_int("MEDLN_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_unzip_mb=_int("MEDLN_MAX_UNZIP_MB", cls.max_unzip_mb),
            queue_size=_int("MEDLN_QUEUE_SIZE", cls.queue_size),
            max_jobs=_int("MEDLN_MAX_JOBS", cls.max_jobs),
            max_models=_int("MEDLN_MAX_MODELS", cls.max_models),
            max_model_gb=_float("MEDLN_MAX_MODEL_GB", cls.max_model_gb),
        )
        for k, v in overrides.items():
            setattr(s, k, Path(v) if k == "runs_root" else v)
        s.runs_root = s.runs_root.resolve()
        if "storage" not in overrides:
            s.storage = storage.resolve({**os.environ, "MEDLN_RUNS": str(s.runs_root)}).where
        if "secret" not in overrides:
            s.secret = os.environ.get("MEDLN_SECRET") or _stored_secret(
                Path(os.environ.get("MEDLN_CACHE") or Path.home() / ".cache" / "medln"))
        return s

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20

    @property
    def max_unzip_bytes(self) -> int:
        return self.max_unzip_mb * 2**20

    # ------------------------------------------------------------------ sessions

    def session_dir(self, session: str) -> Path:
        """runs/ui/<session>: this browser session's runs, uploads and comparisons."""
        return self.runs_root / check_session(session)


def _stored_secret(root: Path) -> str:
    path = root / "browser-secret"
    try:
        if path.is_file():
            return path.read_text(encoding="ascii").strip()
        root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token)
        return token
    except OSError:  # read-only disk, or another process won the race: a random key still works
        return path.read_text(encoding="ascii").strip() if path.is_file() else secrets.token_hex(16)


_SESSION = re.compile(r"[A-Za-z0-9_-]{8,80}")


def new_session_id() -> str:
    return uuid.uuid4().hex


def check_session(session: str | None) -> str:
    """A session id is a folder name: refuse anything that is not a plain token."""
    if not session or not _SESSION.fullmatch(session):
        raise ValueError(f"invalid session id {session!r}")
    return session


def api_session(session_hash: str | None) -> str:
    """The session of a gradio_client caller: its connection's session_hash, as a folder-safe token.
    A Client keeps one session_hash, so its fine-tunes and its /ask calls meet."""
    token = re.sub(r"[^A-Za-z0-9_-]", "", session_hash or "")[:64]
    return "api-" + (token if len(token) >= 4 else "anonymous")
