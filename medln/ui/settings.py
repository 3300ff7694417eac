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
    MEDLN_MODELS_ROOT     a folder whose model folders visitors may name as backbone (unset: none;
                          a visitor's backbone is otherwise a registry name or a Hub id)
    MEDLN_CACHE, MEDLN_LOG   MedLN's caches (medln.storage), the log level (INFO)

A bad value is refused at start, in one line naming the variable (SettingsError), never
replaced silently by a default.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from medln.backbones import BACKBONES_BY_NAME, BackboneError, resolve
from medln.config import EVAL_LIMIT, ConfigError
from medln.userfiles import short


class SettingsError(ConfigError):
    """A MEDLN_* variable the app cannot start with; the message names it."""


# variable -> (kind, lowest, highest): numbers the app reads from the environment
NUMBERS = {"MEDLN_MAX_UPLOAD_MB": (int, 1, 100_000), "MEDLN_MAX_UNZIP_MB": (int, 1, 1_000_000),
           "MEDLN_QUEUE_SIZE": (int, 1, 10_000), "MEDLN_MAX_JOBS": (int, 1, 1_000), "MEDLN_MAX_MODELS": (int, 1, 64),
           "MEDLN_MAX_MODEL_GB": (float, 0, 100_000), "MEDLN_JOB_MEMORY_GB": (float, 1e-9, 100_000),
           "MEDLN_ZEROGPU_MAX_S": (int, 10, 86_400)}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _number(name: str, default, env=None):
    env = os.environ if env is None else env
    kind, lo, hi = NUMBERS[name]
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}={short(text)}: expected {'a whole number' if kind is int else 'a number'} "
                            f"between {lo:g} and {hi:g}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={short(text)}: expected a value between {lo:g} and {hi:g}")
    return value


def _folder(name: str, value: str, *, create: bool, what: str) -> Path:
    """A folder the app writes into (created when `create`), named by variable when it cannot be."""
    try:
        path = Path(value).expanduser()
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise SettingsError(f"{name}={short(value, 300)}: {'it' if parent == path else short(str(parent), 300)} is a "
                                        f"file, not a folder ({what})")
                break
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise SettingsError(f"{name}={short(value, 300)}: no such folder ({what})")
        if create and not os.access(path, os.W_OK | os.X_OK):
            raise SettingsError(f"{name}={short(value, 300)}: the app cannot write there ({what})")
        return path.resolve()
    except SettingsError:
        raise
    except OSError as e:
        raise SettingsError(f"{name}={short(value, 300)}: cannot use it ({e.strerror or type(e).__name__}; {what})") from None
    except ValueError as e:  # an embedded NUL byte
        raise SettingsError(f"{name}={short(value, 300)}: not a usable path ({e})") from None


def check_environment(env=None) -> None:
    """Every MEDLN_* setting the process reads, checked at start (medln.launch, build_app)."""
    env = os.environ if env is None else env
    for name in NUMBERS:
        _number(name, None, env)
    for name, what in (("MEDLN_CACHE", "MedLN's caches"), ("MEDLN_RUNS", "the app's run folders")):
        if env.get(name):
            _folder(name, env[name], create=True, what=what)
    if env.get("MEDLN_MODELS_ROOT"):
        _folder("MEDLN_MODELS_ROOT", env["MEDLN_MODELS_ROOT"], create=False, what="the models visitors may name")
    level = env.get("MEDLN_LOG", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"MEDLN_LOG={short(env.get('MEDLN_LOG'))}: expected one of {', '.join(LOG_LEVELS)}")
    secret = env.get("MEDLN_SECRET")
    if secret is not None and secret != "" and len(secret) < 16:
        raise SettingsError("MEDLN_SECRET: at least 16 characters (it encrypts the browser's session id); "
                            "unset it to keep a random key in $MEDLN_CACHE")
    backbone = env.get("MEDLN_BACKBONE", "")
    if len(backbone) > 1024:
        raise SettingsError(f"MEDLN_BACKBONE: at most 1,024 characters, got {len(backbone):,}")
    if backbone:
        try:
            resolve(backbone.strip())
        except BackboneError as e:
            raise SettingsError(f"MEDLN_BACKBONE: {e}") from None


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
    models_root: Path | None = None  # MEDLN_MODELS_ROOT: local model folders visitors may name

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        from medln import storage

        storage.configure()  # a persistent /data volume: runs and caches there, unless set otherwise
        check_environment()
        s = cls(
            default_backbone=(os.environ.get("MEDLN_BACKBONE") or "").strip() or cls.default_backbone,
            runs_root=Path(os.environ.get("MEDLN_RUNS") or cls.runs_root),
            max_upload_mb=_number("MEDLN_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_unzip_mb=_number("MEDLN_MAX_UNZIP_MB", cls.max_unzip_mb),
            queue_size=_number("MEDLN_QUEUE_SIZE", cls.queue_size),
            max_jobs=_number("MEDLN_MAX_JOBS", cls.max_jobs),
            max_models=_number("MEDLN_MAX_MODELS", cls.max_models),
            max_model_gb=_number("MEDLN_MAX_MODEL_GB", cls.max_model_gb),
            models_root=Path(os.environ["MEDLN_MODELS_ROOT"]).expanduser().resolve()
            if os.environ.get("MEDLN_MODELS_ROOT") else None,
        )
        for k, v in overrides.items():
            setattr(s, k, Path(v) if k in ("runs_root", "models_root") and v is not None else v)
        s.runs_root = _folder("runs_root" if "runs_root" in overrides else "MEDLN_RUNS", str(s.runs_root),
                              create=True, what="the app's run folders")
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

    # ------------------------------------------------------------------ backbones visitors name

    def app_backbone(self, value) -> str:
        """What a visitor may name as backbone: a registry name, a Hugging Face id (owner/name,
        optionally @revision) that is no path on this server, the operator's default, or a
        folder under MEDLN_MODELS_ROOT (resolved like the runs root: links and '..' followed,
        then checked inside). Anything else is refused with one sentence that does not say
        whether such a path exists. Returns the value to train on (a folder: its real path)."""
        if not isinstance(value, str) or not value.strip():
            raise ConfigError("backbone: choose one (a registry name or a Hugging Face id owner/name)")
        if len(value) > MAX_BACKBONE:
            raise ConfigError(f"backbone: at most {MAX_BACKBONE:,} characters, got {len(value):,}")
        text = value.strip()
        name = text.split("@", 1)[0]
        if text and (text == self.default_backbone or name in BACKBONES_BY_NAME):
            return text
        if HUB_ID.fullmatch(text) and ".." not in text and not _exists(name):
            return text
        if text and self.models_root is not None:
            try:
                folder = Path(text).expanduser()
                real = (folder if folder.is_absolute() else self.models_root / folder).resolve()
                if real == self.models_root or self.models_root in real.parents:
                    return str(real)
            except (OSError, ValueError):
                pass
        # one sentence for every refusal: whether such a path exists here is never said
        where = ("; a local folder only under the server's models folder (MEDLN_MODELS_ROOT)"
                 if self.models_root is not None else "; this server takes no local folders")
        raise ConfigError(f"backbone: {short(text, 80)} is not accepted here: a registry name "
                          f"({', '.join(BACKBONES_BY_NAME)}) or a Hugging Face id (owner/name){where}")


MAX_BACKBONE = 1024  # TrainConfig.backbone's max_len
# A Hub repository id: owner/name, each part starting with a letter or digit (no '.', '..' or
# '~' to lead a path anywhere), an optional @revision.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}(@[A-Za-z0-9._/-]{1,128})?")


def _exists(path: str) -> bool:
    """Whether a hub-id-shaped name is also a path here (transformers would load that folder)."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return True


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
    except (OSError, ValueError):  # read-only disk, a damaged key, or another process won the race
        try:
            return path.read_text(encoding="ascii").strip() or secrets.token_hex(16)
        except (OSError, ValueError):
            return secrets.token_hex(16)  # a random key still works (sessions end at a restart)


_SESSION = re.compile(r"[A-Za-z0-9_-]{8,80}")


def new_session_id() -> str:
    return uuid.uuid4().hex


def check_session(session: str | None) -> str:
    """A session id is a folder name: refuse anything that is not a plain token."""
    if not session or not _SESSION.fullmatch(session):
        raise ValueError(f"invalid session id {short(session)}")
    return session


def api_session(session_hash: str | None) -> str:
    """The session of a gradio_client caller: its connection's session_hash, as a folder-safe token.
    A Client keeps one session_hash, so its fine-tunes and its /ask calls meet."""
    token = re.sub(r"[^A-Za-z0-9_-]", "", session_hash or "")[:64]
    return "api-" + (token if len(token) >= 4 else "anonymous")
