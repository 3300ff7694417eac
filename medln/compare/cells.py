"""A sweep is a list of cells: one scope trained at one seed and one rate, scored on one split.
Choosing rates runs validation cells, the comparison runs test cells; both go through
`run_cell`, the one helper that runs a cell's config and folds its records into a row.

A row (results.json "rows", results.csv) holds what the run cost and scored: counts, time,
memory, losses, base and tuned metrics on the cell's split and the out-of-domain set,
retention. A cell that cannot run (out of memory, any runtime failure) is a row with
`skipped`: reason, and the sweep goes on; a bad backbone or bad data is the user's to fix
for every cell alike, so it ends the sweep.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

from ..backbones import BackboneError
from ..config import ConfigError, TrainConfig
from ..data import DataError
from ..machine import free_memory
from ..methods import ScopeError, get_scope
from ..metrics import headline_metric


@dataclass(frozen=True)
class Cell:
    scope: str
    seed: int
    lr: float | None  # None: the scope's default for the backbone
    split: str  # the split it is scored on ("validation" while choosing rates)
    out: Path  # its run folder
    tuning: bool = False  # a rate-choosing cell: scored on validation items only, never on test

    @property
    def name(self) -> str:
        """Its folder under the sweep's: runs/<scope>/seed<k> or tune/<scope>/lr<rate>."""
        return "/".join(self.out.parts[-3:])

    def tag(self, record: dict) -> dict:
        """A run's record as the sweep yields it: tagged with the cell; a rate-choosing run's
        records become "tune_run" (run_event: what it was), a test run's start/done become
        run_start/run_done ("done" ends the whole sweep)."""
        event = record.get("event")
        if self.tuning:
            return {**record, "event": "tune_run", "run_event": event, "scope": self.scope, "lr": self.lr}
        record = {**record, "scope": self.scope, "seed": self.seed}
        if event in ("start", "done"):
            record["event"] = f"run_{event}"
        return record


@dataclass
class Lane:
    """What the cells of one phase share: how a run is started (train_run, or the app's GPU
    call), the stop flag, the training samples, extra evaluation sets, the base metrics
    already known (base_key -> {split: metrics}, reused rather than scored again), and the
    evaluation-set name of the out-of-domain data."""

    runner: Callable
    stop: object = None
    train: list | None = None
    extra_eval: dict | None = None
    bases: dict = field(default_factory=dict)
    ood_key: str | None = None
    overwrite: bool = False  # rerun an unfinished cell's folder from scratch (resume, --cell)
    report_to: str = "none"  # a tracker for every run (medln.trackers), named <group>/<cell>
    group: str | None = None

    def run_kwargs(self, cell: Cell) -> dict:
        """train_run's optional arguments for this cell, only those set (the app's runner takes none)."""
        kw: dict = {"overwrite": True} if self.overwrite else {}
        if self.report_to != "none":
            kw.update(report_to=self.report_to, run_name=f"{self.group}/{cell.name}" if self.group else cell.name,
                      group=self.group)
        return kw


def cell_config(base: TrainConfig, cell: Cell) -> TrainConfig:
    """The cell's run: the sweep's shared budget with the cell's scope, seed and rate. A
    rate-choosing cell scores only its validation items (given as an extra evaluation set)."""
    blank = {"eval_split": "", "ood_split": ""} if cell.tuning else {}
    return dataclasses.replace(base, scope=cell.scope, seed=cell.seed, lr=cell.lr, **blank).validate()


def base_key(cfg: TrainConfig) -> tuple[str, str]:
    """Scopes with equal keys load identical base weights, so share base metrics. Under 4-bit
    the attn/ffn scopes keep their projections unquantized: their base model differs."""
    scope = get_scope(cfg.scope)
    return (cfg.quant, scope.name if cfg.quant == "4bit" and scope.trains_whole_linears else "")


def run_cell(base: TrainConfig, cell: Cell, lane: Lane, *,
             watch: Callable[[dict, TrainConfig], None] | None = None) -> Generator[dict, None, dict]:
    """Run one cell: yields its run's records (tagged, Cell.tag) and returns its row.
    `watch(record, cfg)` sees every record first (progress, the backbone's name)."""
    fold, t0 = Fold(cell, lane.ood_key), time.perf_counter()
    run = None
    try:
        cfg = cell_config(base, cell)
        key = base_key(cfg)
        fold.row["lr"] = cfg.effective_lr
        run = lane.runner(cfg, cell.out, stop=lane.stop, base_metrics=lane.bases.get(key), extra_eval=lane.extra_eval,
                          train_samples=lane.train, **lane.run_kwargs(cell))
        for record in run:
            if watch:
                watch(record, cfg)
            fold.add(record)
            if record.get("event") == "done":
                lane.bases.setdefault(key, record["base"])
            yield cell.tag(record)
    except (ValueError, RuntimeError, MemoryError) as e:  # ConfigError, ScopeError, torch.OutOfMemoryError, ...
        if isinstance(e, (BackboneError, DataError)):
            raise  # the same for every cell: the user's to fix, not a row
        fold.row.update(status="skipped", skipped=reason(e), steps_done=len(fold.steps))
    finally:
        if run is not None:
            run.close()
        free_memory()
    return fold.result(round(time.perf_counter() - t0, 3))


class Fold:
    """A cell's records folded into its row, as they come (run_cell) or read back from its run
    folder (medln.compare.folder: config.json's start record, metrics.jsonl, eval.json)."""

    def __init__(self, cell: Cell, ood_key: str | None):
        self.cell, self.ood_key, self.steps = cell, ood_key, []
        self.row = {**empty_row(cell.scope, seed=cell.seed), "status": "running"}
        self.base: dict | None = None  # the done record's base metrics, {split: metrics}
        self.backbone: str | None = None  # the start record's (resolved) backbone name

    def add(self, record: dict) -> None:
        event, row = record.get("event"), self.row
        if event == "start":
            row.update({k: record[k] for k in ("trainable", "total", "percent", "dead", "notes")})
            row["lr"] = record.get("lr", row["lr"])
            self.backbone = record.get("backbone")
        elif event == "stopped":
            row["status"] = "stopped"
        elif event == "done":
            row.update(finish_row(record, self.cell.split, self.ood_key))
            self.base = record["base"]
        elif event == "step":
            self.steps.append(record)
            row["peak_mem_gb"] = max(r["peak_mem_gb"] for r in self.steps)  # fit() starts a new peak window

    def result(self, wall_s: float | None) -> dict:
        row, steps = self.row, self.steps
        if row["status"] == "running":  # no done record: a non-main process under `accelerate launch`
            row["status"] = "incomplete"
        row.update(step_s=steady([r["step_s"] for r in steps]), samples_per_s=steady([r["samples_per_s"] for r in steps]),
                   final_loss=steps[-1]["loss"] if steps else None, losses=[r["loss"] for r in steps], wall_s=wall_s)
        return row


def cell_score(row: dict) -> float | None:
    """A finished cell's score on its split's headline metric (None: it failed or scored nothing)."""
    metric = headline_metric(row.get("tuned"))
    return row["tuned"].get(metric) if metric and not row.get("skipped") else None


# ----------------------------------------------------------------------- rows


def empty_row(scope: str, reason: str | None = None, seed: int | None = None) -> dict:
    return {
        "scope": scope, "seed": seed, "status": "skipped" if reason else None, "skipped": reason, "lr": None,
        "trainable": None, "total": None, "percent": None, "dead": None, "adapter_bytes": None,
        "steps_done": 0, "step_s": None, "samples_per_s": None, "peak_mem_gb": None, "train_s": None,
        "wall_s": None, "final_loss": None, "metric": None, "base": None, "tuned": None,
        "ood_base": None, "ood_tuned": None, "retention": None, "retention_pts": None,
        "blind": None, "ceiling": None, "ood_blind": None, "ood_ceiling": None, "references": None,
        "run": None, "notes": [], "losses": [],
    }


def finish_row(done: dict, eval_split: str, ood_key: str | None) -> dict:
    """The row fields that come from train_run's done record."""
    base, tuned = done["base"], done["tuned"]
    ood_base = base.get(ood_key) if ood_key else None
    ood_tuned = tuned.get(ood_key) if ood_key else None
    metric = headline_metric(ood_base) or headline_metric(base.get(eval_split))
    ratio, pts = retention(ood_base, ood_tuned, headline_metric(ood_base))
    return {
        **{k: done.get(k) for k in ("status", "steps_done", "train_s", "trainable", "total", "percent", "adapter_bytes",
                                    "run")}, "metric": metric,
        "base": base.get(eval_split), "tuned": tuned.get(eval_split),
        "ood_base": ood_base, "ood_tuned": ood_tuned, "retention": ratio, "retention_pts": pts,
        # the reference rows on the same items (medln.references), when the run computed them
        **{f"{side}{c}": (done.get(c) or {}).get(split) if split else None
           for side, split in (("", eval_split), ("ood_", ood_key)) for c in ("blind", "ceiling")},
        "references": done.get("references"),
    }


def retention(base: dict | None, tuned: dict | None, metric: str | None) -> tuple[float | None, float | None]:
    """(tuned / base, tuned - base in points of 100) on `metric`; ratio None when base is 0."""
    if not metric or not base or not tuned or base.get(metric) is None or tuned.get(metric) is None:
        return None, None
    b, t = base[metric], tuned[metric]
    return (round(t / b, 6) if b else None), round(100 * (t - b), 4)


def steady(values: list[float]) -> float | None:
    """Median over steps, leaving out the first (warm-up: allocation, kernel selection)."""
    vals = [v for v in values if v is not None]
    vals = vals[1:] if len(vals) > 1 else vals
    return round(statistics.median(vals), 6) if vals else None


def reason(e: BaseException) -> str:
    """Why a cell could not run, in one line."""
    import torch

    text = str(e).removeprefix("invalid config:").strip()
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__
    text = text if len(text) <= 300 else text[:299] + "…"
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {text}"
    if isinstance(e, (ConfigError, ScopeError)):
        return text
    return f"{type(e).__name__}: {text}"
