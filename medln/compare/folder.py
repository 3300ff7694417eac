"""A sweep's folder: the options it was started with, its cells' run folders, and the rows
read back from the cells that finished (for --resume, --collect, --cell jobs, and the other
processes of an `accelerate launch` group).

  sweep.json                the sweep's options ("config") and its planned cells; written
                            atomically before the first cell, never rewritten. It is a config
                            file too: `compare --config DIR/sweep.json --out DIR --resume`
  runs/<scope>/seed<k>/     a test cell: an ordinary run folder (medln.runs)
  tune/<scope>/lr<rate>/    a rate-choosing cell (--tune-lr)
  results.json, results.csv, TABLE.md, figures.html    medln.compare.report, from the rows

A cell is finished when its run folder holds eval.json (written last, medln.runs) with status
"completed". Anything else (no folder, no eval.json, a run stopped part-way with fewer steps
than the budget) is unfinished: a resumed sweep runs it again from scratch, so every row it
reports trained the same budget.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from .. import __version__
from ..config import ConfigError
from ..runs import RunDir
from ..storage import write_json_atomic
from ..userfiles import MAX_BYTES, FileError, load_json, short
from .cells import Cell, Fold, empty_row
from .options import CompareConfig
from .report import check_sweep_out

SWEEP_FILE = "sweep.json"
# How a sweep is run, not what it measures: these may differ between the start and a resume.
RUN_ONLY = ("out", "executor", "ray_address", "ray_cpus", "resume", "report_to")


def sweep_options(options: CompareConfig) -> dict:
    """The options that define the sweep's cells and their results (`scope` is not one: `scopes` is)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(CompareConfig)
            if f.name not in RUN_ONLY and f.name != "scope"}


def claim(out: Path, options: CompareConfig, cells: list[str], *, resume: bool) -> None:
    """Record the sweep's options in OUT/sweep.json, or check them against what is there.

    A new sweep needs a folder without one (and without runs: an older sweep). `resume`
    (--resume, every --cell job) accepts an existing record with the same options, naming the
    first field that differs otherwise. Several --cell jobs may start at once: the record is
    published with a hard link, which fails if another job's is already there."""
    path = out / SWEEP_FILE
    record = {"config": sweep_options(options), "cells": cells, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "medln": __version__}
    check_free(out, resume=resume)
    if path.exists():
        check_same(path, record["config"])
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{SWEEP_FILE}.{os.getpid()}.tmp"
    write_json_atomic(tmp, record)
    try:
        os.link(tmp, path)  # atomic and exclusive: never replaces a record another job published
    except FileExistsError:
        check_same(path, record["config"])
    except OSError:  # a file system without hard links
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_free(out: Path, *, resume: bool) -> None:
    """FileExistsError for a folder this sweep may not use. A sweep's folder (sweep.json) only with
    `resume` (its options are checked by claim()); otherwise a new or empty folder only
    (medln.compare.report.check_sweep_out), which --resume and --cell accept too, as the start of
    the sweep. Checked before anything loads."""
    if (out / SWEEP_FILE).exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a sweep ({SWEEP_FILE}); pass --resume to finish it, or "
                                  "choose another --out")
        check_sweep_out(out, resume=True)  # its own files only: nothing a user put beside them
        return
    if resume and out.is_dir() and all(p.name.startswith(f".{SWEEP_FILE}.") for p in out.iterdir()):
        return  # empty, or another --cell job of the array is publishing sweep.json right now (claim)
    check_sweep_out(out)


def read_record(out: Path) -> dict:
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {out} a sweep's folder (compare --out)?")
    try:  # a user's file: bounded, UTF-8, JSON (medln.userfiles), one line naming what is wrong
        record = load_json(path, what="sweep record", max_bytes=MAX_BYTES)
    except FileError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ConfigError(f"{path}: not a sweep record (no \"config\")")
    return record


def read_options(out: Path) -> CompareConfig:
    """The sweep's options as it was started, with `out` where it is now (it may have moved)."""
    config = read_record(out)["config"]
    names = {f.name for f in dataclasses.fields(CompareConfig)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ConfigError(f"{Path(out) / SWEEP_FILE}: unknown options {', '.join(unknown)} (written by another version?)")
    return CompareConfig(**{**config, "out": str(out)}).validate()


def check_same(path: Path, options: dict) -> None:
    """ConfigError naming the first option that differs from the sweep recorded in `path`
    (an option the record lacks counts as its default: written before that option existed)."""
    recorded = read_record(path.parent)["config"]
    defaults = {f.name: f.default for f in dataclasses.fields(CompareConfig)}
    for key in options:
        before = recorded.get(key, defaults.get(key))
        if before != options[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{path}: this folder's sweep has {flag} {short(before)}, this command {short(options[key])}; "
                              f"give the same options (--config {path} replays them) or choose another --out")


def finished(path: Path) -> bool:
    try:  # bounded: a cell's eval.json is read as data too
        done = load_json(Path(path) / "eval.json", what="a cell's eval.json")
    except FileError:
        return False
    return isinstance(done, dict) and done.get("status") == "completed"


def read_cell(cell: Cell, ood_key: str | None) -> Fold:
    """A finished cell's row, folded from its run folder exactly as run_cell folds the live
    records; only read, never touched."""
    run = RunDir(Path(cell.out))
    fold = Fold(cell, ood_key)
    fold.add(run.config())  # config.json holds the start record
    for record in run.metrics():
        fold.add(record)
    done = run.eval()
    fold.add({**done, "event": "done", "run": str(cell.out)})
    fold.result(done.get("wall_s"))
    return fold


def missing_row(cell: Cell) -> dict:
    """A planned cell with no finished run (collect): a row that says so."""
    state = "stopped part-way" if (Path(cell.out) / "eval.json").exists() else \
        "unfinished" if Path(cell.out).exists() else "not run"
    return {**empty_row(cell.scope, f"missing: {cell.name} ({state})", cell.seed), "status": "missing"}
