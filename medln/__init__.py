"""MedLN: LayerNorm fine-tuning of medical vision-language models (Chen et al., ACM MM 2024).

The core library; it never imports gradio (medln.ui is the only package that does).
Heavy imports (torch, transformers) happen inside the functions that need them.
"""

import os as _os
from pathlib import Path as _Path

# OpenMP threads that wait by spinning (libgomp's default) turn a shared CPU into a trap: when
# another process holds a core, every parallel region of torch waits for a descheduled
# thread. Measured on the project's 2-core machine at load 5-7, 2 threads: a medln-tiny
# training step 6.8-8.4 s spinning vs 0.7-1.3 s passive (1 thread: 0.9-1.2 s); 48 answers
# 14-23 s vs 1.9-2.4 s. libgomp reads this when torch loads it, so it is set here, before
# any medln code imports torch; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .logs import silence_known_noise as _silence_known_noise

__version__ = "0.1.0"
_silence_known_noise()  # before peft, transformers or bitsandbytes loads (medln.logs says which and why)


def _assets() -> _Path:
    """The bundled model and sample data: package data of an installed medln
    (pyproject maps assets/ to medln/assets), or the repository's assets/ folder."""
    here = _Path(__file__).resolve().parent
    installed = here / "assets"
    return installed if installed.is_dir() else here.parent / "assets"


ASSETS = _assets()

DISCLAIMER = "Research and teaching demo. Not a medical device; not for clinical use."
