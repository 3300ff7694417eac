"""Every failure becomes one clear sentence for the user; the trace goes to the server log.

Handlers never let an exception reach Gradio unconverted: Gradio would show a generic
"Error" (or, with show_error=True, the raw exception), and a stack trace is no message.
`user_message` maps the exceptions the core raises on purpose (their text is written for
users) and the environment's failures (out of memory, disk full) to a sentence that says
what to do; anything else is logged with an id the user can quote.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from medln.memory import is_out_of_memory

log = logging.getLogger("medln.ui")


class UserError(Exception):
    """A problem the user can fix, raised by the UI layer itself (bad upload, full queue)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from medln.backbones import BackboneError
    from medln.config import ConfigError
    from medln.data.sample import DataError
    from medln.runs import RunError
    from medln.methods import ScopeError

    return (UserError, BackboneError, ConfigError, DataError, RunError, ScopeError)


# An absolute server path (not part of a URL): shown as its last part only, so a message
# never reveals the server's folders (cache, session and upload locations).
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+@-]+/)+([\w.+@-]+)")
# CLI advice inside core messages, in the page's own words.
_WEB_WORDS = [
    ("load in bf16 (--quant none)", "untick 4-bit (full precision)"),
    ("use --quant none (bf16)", "untick 4-bit"),
    ("use --quant none", "untick 4-bit"),
    ("--quant none", "4-bit off"),
    ("quant '4bit'", "4-bit"),
]
# config field names -> the labels of the widgets that set them
_FIELDS = {"batch_size": "Batch size", "steps": "Steps", "lr": "Learning rate", "eval_limit": "Samples scored per split",
           "seed": "Seed"}


def hide_paths(text: str) -> str:
    return _SERVER_PATH.sub(lambda m: "…/" + m.group(1), text)


def web_words(text: str) -> str:
    """A core message as the web page says it: no CLI flags, widget labels for config fields."""
    for cli, web in _WEB_WORDS:
        text = text.replace(cli, web)
    for name, label in _FIELDS.items():
        text = re.sub(rf"(^|\n\s*|: ){name}:", rf"\g<1>{label}:", text)
    return text


def user_message(exc: BaseException, *, doing: str = "") -> str:
    """One readable message for `exc` (no traceback, no server folders); unexpected errors
    are logged in full."""
    return hide_paths(_message(exc, doing=doing))


def _message(exc: BaseException, *, doing: str = "") -> str:
    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, _expected_errors()):
        return prefix + str(exc).strip()
    if is_out_of_memory(exc):
        return (prefix + "out of memory. Try the 4-bit toggle, a smaller batch size, fewer evaluation "
                "samples, or a smaller backbone (the bundled medln-tiny always fits).")
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return prefix + "the server's disk is full; delete old runs or free space and try again."
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return prefix + f"file problem: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})".rstrip(" ()")
    ref = uuid.uuid4().hex[:8]
    log.error("unexpected error [%s] while %s", ref, doing or "handling a request", exc_info=exc)
    return (prefix + f"unexpected error ({type(exc).__name__}); it was logged on the server as [{ref}]. "
            "The app keeps running: adjust the inputs and try again.")


def quiet(fallback):
    """Decorator for the timer's poll handlers: a failure is logged once per call and the
    page keeps its last state (`fallback()` values), instead of an error toast every second."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                log.error("poll failed", exc_info=e)
                return fallback()
        return inner
    return wrap


def scrub_paths(message: str, session_dir: Path) -> str:
    """`message` without the server's folders: a file of an upload named relative to the
    upload (d/data.jsonl:7), anything else of the session relative to it (runs/<id>), so
    neither an absolute server path nor a session id reaches the page."""
    uploads = re.escape(str(Path(session_dir) / "uploads")) + r"/[0-9a-f]+/"
    message = re.sub(uploads, "", message)
    return message.replace(f"{session_dir}/", "").replace(str(session_dir), "the session folder")


def private_errors(records, session_dir: Path):
    """Pass a job's records through; a failure becomes its one-line message, scrubbed."""
    try:
        yield from records
    except Exception as e:
        raise UserError(scrub_paths(user_message(e), session_dir)) from None
