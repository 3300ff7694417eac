"""Diagnostics through `logging`, and the known harmless third-party warnings filtered at
their source, by message.

Results and the records a user asked for go to stdout (`print`); what a command has to say
besides (a file it wrote, how long a count took, a fallback it took) is a record of a
`medln.*` logger. The CLI shows those on stderr (`console`): INFO and up, WARNING and up with
--quiet, or the level MEDLN_LOG names; the app configures logging itself (medln.ui.app).

`silence_known_noise()` runs when medln is imported, before any of those libraries loads.
Each entry names the message, the module that emits it and why it is harmless: a filter by
category or by library alone would also hide the warnings that matter.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (category, start of the message (a regex), the emitting module (a regex), why it is harmless)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (UserWarning, r"Unsupported layer type '<class '[\w.]*(LayerNorm|RMSNorm)'>' encountered, proceed at your own risk",
     r"peft\.",
     "peft's LN tuning checks its targets against a list of layer types that leaves out the norms it tunes; "
     "tests/test_methods.py checks that exactly the norms train. Other layer types still warn."),
    (UserWarning, r"Position ids are not supported for parameter efficient tuning", r"peft\.",
     "scope prompt: peft drops the position ids generate passes, since its virtual tokens shift every position, and "
     "the model counts positions itself (the scope is refused for families whose image tokens that would misplace)"),
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", r"transformers\.",
     "peft (0.21) reads the old attribute name on every adapter it wraps; nothing for a MedLN user to change"),
)
# (logger, text the message holds, why it is harmless): records dropped from one logger only
KNOWN_LOG_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "No module named 'kernels'",
     "bitsandbytes (0.50) on a CPU with AVX512-BF16 tries the optional `kernels` package for a fused 4-bit "
     "kernel from the Hub on every import, and uses its own CPU kernel when the package is absent (the lock)"),
)
# The same bitsandbytes record with `kernels` installed (transformers >= 5.25 brings it) but the Hub
# kernel not loaded (offline, an untrusted publisher, a version clash): said once, in plain words,
# not dropped, since online that package would run native code downloaded from the Hub.
BNB_KERNEL = ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community")


class _Reword(logging.Filter):
    """bitsandbytes' kernels-community failure as one sentence that says what happened instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        if text.startswith(BNB_KERNEL[1]):
            # its first sentence: what failed (not the package's own advice, such as trust_remote_code)
            cause = text[len(BNB_KERNEL[1]):].lstrip(": ").splitlines()[0].split(". ")[0].rstrip(".")
            record.msg, record.args = (
                "bitsandbytes did not load the Hub's fused 4-bit CPU kernel (kernels-community/"
                f"quantization-bitsandbytes: {cause}) and uses its own. The tested lock (requirements.txt) "
                "does not install the `kernels` package that fetches it."), ()
        return True


class _DropKnown(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return self.text not in record.getMessage()
        except Exception:  # a record whose arguments do not format: let logging report it
            return True


def silence_known_noise() -> None:
    """Install the filters above; again is harmless (the warnings module keeps one copy of a
    filter, and a logger gets each of ours once)."""
    for category, message, module, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for logger, text, _why in KNOWN_LOG_RECORDS:
        target = logging.getLogger(logger)
        if not any(isinstance(f, _DropKnown) and f.text == text for f in target.filters):
            target.addFilter(_DropKnown(text))
    target = logging.getLogger(BNB_KERNEL[0])
    if not any(isinstance(f, _Reword) for f in target.filters):
        target.addFilter(_Reword())  # after the drop above: the lock's "no module" case never gets here


# ------------------------------------------------------------------ the CLI's log on stderr


class _Format(logging.Formatter):
    """An INFO record is its message; a warning or an error says which it is."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


class _Console(logging.Handler):
    """Writes to whatever sys.stderr is when a record arrives (tests redirect it), above any
    progress bar (tqdm.write), so a log line never breaks a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def console(*, quiet: bool = False) -> None:
    """Show the `medln` loggers' records on stderr, at MEDLN_LOG's level if set, else INFO
    (WARNING with --quiet). Called by each CLI run; one handler per process."""
    logger = logging.getLogger("medln")
    level = os.environ.get("MEDLN_LOG", "").strip().upper() or ("WARNING" if quiet else "INFO")
    logger.setLevel(level if isinstance(logging.getLevelName(level), int) else "INFO")
    if not any(isinstance(h, _Console) for h in logger.handlers):
        handler = _Console()
        handler.setFormatter(_Format("%(message)s"))
        logger.addHandler(handler)
