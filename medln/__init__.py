"""MedLN: LayerNorm fine-tuning of medical vision-language models (Chen et al., ACM MM 2024).

The core library; it never imports gradio (medln.ui is the only package that does).
Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from pathlib import Path as _Path

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
