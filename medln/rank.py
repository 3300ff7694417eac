"""Which process of an `accelerate launch` group this is, and printing on the main one only.

Under `accelerate launch --num_processes N` (torchrun) every process runs the same command:
each trains its shard, but only the main process may write the run folder, a sweep's files
or print, or the console shows every line N times and the files race. The CLI commands
(train, eval, compare) ask `is_main_process()` and print their progress through `say()`.

The answer comes from accelerate's state once an Accelerator has set it up, else from the
launcher's environment (RANK, set by torchrun; the MPI ranks accelerate also reads), so it
can be asked before anything distributed starts (compare decides which files it writes
before its first run) without initialising a process group here.
"""

from __future__ import annotations

import os
import sys

# The launchers' rank variables, in the order accelerate's PartialState reads them.
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
WORLD_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return default


def _state():
    """accelerate's PartialState if some Accelerator already initialised it, else None."""
    try:
        from accelerate.state import PartialState
    except ImportError:
        return None
    return PartialState() if PartialState._shared_state else None


def process_index() -> int:
    state = _state()
    return state.process_index if state is not None else _env_int(RANK_VARIABLES, 0)


def num_processes() -> int:
    state = _state()
    return state.num_processes if state is not None else _env_int(WORLD_VARIABLES, 1)


def is_main_process() -> bool:
    return process_index() == 0


def wait_for_everyone() -> None:
    """A barrier across the group (no-op for one process): lets the other processes read what
    the main one has just written (a finished cell's eval.json)."""
    state = _state()
    if state is not None and state.num_processes > 1:
        state.wait_for_everyone()


def say(*parts, file=None, end: str = "\n") -> None:
    """Print on the main process only; flushed, so a log shows progress as it happens. The one
    place a command's progress line goes through (a progress bar can replace it here)."""
    if is_main_process():
        print(*parts, file=file or sys.stdout, end=end, flush=True)
