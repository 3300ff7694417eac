"""Who runs a sweep's cells: here, one after another (`--executor local`, the default and the
app's), or as Ray tasks on a cluster (`--executor ray`).

Both yield the same records for a list of cells: {"event": "cell_start", "cell"} when a cell
starts (local) or is submitted (ray), the local run's own records in between, and
{"event": "cell_done", "cell", "row", "how"} when it ends; `how` is "ran", "reused" (finished
before: read back from its folder), "missing" (collect: no finished run) or "not run"
(stopped first). `execute()` puts the finished cells first, so neither executor reruns them.

Ray: each cell is one task asking for one GPU where the cluster has GPUs, else `ray_cpus`
CPUs (its torch threads). The training samples go to the object store once. Each task scores
its own base model (tasks run at once, so the local executor's sharing of base metrics between
cells cannot happen before the first finishes); rows come back as cells finish. A stop (the
CLI's first Ctrl-C) cancels every cell not yet finished; the finished ones are kept. Ray is
the optional extra `medln[ray]`; the cluster's nodes need medln, the backbone and the data
at the same paths (a shared file system), since each task loads them itself.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from ..backbones import BackboneError
from ..config import ConfigError, TrainConfig
from ..data import DataError
from ..rank import is_main_process, num_processes, wait_for_everyone
from .cells import Cell, Lane, base_key, cell_config, empty_row, reason, run_cell
from .folder import finished, missing_row, read_cell

Watch = Callable[[Cell, dict, TrainConfig], None]
RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'medln[ray]'"


def _stopped(lane: Lane) -> bool:
    return lane.stop is not None and lane.stop.is_set()


def not_run(cell: Cell, why: str) -> dict:
    return {"event": "cell_done", "cell": cell, "row": empty_row(cell.scope, why, cell.seed), "how": "not run"}


class Local:
    """The cells one after another in this process (under `accelerate launch`, in every process
    of the group, each cell a data-parallel run)."""

    name = "local"

    def run(self, base: TrainConfig, cells: list[Cell], lane: Lane, watch: Watch | None = None) -> Iterator[dict]:
        for cell in cells:
            if _stopped(lane):
                yield not_run(cell, "stopped before it ran")
                continue
            yield {"event": "cell_start", "cell": cell}
            seen: dict = {}

            def see(record, cfg, cell=cell, seen=seen):
                if record.get("event") == "start":
                    seen["backbone"] = record.get("backbone")
                if watch:
                    watch(cell, record, cfg)

            row = yield from run_cell(base, cell, lane, watch=see)
            if num_processes() > 1:
                # Only the main process gets the done record (it alone scores and writes
                # eval.json); the others read its row back, so every process decides the next
                # cells (the tuning's next rate) from the same numbers.
                wait_for_everyone()
                if not is_main_process() and finished(cell.out):
                    fold = read_cell(cell, lane.ood_key)
                    row, seen["backbone"] = fold.row, fold.backbone
                    lane.bases.setdefault(_key(base, cell), fold.base)
            yield {"event": "cell_done", "cell": cell, "row": row, "how": "ran", "backbone": seen.get("backbone")}

    def close(self) -> None:
        pass


def _key(base: TrainConfig, cell: Cell):
    return base_key(cell_config(base, cell))


def _ray_cell(base: TrainConfig, cell: Cell, train, extra_eval, bases: dict, ood_key, flags: dict, cwd: str,
              threads: int | None):
    """One cell inside a Ray worker: (row, base metrics by base key, backbone name)."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative data and model paths, as the command was given
    if threads:
        import torch

        torch.set_num_threads(threads)
    from ..train import train_run

    lane = Lane(train_run, None, train, extra_eval, dict(bases), ood_key, **flags)
    seen: dict = {}
    gen = run_cell(base, cell, lane, watch=lambda r, cfg: seen.update(backbone=r.get("backbone"))
                   if r.get("event") == "start" else None)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value, lane.bases, seen.get("backbone")


class Ray:
    """Each cell a Ray task; `address` joins a running cluster ("" starts a local Ray that
    stops with the command)."""

    name = "ray"

    def __init__(self, address: str = "", cpus: int = 1):
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_MISSING) from None
        self.ray, self.address, self.cpus, self.started = ray, address, cpus, False

    def _start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False)
            self.started = True

    def run(self, base: TrainConfig, cells: list[Cell], lane: Lane, watch: Watch | None = None) -> Iterator[dict]:
        if not cells:
            return
        if _stopped(lane):  # stopped in an earlier phase: nothing is submitted
            for cell in cells:
                yield not_run(cell, "stopped before it ran")
            return
        ray = self.ray
        self._start()
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(_ray_cell).options(num_gpus=1, num_cpus=1) if gpus else \
            ray.remote(_ray_cell).options(num_cpus=self.cpus)
        train, extra = ray.put(lane.train), ray.put(lane.extra_eval)
        flags = {"overwrite": lane.overwrite, "report_to": lane.report_to, "group": lane.group}
        pending: dict = {}
        try:
            for cell in cells:
                ref = task.remote(base, cell, train, extra, lane.bases, lane.ood_key, flags, os.getcwd(),
                                  None if gpus else self.cpus)
                pending[ref] = cell
                yield {"event": "cell_start", "cell": cell}
            while pending:
                if _stopped(lane):
                    # Keep what finished by now (its eval.json is written), cancel the rest.
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                    for ref in ready:
                        yield self._done(ref, pending.pop(ref), lane)
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    for cell in pending.values():
                        # A task cancelled (or hit by the terminal's SIGINT) after its run wrote
                        # eval.json still finished its cell: read it back, as a resume would.
                        yield self._read_back(cell, lane) or not_run(cell, "cancelled (stopped) before it finished")
                    pending.clear()
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    yield self._done(ref, pending.pop(ref), lane)
        finally:  # an error, a second Ctrl-C, or the consumer gone: nothing keeps running unseen
            for ref in pending:
                ray.cancel(ref, force=True)

    def _done(self, ref, cell: Cell, lane: Lane) -> dict:
        row, bases, backbone = self._result(ref, cell)
        if row.get("status") == "skipped":  # the task failed, but perhaps after its run finished
            if back := self._read_back(cell, lane):
                return back
            if _stopped(lane):  # killed by the stop (a terminal's Ctrl-C reaches the workers too)
                return not_run(cell, "cancelled (stopped) before it finished")
            return {"event": "cell_done", "cell": cell, "row": row, "how": "ran"}
        for key, metrics in bases.items():
            lane.bases.setdefault(key, metrics)
        return {"event": "cell_done", "cell": cell, "row": row, "how": "ran", "backbone": backbone}

    @staticmethod
    def _read_back(cell: Cell, lane: Lane) -> dict | None:
        if not finished(cell.out):
            return None
        fold = read_cell(cell, lane.ood_key)
        return {"event": "cell_done", "cell": cell, "row": fold.row, "how": "ran", "backbone": fold.backbone}

    def _result(self, ref, cell: Cell):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (BackboneError, DataError)):
                raise cause from None  # the user's to fix, for every cell alike (as run locally)
            return {**empty_row(cell.scope, reason(cause) if isinstance(cause, Exception) else str(e).splitlines()[0],
                                cell.seed)}, {}, None
        except self.ray.exceptions.RayError as e:  # the worker or its node died (out of memory, preempted)
            return empty_row(cell.scope, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}", cell.seed), {}, None

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


EXECUTORS: dict[str, type] = {"local": Local, "ray": Ray}


def open_executor(name: str, *, address: str = "", cpus: int = 1):
    if name == "ray":
        return Ray(address, cpus)
    return EXECUTORS[name]()


def execute(executor, base: TrainConfig, cells: list[Cell], lane: Lane, watch: Watch | None = None, *,
            reuse: bool = False, collect: bool = False) -> Iterator[dict]:
    """The cells' records: with `reuse`, the finished ones read back from their folders (their
    run folders untouched); with `collect`, the others as missing rows; otherwise the executor
    runs them (from scratch, over what an interrupted try left)."""
    todo = []
    for cell in cells:
        if (reuse or collect) and finished(cell.out):
            fold = read_cell(cell, lane.ood_key)
            if fold.base is not None:
                lane.bases.setdefault(_key(base, cell), fold.base)
            yield {"event": "cell_done", "cell": cell, "row": fold.row, "how": "reused", "backbone": fold.backbone}
        elif collect:
            yield {"event": "cell_done", "cell": cell, "row": missing_row(cell), "how": "missing"}
        else:
            todo.append(cell)
    yield from executor.run(base, todo, lane, watch)
