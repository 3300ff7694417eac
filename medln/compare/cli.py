"""`medln compare`: the command line of a scope sweep (medln.compare.sweep): its flags are
CompareConfig's fields (medln.compare.options), and its console progress."""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from ..config import ConfigError, _f, add_command, from_args
from ..progress import Bars
from ..rank import is_main_process, say
from .jobs import cell_list, collect, run_one
from .options import CompareConfig
from .report import table_md
from .sweep import compare


def cmd_compare(args) -> None:
    import signal
    import threading

    stop = threading.Event()

    def on_interrupt(signum, frame):
        # First Ctrl-C: finish gracefully (local: the current cell stops within a step, is saved
        # and scored; ray: the cells not finished are cancelled; the finished ones are kept, the
        # files written). Second: abort.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if is_main_process():  # a terminal's Ctrl-C reaches every process of an `accelerate launch` group
            logging.getLogger("medln.compare").warning("stopping: the finished cells are kept (Ctrl-C again to abort)")

    command = "python -m medln " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.collect:
        records = collect(args.collect, command=command)
    else:
        if not args.out:
            raise ConfigError("compare: missing --out (or --collect DIR)")
        cfg = from_args(args, CompareConfig)
        if args.cell == "list":
            for i, name in enumerate(cell_list(cfg)):
                say(f"{i}\t{name}")
            return
        records = run_one(cfg, args.cell, stop=stop, command=command) if args.cell else \
            compare(cfg, stop=stop, command=command)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    bars = Bars.for_args(args)  # drawn by the main process only (medln.progress)
    try:
        show(bars.through(records), args.json, bars)
    finally:
        signal.signal(signal.SIGINT, previous)


def show(records, as_json: bool, bars: Bars | None = None) -> None:
    """The console progress: one line per record worth a line, and the bar of finished cells
    (scope x seed), on the main process only."""
    bars = bars or Bars(False)
    ray, cells, seeds = False, None, 1
    score_bar = bars.score_records()
    try:
        for record in records:
            event = record.get("event")
            if not is_main_process():  # the other processes of `accelerate launch` run the cells, silently
                continue
            if event == "compare_start":
                cells = bars.bar(len(record["scopes"]) * len(record["seeds"]), "compare", "cell")
                seeds = len(record["seeds"])
            elif event in ("scope_done", "scope_skipped") and cells is not None:
                cells.update(1 if record.get("seed") is not None else seeds)  # an unrunnable scope: all its seeds
            elif event == "done" and cells is not None:
                cells.close()
            elif event == "score":  # each run's answers scored out of n, from its "score" records
                score_bar({**record, "which": f"[{record['scope']} seed {record['seed']}] {record['which']}"})
            elif event == "tune_run" and record.get("run_event") == "score":
                score_bar({**record, "which": f"[{record['scope']} lr {record['lr']:g}] {record['which']}"})
            line(record, as_json, ray)
            if event == "compare_start":
                ray = record.get("executor") == "ray"
    finally:
        if cells is not None:
            cells.close()


def line(record: dict, as_json: bool, ray: bool) -> None:
    """What one record prints (say: the main process only)."""
    event = record.get("event")
    if as_json:
        say(json.dumps(record, default=str))
    elif event == "compare_start":
        how = {"resume": "resuming ", "collect": "collecting "}.get(record.get("mode"), "")
        say(f"{how}compare {', '.join(record['scopes'])} on {record['backbone']} / {record['data']} "
            f"({record['steps']} steps, quant {record['quant']}, {record.get('executor')} executor) -> {record['out']}")
    elif event == "tune_start":
        say(f"[{record['scope']}] tuning the learning rate on validation (n = {record['n']}) around "
            f"{record['centre']:g}")
    elif event == "tune_point":
        score = "failed" if record["score"] is None else f"{record['score']:.3f}"
        say(f"[{record['scope']}] lr {record['lr']:g}: validation {score}")
    elif event == "tune_run" and record.get("run_event") == "failed":
        say(f"[{record['scope']}] lr {record['lr']:g}: failed: {record['reason']}")
    elif event == "tune_run" and record.get("run_event") == "step" and record["step"] % 50 == 0:
        say(f"[{record['scope']}] lr {record['lr']:g}: step {record['step']}  loss {record['loss']:.4f}")
    elif event == "tune_done":
        edge = (" (on the grid's edge at the cap)" if record.get("capped")
                else " (on the grid's edge: the highest rate allowed)" if record.get("at_limit") else "")
        say(f"[{record['scope']}] chosen lr {record['chosen']}{edge}")
    elif event == "cell_job":
        say(f"cell {record['index']} of {record['of']}: {record['cell']} in {record['out']}")
    elif event == "scope_start" and ray:
        say(f"[{record['scope']} seed {record['seed']}] submitted ({record['index'] + 1} of {record['of']})")
    elif event == "run_start":
        say(f"[{record['scope']} seed {record['seed']}] lr={record['lr']:g}: trains {record['trainable']:,} of "
            f"{record['total']:,} parameters ({record['percent']:.4f} %)")
    elif event == "scope_skipped":
        where = record["scope"] + (f" seed {record['seed']}" if record.get("seed") is not None else "")
        missing = record.get("how") == "missing"  # the reason says "missing: ..."
        say(f"[{where}] " + ("" if missing else "skipped: ") + record["reason"])
    elif event == "scope_done":
        r = record["row"]
        kept = " (finished before: kept as it was)" if record.get("how") == "reused" else ""
        say(f"[{r['scope']} seed {r['seed']}] {r['status']} in {r['wall_s'] or 0:.1f} s "
            f"({r['train_s'] or 0:.1f} s training){kept}")
    elif event == "done" and record.get("results") is None:
        if record.get("cell"):
            say(f"{record['cell']}: {record['status']}")
    elif event == "done":
        say()
        say(table_md(json.loads(Path(record["results"]).read_text(encoding="utf-8"))))
        if record.get("missing"):
            say(f"missing cells ({len(record['missing'])}): {', '.join(record['missing'])}")
        say(f"\nresults: {record['results']}\ncsv:     {record['csv']}\nfigures: "
            + ", ".join(record["figures"]) + f"\n({record['wall_s']:.1f} s)")
    elif event == "step" and (record["step"] % 10 == 0 or record["step"] == 1):
        say(f"[{record['scope']}] step {record['step']:>5}  loss {record['loss']:.4f}  "
            f"{record['samples_per_s']:.1f} samples/s")


@dataclasses.dataclass(kw_only=True)
class CompareArgs(CompareConfig):
    """The sweep's options, and how the command prints."""

    json: bool = _f(False, "one JSON object per progress record; the last holds the rows")
    out: str = _f("", "folder for results.json, results.csv, TABLE.md, figures.html, sweep.json and runs/ "
                      "(required, unless --collect)")
    cell: str = _f("", "run one cell of the sweep as its own job (a job array's task): its index N (0-based) or "
                       "SCOPE/seedK; 'list' prints them; then --collect the folder")
    collect: str = _f("", "a sweep's folder: write results.json, TABLE.md and the figures from the cells that "
                          "finished, listing the missing ones; runs nothing (the options come from its sweep.json)")


def add_cli(sub) -> None:
    add_command(sub, "compare", CompareArgs, cmd_compare, exclude=("scope",),
                help="train several scopes with the same budget and seeds; table, CSV, plots and a verdict")
