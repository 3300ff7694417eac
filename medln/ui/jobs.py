"""Per-session background jobs (fine-tunes and scope comparisons) that the page polls.

Why not run training inside the Gradio event: progress that lives in a request dies with
the page (reload, closed laptop), and Gradio's `cancels=` cannot stop a function that is
already running (docs/design.md, "Gradio 6 traps"). So a click only *submits* a job; a worker
thread runs `train_run` / `compare`, copying each record into a `Job` kept in a
process-level registry keyed by session id; the page reads it with a `gr.Timer`. Stop sets
a `threading.Event` that the training loop checks before every micro-batch, so a job
stops within one step and still saves its adapter and scores it.

Jobs wait in one bounded FIFO and `workers` threads (default 1) run them: ONE worker for the
whole server, shared by every browser session and API client, so one job trains at a time
and the others wait their turn (the page shows the place in the line and the estimated
wait). The job worker is separate from the generation slot the Ask events share
(concurrency_id "gpu").

On ZeroGPU (`inline=True`) there are no worker threads: the request handler that submitted
the job runs it itself (`run_here`), because `spaces.GPU` must be called from the Gradio
request to charge the visitor's quota (medln.ui.gpu). The job record, the polling page, the
waiting line (a semaphore of `workers` slots) and Stop work the same; Stop reaches the GPU
worker process through the flag's file.
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

from medln.machine import free_memory

from .errors import UserError, user_message
from .gpu import StopFlag

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
    config: dict | None = None  # the TrainConfig (as a dict) the job runs: a reloaded page refills its form
    estimate: object = None  # medln.ui.eta.Estimate made before it started (None: no recorded speed)
    first_step_at: float | None = None
    last_step_at: float | None = None  # when the last training step ended: scoring starts there
    # scoring as it goes, from train_run's "score" records: answers generated so far (cached
    # base answers excluded), answers left in the run, when the last batch came
    scored: int = 0
    score_left: int | None = None
    last_score_at: float | None = None
    split_done: dict = field(default_factory=dict)  # (which, split) -> answers done
    version: int = 0  # bumps on every change: the page redraws only what changed
    stop: StopFlag | None = None  # set by Stop; checked by the training loop before every micro-batch

    def __post_init__(self):
        if self.stop is None:  # beside the output folder, never inside it: runs stay clean
            self.stop = StopFlag(self.out.parent / f".{self.out.name}.stop")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def eta_s(self) -> float | None:
        """Seconds left for the whole job: the training steps left (median recent step time x
        steps left) plus scoring (estimated from recorded speed; counted down once it starts)."""
        est = self.estimate
        if self.state == "queued" and est is not None:
            return est.total_s
        if self.state in ("loading",) and est is not None:
            return est.train_s + (est.score_s or 0.0) + max(0.0, est.load_s - (time.time() - (self.started or 0)))
        if self.state not in ("training", "evaluating", "stopping"):
            return None
        score = est.score_s if est is not None else None
        if self.kind == "compare":  # scoring happens after every scope: spread it over the steps
            score = score * max(0, self.steps - self.step) / max(1, self.steps) if score else score
        if self.state == "evaluating" and self.kind == "finetune":
            live = self.scoring_left_s()
            if live is not None:
                return live
            if score is None or self.last_step_at is None:
                return None
            return max(0.0, score - (time.time() - self.last_step_at))
        recent = [r["step_s"] for r in self.records[-10:] if "step_s" in r]
        left = max(0, self.steps - self.step)
        if recent:
            return statistics.median(recent) * left + (score or 0.0)
        if est is not None:  # no step measured yet: the estimate made before the start
            return est.train_s * left / max(1, self.steps) + (score or 0.0)
        return None

    def scoring_left_s(self) -> float | None:
        """Scoring's time left at this job's own rate: seconds per answer generated since
        training ended (saving the adapter included), times the answers left."""
        if self.score_left is None or not self.scored or self.last_step_at is None or self.last_score_at is None:
            return None
        per_answer = (self.last_score_at - self.last_step_at) / self.scored
        return max(0.0, per_answer * self.score_left - (time.time() - self.last_score_at))

    def eta_covers_scoring(self) -> bool:
        return self.scoring_left_s() is not None or \
            (self.estimate is not None and getattr(self.estimate, "score_s", None) is not None)

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
            "eta_covers_scoring": self.eta_covers_scoring(),
            "estimate_s": None if self.estimate is None else round(self.estimate.total_s, 1),
            "config": self.config,
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

    def __init__(self, *, max_pending: int = 4, workers: int = 1, speed=None, inline: bool = False):
        self.max_pending = max_pending
        self.speed = speed  # medln.ui.eta.SpeedBook: finished jobs record their speed there
        self.inline = inline  # ZeroGPU: the submitting request runs the job (run_here)
        self._queue: queue.Queue[Job] = queue.Queue()
        self._jobs: dict[str, list[Job]] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(workers)
        self._workers = [] if inline else [threading.Thread(target=self._work, name=f"medln-job-{i}", daemon=True)
                                           for i in range(workers)]
        for t in self._workers:
            t.start()

    # ---------------------------------------------------------------- page side

    def submit(self, session: str, kind: str, title: str, out: Path, steps: int,
               run: Callable[[Job], Iterator[dict]], *, config: dict | None = None, estimate=None) -> Job:
        with self._lock:
            if any(j.active for j in self._jobs.get(session, [])):
                raise UserError("a job of this session is still running: wait for it or press Stop first")
            waiting = sum(1 for jobs in self._jobs.values() for j in jobs if j.state == "queued")
            if waiting >= self.max_pending:
                raise UserError(f"the server is busy ({waiting} jobs are waiting); try again in a few minutes")
            job = Job(uuid.uuid4().hex[:12], session, kind, title, Path(out), steps, run, config=config,
                      estimate=estimate)
            jobs = self._jobs.setdefault(session, [])
            jobs.append(job)
            # forget old finished jobs (their run folders stay on disk)
            finished = [j for j in jobs if not j.active]
            for old in finished[:-KEEP_PER_SESSION]:
                jobs.remove(old)
        if not self.inline:
            self._queue.put(job)
        return job

    def run_here(self, job: Job) -> Job:
        """Run a submitted job in the calling thread (inline mode: the Gradio request), after
        waiting for a free slot like the worker threads would; a job stopped while it waited is
        not run. Returns when the job has finished."""
        with self._slots:
            if job.state == "queued":
                self._execute(job)
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
        if job is None:
            return job
        # Under the lock the worker takes to apply a record: a job that finished meanwhile is not
        # marked "stopping" again (it would stay so for good).
        with self._lock:
            if not job.active:
                return job
            if job.state == "queued":  # never started: nothing to save
                job.state, job.phase, job.finished = "cancelled", "cancelled before it started", time.time()
                job.stop.set()
                job.stop.clear_file()
            else:
                job.state, job.phase = "stopping", "stopping after this step; the adapter is kept and scored"
                job.stop.set()
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

    def wait_s(self, job: Job) -> float | None:
        """Estimated seconds before a waiting job starts: what the running job has left plus
        the estimates of the jobs ahead of it (None when one of them has no estimate)."""
        if job.state != "queued":
            return None
        with self._lock:
            every = [j for jobs in self._jobs.values() for j in jobs]
        ahead = [j for j in every if j.active and j.state != "queued"]
        ahead += [j for j in every if j.state == "queued" and j.created < job.created]
        total = 0.0
        for j in ahead:
            left = j.eta_s()
            if left is None:
                return None
            total += left
        return total

    def queue_info(self, job: Job) -> tuple[int, float | None]:
        return self.position(job), self.wait_s(job)

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
        with self._lock:
            if job.state != "queued":  # cancelled while it waited
                return
            job.state, job.phase, job.started = "loading", "loading the model and the data", time.time()
            job.version += 1
        try:
            for record in job.run(job):
                with self._lock:
                    apply_record(job, record)
            with self._lock:
                if job.state not in FINISHED:
                    job.state = "stopped" if job.stop.is_set() else "done"
                    job.phase = "finished" if job.state == "done" else "stopped: the saved adapter was scored"
        except Exception as e:
            job.state, job.error = "failed", user_message(e, doing="training" if job.kind == "finetune" else "comparison")
            job.phase = "failed"
        finally:
            job.stop.clear_file()
            job.finished = time.time()
            job.version += 1
            if self.speed is not None and job.state in ("done", "stopped"):
                try:
                    from .eta import record_job

                    record_job(self.speed, job)
                except Exception:  # an estimate is never worth failing a job for
                    log.exception("could not record the speed of job %s", job.id)
        if job.state == "failed":
            # The failed generator has let go of its model, optimizer state and activations;
            # collect them (and hand cached CUDA blocks back) before the next job starts, so an
            # out-of-memory job does not make the next one fail too.
            free_memory()


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
    elif event == "score":  # one batch of answers (medln.train.EVENTS)
        now = time.time()
        if job.kind == "finetune":
            job.state = "evaluating" if job.state in ("loading", "training") else job.state
            job.phase = f"scoring {record['which']} {record['split']}: {record['done']} of {record['total']} answers"
            part = (record["which"], record["split"])
            if not record.get("cached"):  # answers read from the cache cost a file read, not generation
                job.scored += record["done"] - job.split_done.get(part, 0)
            job.split_done[part] = record["done"]
            job.score_left, job.last_score_at = record["left"], now
    elif event == "row":  # compare: one scope finished
        job.rows.append(record["row"])
    elif event == "phase":
        job.phase = record.get("phase", job.phase)
        if record.get("state"):
            job.state = record["state"]
    elif event == "step":
        job.records.append(record)
        job.last_step_at = time.time()
        job.first_step_at = job.first_step_at or job.last_step_at
        job.step = record.get("global_step", record["step"])
        if job.state in ("loading", "training"):
            job.state = "training"
            if job.kind == "finetune":  # a comparison's phase names its scope ("scope 2/3 · lora: training"): kept
                job.phase = "training"
                if job.step >= job.steps:
                    job.state, job.phase = "evaluating", "saving the adapter and scoring base and tuned"
    job.version += 1
