"""Per-session background jobs (fine-tunes and scope comparisons) that the page polls.

Why not run training inside the Gradio event: progress that lives in a request dies with
the page (reload, closed laptop), and Gradio's `cancels=` cannot stop a function that is
already running (docs/design.md, "Gradio 6 traps"). So a click only *submits* a job; a worker
thread runs `train_run` / `compare`, copying each record into a `Job` kept in a
process-level registry keyed by session id; the page reads it with a `gr.Timer`. Stop sets
a `threading.Event` that the training loop checks before every micro-batch, so a job
stops within one step and still saves its adapter and scores it.

Jobs wait in one bounded FIFO and `workers` threads (default 1) run them: one job on the
device at a time, the same "one GPU slot" the Gradio events share (concurrency_id "gpu").
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError, user_message
from .gpu import ZEROGPU

log = logging.getLogger("medln.ui")

ACTIVE = ("queued", "loading", "training", "evaluating", "stopping")
FINISHED = ("done", "stopped", "failed", "cancelled")
KEEP_PER_SESSION = 20


@dataclass
class Job:
    """One job's record: everything the page needs to draw it, updated by the worker."""

    id: str
    session: str
    kind: str  # "finetune" | "compare"
    title: str
    out: Path
    steps: int  # optimizer steps (finetune) or steps x scopes (compare)
    run: Callable[["Job"], Iterator[dict]]  # yields records; honours job.stop
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    records: list[dict] = field(default_factory=list)  # step records (loss curve)
    start_info: dict | None = None  # the {"event": "start"} record
    result: dict | None = None  # the {"event": "done"} record, or compare's final rows
    rows: list[dict] = field(default_factory=list)  # compare: one row per scope so far
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    phase: str = "waiting for a free slot"
    version: int = 0  # bumps on every change: the page redraws only what changed
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def eta_s(self) -> float | None:
        """Seconds left for the training steps: median recent step time x steps left."""
        if self.state != "training" or not self.records:
            return None
        recent = [r["step_s"] for r in self.records[-10:] if "step_s" in r]
        return statistics.median(recent) * max(0, self.steps - self.step) if recent else None

    def snapshot(self) -> dict:
        """A JSON-safe copy (the /job API endpoint returns it)."""
        last = self.records[-1] if self.records else {}
        return {
            "job_id": self.id,
            "kind": self.kind,
            "title": self.title,
            "state": self.state,
            "phase": self.phase,
            "step": self.step,
            "steps": self.steps,
            "loss": last.get("loss"),
            "eta_s": None if self.eta_s() is None else round(self.eta_s(), 1),
            "elapsed_s": round((self.finished or time.time()) - self.started, 1) if self.started else 0.0,
            "run_id": self.out.name if self.kind == "finetune" else None,
            "error": self.error,
            "notes": list(self.notes),
            "start": self.start_info,
            "result": self.result,
            "rows": list(self.rows),
            "losses": [{"step": r["step"], "loss": r["loss"]} for r in self.records if "loss" in r],
        }


class JobManager:
    """The registry (session -> jobs) and the bounded queue its worker threads drain."""

    def __init__(self, *, max_pending: int = 4, workers: int = 1):
        self.max_pending = max_pending
        self._queue: queue.Queue[Job] = queue.Queue()
        self._jobs: dict[str, list[Job]] = {}
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"medln-job-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    # ---------------------------------------------------------------- page side

    def submit(self, session: str, kind: str, title: str, out: Path, steps: int,
               run: Callable[[Job], Iterator[dict]]) -> Job:
        with self._lock:
            if any(j.active for j in self._jobs.get(session, [])):
                raise UserError("a job of this session is still running: wait for it or press Stop first")
            waiting = sum(1 for jobs in self._jobs.values() for j in jobs if j.state == "queued")
            if waiting >= self.max_pending:
                raise UserError(f"the server is busy ({waiting} jobs are waiting); try again in a few minutes")
            job = Job(uuid.uuid4().hex[:12], session, kind, title, Path(out), steps, run)
            jobs = self._jobs.setdefault(session, [])
            jobs.append(job)
            # forget old finished jobs (their run folders stay on disk)
            finished = [j for j in jobs if not j.active]
            for old in finished[:-KEEP_PER_SESSION]:
                jobs.remove(old)
        self._queue.put(job)
        return job

    def latest(self, session: str) -> Job | None:
        with self._lock:
            jobs = self._jobs.get(session, [])
            return jobs[-1] if jobs else None

    def latest_of(self, session: str, kind: str) -> Job | None:
        with self._lock:
            return next((j for j in reversed(self._jobs.get(session, [])) if j.kind == kind), None)

    def get(self, session: str, job_id: str) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.get(session, []) if j.id == job_id), None)

    def stop(self, session: str, job_id: str | None = None) -> Job | None:
        """Ask a job of this session (the latest active one by default) to stop."""
        job = self.get(session, job_id) if job_id else next(
            (j for j in reversed(self._jobs.get(session, [])) if j.active), None)
        if job is None or not job.active:
            return job
        job.stop.set()
        with self._lock:
            if job.state == "queued":  # never started: nothing to save
                job.state, job.phase, job.finished = "cancelled", "cancelled before it started", time.time()
            else:
                job.state, job.phase = "stopping", "stopping after this step; the adapter is kept and scored"
            job.version += 1
        return job

    def position(self, job: Job) -> int:
        """1-based place in the waiting line (0 when not waiting)."""
        if job.state != "queued":
            return 0
        with self._lock:
            waiting = sorted((j for jobs in self._jobs.values() for j in jobs if j.state == "queued"),
                             key=lambda j: j.created)
        return next((i + 1 for i, j in enumerate(waiting) if j is job), 0)

    # ---------------------------------------------------------------- worker side

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job.state == "queued":
                    self._execute(job)
            except BaseException as e:  # a worker must survive anything a job does
                log.exception("job %s crashed the worker loop", job.id)
                job.state, job.error = "failed", user_message(e, doing="the job")
            finally:
                self._queue.task_done()

    def _execute(self, job: Job) -> None:
        job.state, job.phase, job.started = "loading", "loading the model and the data", time.time()
        job.version += 1
        try:
            records = job.run(job)
            for record in records:
                apply_record(job, record)
                if job.stop.is_set() and ZEROGPU:
                    # A ZeroGPU function runs in another process that cannot see our Event:
                    # closing the generator ends it there (without saving an adapter).
                    records.close()
                    job.phase = "stopped (on ZeroGPU a stopped job keeps no adapter)"
                    break
            if job.state not in FINISHED:
                job.state = "stopped" if job.stop.is_set() else "done"
                job.phase = "finished" if job.state == "done" else "stopped: the saved adapter was scored"
        except Exception as e:
            job.state, job.error = "failed", user_message(e, doing="training" if job.kind == "finetune" else "comparison")
            job.phase = "failed"
        finally:
            job.finished = time.time()
            job.version += 1


def apply_record(job: Job, record: dict) -> None:
    """Fold one record of train_run / compare into the job."""
    event = record.get("event")
    if event == "start":
        job.start_info = {k: v for k, v in record.items() if k != "event"}
        job.notes.extend(record.get("notes", []))
        job.state, job.phase = "training", "training"
    elif event == "stopped":
        job.state, job.phase = "evaluating", "stopped: saving the adapter and scoring base and tuned"
    elif event == "done":
        job.result = {k: v for k, v in record.items() if k != "event"}
        job.state = "stopped" if record.get("status") == "stopped" else "done"
        job.phase = "finished"
    elif event == "row":  # compare: one scope finished
        job.rows.append(record["row"])
    elif event == "phase":
        job.phase = record.get("phase", job.phase)
        if record.get("state"):
            job.state = record["state"]
    elif event == "step":
        job.records.append(record)
        job.step = record.get("global_step", record["step"])
        if job.state in ("loading", "training"):
            job.state = "training"
            if job.kind == "finetune" and job.step >= job.steps:
                job.state, job.phase = "evaluating", "saving the adapter and scoring base and tuned"
            else:
                job.phase = "training"
    job.version += 1
