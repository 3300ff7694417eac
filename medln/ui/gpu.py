"""ZeroGPU support without depending on it: `spaces.GPU` when the `spaces` package says this
is a ZeroGPU Space, the plain function everywhere else.

How `spaces.GPU` behaves (spaces 0.51, zero/wrappers.py and zero/client.py), and what follows:

* The decorated call asks the ZeroGPU scheduler for a GPU, passing the *Gradio request* it
  finds in gradio's request context variable (LocalContext.request): its `x-ip-token` header
  decides whose quota pays. Called from any other thread (our job worker) there is no request,
  and every job draws on the Space's anonymous quota. So on ZeroGPU the job runs in the
  request handler's thread (JobManager(inline=True)), and the GPU function is called there.
* The function runs in a forked worker process that holds the GPU; arguments and every
  yielded value cross by pickle. Only plain data goes in (configs as dicts, paths as str) and
  out (records). A threading.Event cannot cross: the stop flag is also a file (StopFlag).
* Generator functions are supported: each yield comes back as it happens (progress keeps
  flowing into the job record); closing the generator stops the worker at its next yield.
* `duration` (seconds, or a callable of the same arguments) is what the call reserves and is
  charged against the visitor's quota; past it the task may be aborted. A comparison
  therefore makes one GPU call per scope, each sized for one fine-tune, rather than one call
  for the whole sweep.
* Models loaded inside the call live in that worker process: the model cache of the main
  process is not filled by them.
* `spaces` must be imported before anything initialises CUDA (app.py imports it first), and
  the GPU functions must be decorated before launch(): at launch spaces reports the decorated
  functions to ZeroGPU. on_gpu therefore decorates at import time, and looks spaces up again
  at call time (the same wrapper: spaces caches it per function).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from pathlib import Path
from typing import Callable


def _spaces_gpu() -> Callable | None:
    """spaces.GPU on a ZeroGPU Space, else None. Looked up at call time, so tests can install
    a stand-in `spaces` module."""
    try:
        import spaces  # type: ignore
    except Exception:  # no `spaces` package, or one that fails to import: run as is
        return None
    if not zerogpu():
        return None
    return getattr(spaces, "GPU", None)


def zerogpu() -> bool:
    """True on a ZeroGPU Space (the `spaces` package's own switch, SPACES_ZERO_GPU)."""
    try:
        import spaces.config  # type: ignore

        return bool(spaces.config.Config.zero_gpu)
    except Exception:
        return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def on_gpu(duration: int | Callable[..., int] = 60) -> Callable:
    """Decorator: run the function through `spaces.GPU(duration=...)` on ZeroGPU, as is elsewhere.
    `duration` may be a callable of the function's arguments (spaces' dynamic duration).
    A generator function stays a generator function (Gradio streams only those)."""

    def wrap(fn: Callable) -> Callable:
        def target() -> Callable:
            gpu = _spaces_gpu()
            return fn if gpu is None else gpu(duration=duration)(fn)  # spaces caches the wrapper per fn

        target()  # on ZeroGPU: register with spaces now, before launch()
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                yield from target()(*args, **kwargs)

            return gen

        @functools.wraps(fn)
        def call(*args, **kwargs):
            return target()(*args, **kwargs)

        return call

    return wrap


def max_gpu_seconds() -> int:
    """Upper bound of one ZeroGPU call (MEDLN_ZEROGPU_MAX_S, default 300): a larger request is
    refused by the scheduler ("illegal duration") or eats the visitor's daily quota."""
    try:
        return max(10, int(os.environ.get("MEDLN_ZEROGPU_MAX_S", 300)))
    except ValueError:
        return 300


def fine_tune_seconds(steps: int, eval_samples: int) -> int:
    """An estimate of one fine-tune's GPU time: loading, the steps, then base and tuned
    generation over the evaluation samples; clipped to max_gpu_seconds(). Deliberately
    generous per step (1 s: a 4-bit step of a 2-7B model on a ZeroGPU slice is well under it)."""
    return int(min(max_gpu_seconds(), 45 + 1.0 * steps + 0.25 * 2 * eval_samples))


class StopFlag:
    """A stop flag a process boundary cannot lose: set() sets an Event *and* creates a file;
    is_set() checks either. Pickled (into a ZeroGPU worker), only the file path travels."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:  # the in-process event still stops a local job
            pass

    def is_set(self) -> bool:
        return self._event.is_set() or self.path.exists()

    def clear_file(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._event = threading.Event()
