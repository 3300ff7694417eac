"""Sweep tuning scopes on one backbone and one dataset with the same budget: a table and plots.

Every scope trains with the same seed, steps, batch and data (each with its own default
learning rate unless --lr is given: LayerNorm-only needs a far higher one than LoRA, docs/design.md
"Traps") into OUT/runs/<scope>/, an ordinary run folder. The sweep writes

  results.json   one row per scope, the shared config, the backbone, wall time, the machine
  results.csv    the same rows, flat columns (nested metrics become base_overall, tuned_...)
  figures.html   trainable parameters, metric vs parameters (Pareto front), retention, cost;
                 plotly.js embedded once, so it opens offline (PNG files too when kaleido is
                 installed)

The base model is scored once and its metrics reused for every scope that loads the same
base weights (under 4-bit, attn/ffn keep their projections unquantized: a different base
model, scored on its own). Retention is the tuned out-of-domain score as a fraction of the
base model's (the paper's claim: LN-tuning keeps zero-shot / OOD ability), on the data's
held-out source-style split (--ood-split) or on a second dataset (--ood SPEC).

A scope that cannot run (full under 4-bit, out of memory, any runtime failure) becomes a
row with `skipped`: reason, and the sweep goes on. `compare()` is a generator of progress
records, so the app can show progress and stop it (stop flag checked every micro-batch).

A sweep is a list of cells (medln.compare.cells: scope, seed, rate, split), each run through
the one helper `run_cell`. Its phases are functions: `choose_rates` (validation cells, with
--tune-lr, in rounds), `run_cells` (every scope x seed, scored on test and the out-of-domain
set) and `finish` (reference rows, summary, verdict, the files). An executor
(medln.compare.executors) runs the cells: here one after another, or as Ray tasks. The folder
(medln.compare.folder) records the options in sweep.json before the first cell, so `resume`
reads back the finished cells and runs only the others; medln.compare.jobs runs one cell as
its own job and collects a folder's cells. Under `accelerate launch` only the main process
writes the sweep's files.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..config import ConfigError, TrainConfig
from ..data import load_samples
from ..evaluate import subsample
from ..machine import machine_info
from ..methods import SCOPES, ScopeError, get_scope
from ..rank import is_main_process
from ..storage import write_json_atomic
from ..trackers import check as check_tracker
from .cells import Cell, Lane, empty_row, reason
from .executors import execute, open_executor
from .folder import check_free, claim
from .options import CompareConfig
from .protocol import reference_rows, split_validation
from .report import write_csv, write_figures, write_table
from .summary import summarize_rows, verdict
from .rates import choose_rates
from .tuning import Grid, read_lrs_from, reusable_tuning

ALL_SCOPES: list[str] = [s.name for s in SCOPES]
OOD_KEY = "ood"  # evaluation-set name of a second dataset given with ood=SPEC


def parse_scopes(text: str | list[str] | None) -> list[str]:
    """'ln,lora' or ['ln', 'lora'] (or 'all' / None) -> validated names, duplicates dropped."""
    if text is None or text == "all":
        return list(ALL_SCOPES)
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for name in (n.strip() for n in names):
        if name and name not in out:
            get_scope(name)  # ScopeError names the valid ones
            out.append(name)
    if not out:
        raise ScopeError("no scopes given")
    return out


@dataclass
class Sweep:
    """A sweep under way: its options, data, and everything results.json records."""

    cfg: TrainConfig  # the shared budget every cell starts from
    scopes: list[str]
    seeds: list[int]
    out: Path
    grid: Grid
    tune_lr: bool
    runner: Callable  # what trains one run: train_run, or the app's GPU call
    stop: object = None
    progress: Callable[[float, str], None] | None = None
    command: str | None = None
    tuned: dict | None = None  # an earlier sweep's "tuning" record (lrs_from)
    train: list = field(default_factory=list)
    val_tune: list = field(default_factory=list)  # the validation items rates are chosen on
    val_info: dict = field(default_factory=dict)
    extra_eval: dict | None = None
    ood_info: dict = field(default_factory=dict)
    unrunnable: dict[str, str] = field(default_factory=dict)  # scope -> why it cannot run at all
    lrs: dict[str, float] = field(default_factory=dict)  # the rate each scope runs at
    tuning: dict[str, dict] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # scopes whose chosen rate comes from `tuned`
    rows: list[dict] = field(default_factory=list)
    bases: dict[tuple, dict] = field(default_factory=dict)  # base_key -> {split: metrics}
    references: dict = field(default_factory=dict)
    backbone: str = ""
    status: str = "completed"
    mode: str = "run"  # run (a new sweep), resume, cell (one --cell job), collect (read the folder only)
    executor: object = None  # medln.compare.executors: Local or Ray
    report_to: str = "none"
    missing: list[str] = field(default_factory=list)  # planned cells with no finished run (collect)
    machine: dict = field(default_factory=machine_info)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    t0: float = field(default_factory=time.perf_counter)

    @property
    def runnable(self) -> list[str]:
        return [s for s in self.scopes if s not in self.unrunnable]

    def results(self, final: bool) -> dict:
        import torch

        from ..plots import pick_metric

        cfg, tuned = self.cfg, self.tuned
        res = {
            "command": self.command, "backbone": self.backbone, "data": cfg.data, "eval_split": cfg.eval_split,
            "ood": self.ood_info, "splits": {"train": {"split": cfg.split, "n": len(self.train)},
                                             "validation": self.val_info, "test": {"split": cfg.eval_split}},
            "scopes": self.scopes, "seeds": self.seeds, "quant": cfg.quant, "steps": cfg.steps,
            "config": {k: v for k, v in cfg.to_dict().items() if k not in ("scope", "seed", "lr")},
            "lr_source": (_tuned_source([s for s in self.tuning if not self.tuning[s].get("reused")], self.reused,
                                        tuned.get("reused_from") if tuned else None)
                          if self.tune_lr else
                          f"tuned on validation (--tune-lr) by an earlier sweep, reused ({tuned.get('reused_from')})"
                          if tuned else
                          f"given (--lr {cfg.lr:g})" if cfg.lr is not None else "the backbone's registry defaults"),
            "tuning": {"grid": self.grid.describe(), "seed": self.seeds[0], "split": self.val_info,
                       "n": len(self.val_tune), "scopes": self.tuning,
                       **({"reused_from": tuned.get("reused_from")} if self.reused else {})}
                      if self.tune_lr else tuned,
            "metric": pick_metric(self.rows),
            "memory_measure": ("torch.cuda.max_memory_allocated during training" if torch.cuda.is_available() else
                               "process peak resident memory (VmHWM) during training, model included"),
            "status": self.status if final else "running", "started": self.started,
            "wall_s": round(time.perf_counter() - self.t0, 3), "machine": self.machine, "rows": self.rows,
            "missing": self.missing,
        }
        if final:
            res["references"] = self.references
            res["summary"] = summarize_rows(self.rows, self.scopes, res["metric"], self.references)
            res["verdict"] = verdict(res)
        return res

    @property
    def writes(self) -> bool:
        """Whether this process writes results.json: not a --cell job (collect writes it), nor
        the other processes of an `accelerate launch` group."""
        return self.mode != "cell" and is_main_process()

    def save(self) -> None:
        """results.json, rewritten after every run: an interrupted sweep keeps what it finished."""
        if self.writes:
            write_json_atomic(self.out / "results.json", self.results(final=False))

    def lane(self, extra_eval: dict | None, ood_key: str | None, bases: dict | None = None) -> Lane:
        """What a phase's cells share (medln.compare.cells.Lane)."""
        return Lane(self.runner, self.stop, self.train, extra_eval, self.bases if bases is None else bases, ood_key,
                    overwrite=self.mode in ("resume", "cell"), report_to=self.report_to,
                    group=self.out.resolve().name)

    def execute(self, cells: list[Cell], lane: Lane, watch=None):
        return execute(self.executor, self.cfg, cells, lane, watch, reuse=self.mode in ("resume", "cell"),
                       collect=self.mode == "collect")


def compare(options: CompareConfig, *, stop=None, progress: Callable[[float, str], None] | None = None,
            command: str | None = None, run_scope: Callable[..., Iterator[dict]] | None = None) -> Iterator[dict]:
    """Train each of `options.scopes` with the shared budget, once per seed, into
    out/runs/<scope>/seed<k>/; with `tune_lr`, first choose each scope's rate on the
    validation split (medln.compare.tuning; runs in out/tune/<scope>/) — test is never read then.

    `options.ood`: a data spec whose eval split is the out-of-domain set (default: the
    `ood_split` split of the training data). `options.lrs_from`: an earlier sweep's
    results.json on the same backbone, data and budget: its chosen rates are used.
    `stop`: anything with is_set(). `progress(fraction, message)`: optional callback.
    `run_scope`: what trains one run, called as train_run is (the app passes a ZeroGPU call).

    Yields {"event": "compare_start"}, with tune_lr per scope {"event": "tune_start"}, the
    tuning runs' records (event "tune_run"), {"event": "tune_done"}, then per scope and seed
    {"event": "scope_start"}, that run's records (train_run's, tagged with "scope" and
    "seed"; its start/done renamed run_start/run_done), {"event": "scope_done" or
    "scope_skipped", "row": ...}; at the end {"event": "done", "rows", "summary",
    "references", "verdict", "results", ...}.
    """
    sweep = start(options, stop=stop, progress=progress, command=command, run_scope=run_scope,
                  mode="resume" if options.resume else "run")
    yield from sweep_records(sweep)


def sweep_records(sweep: Sweep) -> Iterator[dict]:
    """The phases of a sweep that start() set up; the executor is closed (a local Ray stopped)
    before the files are written."""
    yield {"event": "compare_start", "scopes": sweep.scopes, "seeds": sweep.seeds, "out": str(sweep.out),
           "backbone": sweep.cfg.backbone, "data": sweep.cfg.data, "ood": sweep.ood_info, "steps": sweep.cfg.steps,
           "quant": sweep.cfg.quant, "tune_lr": sweep.tune_lr, "mode": sweep.mode, "executor": sweep.executor.name}
    try:
        yield from choose_rates(sweep)
        yield from run_cells(sweep, test_cells(sweep))
    finally:
        sweep.executor.close()
    yield from finish(sweep)


def start(options: CompareConfig, *, stop=None, progress=None, command=None, run_scope=None, mode: str = "run") -> Sweep:
    """Check the options, load the training data (and validation, and the out-of-domain set),
    and claim the folder (sweep.json) unless only collecting it."""
    # Every option checked before anything is built from it (a seed list, a grid; issue 25).
    dataclasses.replace(options, scope="ln").validate()
    scopes = parse_scopes(options.scopes)
    seeds = list(dict.fromkeys(options.seed_list()))
    grid = options.grid()
    # The shared fields, checked once ('ln' runs under any quant; each scope is checked again).
    cfg = dataclasses.replace(options.train_config(), scope="ln").validate()
    check_tracker(options.report_to)
    executor = open_executor("local" if mode == "collect" else options.executor, address=options.ray_address,
                             cpus=options.ray_cpus)  # Ray missing: one line now, before anything loads
    out = Path(options.out)
    # A new or empty folder; with --resume (and --cell) one whose sweep.json matches. The main process
    # checks (and claims) it: the others of an `accelerate launch` group would see its sweep.json.
    if mode != "collect" and is_main_process():
        check_free(out, resume=mode != "run")  # before the data loads; claim() checks again before the first cell
    tuned = None
    if options.lrs_from:
        tuned = reusable_tuning(read_lrs_from(options.lrs_from), cfg.to_dict(), options.lrs_from,
                                grid if options.tune_lr else None)
    if run_scope is None:
        from ..train import train_run as run_scope
    sweep = Sweep(cfg, scopes, seeds, out, grid, options.tune_lr, run_scope, stop, progress, command, tuned,
                  backbone=cfg.backbone, mode=mode, executor=executor, report_to=options.report_to)
    if options.executor == "ray" and mode != "collect":
        sweep.machine.pop("threads", None)  # the driver's: Ray cells run elsewhere, on GPUs or ray_cpus threads
    if sweep.tune_lr:
        sweep.train, validation, sweep.val_info = split_validation(cfg)
    else:
        sweep.train = load_samples(cfg.data, cfg.split, skip_bad=cfg.skip_bad).samples
        validation, sweep.val_info = [], {"source": None, "n": 0, "text": "not used: learning rates not tuned here"}
    # Tuning scores the headline metric only: VQA items when there are any (no report generation).
    sweep.val_tune = subsample([s for s in validation if s.task == "vqa"] or validation, cfg.eval_limit)
    if sweep.tune_lr and tuned and (tuned.get("seed") != seeds[0] or tuned.get("n") != len(sweep.val_tune)
                                    or (tuned.get("split") or {}).get("n") != sweep.val_info.get("n")):
        raise ConfigError(f"{tuned.get('reused_from')}: tuned with seed {tuned.get('seed')} on {tuned.get('n')} "
                          f"validation items; this sweep has seed {seeds[0]} and {len(sweep.val_tune)}")
    if mode != "collect" and is_main_process():  # the options on record before the first cell
        claim(out, options, [c.name for c in test_cells(sweep)], resume=mode != "run")
    sweep.ood_info = {"data": cfg.data, "split": cfg.ood_split or None, "key": cfg.ood_split or None}
    if options.ood:
        samples = subsample(load_samples(options.ood, cfg.eval_split or "test", skip_bad=cfg.skip_bad).samples,
                            cfg.eval_limit)  # as train_run limits its own splits
        sweep.extra_eval = {OOD_KEY: samples}
        sweep.ood_info = {"data": options.ood, "split": cfg.eval_split or "test", "key": OOD_KEY, "n": len(samples)}
        sweep.cfg = dataclasses.replace(cfg, ood_split="")  # the second dataset replaces it
    # Scopes that cannot run at all (full under 4-bit) are one skipped row, not tried per seed.
    for scope in scopes:
        try:
            dataclasses.replace(sweep.cfg, scope=scope).validate()
        except (ConfigError, ScopeError) as e:
            sweep.unrunnable[scope] = reason(e)
    return sweep


def test_cells(sweep: Sweep) -> list[Cell]:
    """Every scope x seed at its rate, scored on the test split, seed by seed (a scope that
    cannot run at all keeps its place: run_cells records it once, as a skipped row)."""
    return plan(sweep.scopes, sweep.seeds, sweep.out, {s: sweep.lrs.get(s, sweep.cfg.lr) for s in sweep.scopes},
                sweep.cfg.eval_split)


def plan(scopes: list[str], seeds: list[int], out: Path, rates: dict, split: str) -> list[Cell]:
    """The test cells in the order they run and `--cell N` numbers them: seed by seed, scope by scope."""
    return [Cell(scope, seed, rates.get(scope), split, out / "runs" / scope / f"seed{seed}")
            for seed in seeds for scope in scopes]


def run_cells(sweep: Sweep, cells: list[Cell]) -> Iterator[dict]:
    """Phase 2: the test cells, each scored once on test (and the out-of-domain set): a row per
    cell, kept in the cells' order whatever order they finish in. Once stopped, the cells left
    become "stopped before it ran" rows."""
    lane = sweep.lane(sweep.extra_eval, sweep.ood_info["key"])
    rows: dict[int, dict] = {}
    runnable = []
    for i, cell in enumerate(cells):
        if cell.scope not in sweep.unrunnable:
            runnable.append(cell)
        elif cell.seed == sweep.seeds[0]:  # a scope that cannot run at all: one skipped row
            rows[i] = empty_row(cell.scope, sweep.unrunnable[cell.scope])
            yield {"event": "scope_skipped", "scope": cell.scope, "reason": rows[i]["skipped"], "row": rows[i]}
    place = {cell: i for i, cell in enumerate(cells)}
    done, started = 0, 0

    def watch(cell, record, cfg):
        if record.get("event") == "step" and sweep.progress:
            sweep.progress((done + record["step"] / cfg.steps) / len(runnable),
                           f"{cell.scope} (seed {cell.seed}): step {record['step']}/{cfg.steps}, loss {record['loss']:.4f}")

    for record in sweep.execute(runnable, lane, watch):
        event = record["event"]
        if event == "cell_start":
            cell = record["cell"]
            if sweep.progress:
                sweep.progress(done / len(runnable), f"{cell.scope} (seed {cell.seed}): loading")
            yield {"event": "scope_start", "scope": cell.scope, "seed": cell.seed, "index": started, "of": len(runnable)}
            started += 1
        elif event == "cell_done":
            cell, row = record["cell"], record["row"]
            rows[place[cell]] = row
            sweep.rows = [rows[i] for i in sorted(rows)]
            if record.get("backbone"):
                sweep.backbone = record["backbone"]
            if record["how"] == "missing":
                sweep.missing.append(cell.name)
            if record["how"] == "not run" or row["status"] == "stopped":
                sweep.status = "stopped"  # train_run saved and scored what it had; the rest do not run
            if record["how"] == "not run":
                continue
            done += 1
            sweep.save()
            kind = "scope_skipped" if row["skipped"] else "scope_done"
            yield {"event": kind, "scope": cell.scope, "seed": cell.seed, **({"reason": row["skipped"]}
                                                                            if row["skipped"] else {}),
                   "row": row, "how": record["how"]}
        else:
            yield record
    sweep.rows = [rows[i] for i in sorted(rows)]


def finish(sweep: Sweep) -> Iterator[dict]:
    """Phase 3: the reference rows (the base model, and a model that never looks at the
    image), the summary and verdict, and the files: results.json, results.csv, TABLE.md,
    figures.html."""
    if not sweep.writes:  # a --cell job, or not the main process: collect / the main process write the files
        yield {"event": "done", "status": sweep.status, "results": None, "rows": sweep.rows, "missing": sweep.missing}
        return
    if sweep.missing and sweep.status == "completed":
        sweep.status = "partial"
    sweep.references.update(reference_rows(sweep.cfg, sweep.train, sweep.bases, sweep.extra_eval,
                                           sweep.ood_info["key"], sweep.rows))
    final = sweep.results(final=True)
    out = sweep.out
    write_json_atomic(out / "results.json", final)
    write_csv(out / "results.csv", sweep.rows)
    write_table(out / "TABLE.md", final)
    figures = write_figures(out, sweep.rows, final)
    if sweep.progress:
        sweep.progress(1.0, "done")
    yield {"event": "done", "status": sweep.status, "results": str(out / "results.json"),
           "csv": str(out / "results.csv"), "figures": [str(p) for p in figures], "wall_s": final["wall_s"],
           "metric": final["metric"], "rows": sweep.rows, "summary": final["summary"],
           "references": sweep.references, "verdict": final["verdict"], "missing": sweep.missing}


def _tuned_source(here: list[str], reused: list[str], source: str | None) -> str:
    """lr_source of a --tune-lr sweep, saying which scopes were tuned by this sweep."""
    if not reused:
        return "tuned on validation (--tune-lr)"
    if not here:
        return f"tuned on validation (--tune-lr) by an earlier sweep with the same grid ({source}); none here"
    return (f"tuned on validation (--tune-lr); {', '.join(here)} here, the others by an earlier sweep with the "
            f"same grid ({source})")
