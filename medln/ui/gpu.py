"""ZeroGPU support without depending on it: `spaces.GPU` when the `spaces` package imports
(a Hugging Face ZeroGPU Space), a no-op decorator everywhere else.

On ZeroGPU a decorated function runs with a GPU attached for at most `duration` seconds (in
a separate process), so only plain, picklable arguments cross into it: configs as dicts,
paths as strings, never a model, a lock or a threading.Event. ZeroGPU caps a call's
duration (a few minutes): a fine-tune or comparison longer than that is cut off there, so
on ZeroGPU keep the budgets short, or use dedicated GPU hardware (README front matter).
`spaces.GPU` itself has no effect outside ZeroGPU.
"""

from __future__ import annotations

import os
from typing import Callable

try:  # pragma: no cover - only on a Space
    import spaces  # type: ignore

    _GPU = spaces.GPU
    try:
        import spaces.config

        ZEROGPU = bool(spaces.config.Config.zero_gpu)
    except Exception:
        ZEROGPU = "SPACES_ZERO_GPU" in os.environ
except Exception:  # no `spaces` package, or one that fails to import: run as is
    spaces = None
    ZEROGPU = False
    _GPU = None


def on_gpu(duration: int = 60) -> Callable:
    """Decorator: `spaces.GPU(duration=...)` when available, identity otherwise."""

    def wrap(fn: Callable) -> Callable:
        if _GPU is None:
            return fn
        try:
            return _GPU(duration=duration)(fn)
        except Exception:  # an old `spaces` without duration=, or outside a Space
            return fn

    return wrap
