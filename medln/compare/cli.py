"""`medln compare`: the command line of a scope sweep (medln.compare.sweep): its flags are
CompareConfig's fields (medln.compare.options), and its console progress."""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from ..config import _f, add_command, from_args
from ..progress import Bars
from .options import CompareConfig
from .report import table_md
from .sweep import compare


def cmd_compare(args) -> None:
    import signal
    import threading

    cfg = from_args(args, CompareConfig)
    stop = threading.Event()

    def on_interrupt(signum, frame):
        # First Ctrl-C: finish gracefully (the current scope stops within a step, is saved and
        # scored, the rest are skipped, the files are written). Second: abort.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logging.getLogger("medln.compare").warning("stopping after the current step (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    bars = Bars.for_args(args)
    cells = seeds = None  # the bar of scored runs (scope x seed), from compare_start on
    try:
        command = "python -m medln " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        for record in bars.through(compare(cfg, stop=stop, command=command)):
            event = record.get("event")
            if event == "compare_start":
                cells = bars.bar(len(record["scopes"]) * len(record["seeds"]), "compare", "cell")
                seeds = len(record["seeds"])
            elif event in ("scope_done", "scope_skipped") and cells is not None:
                cells.update(1 if "seed" in record else seeds)  # a scope that cannot run skips all its seeds at once
            elif event == "done" and cells is not None:
                cells.close()
            if args.json:
                print(json.dumps(record, default=str), flush=True)
            elif event == "compare_start":
                print(f"compare {', '.join(record['scopes'])} on {record['backbone']} / {record['data']} "
                      f"({record['steps']} steps, quant {record['quant']}) -> {record['out']}", flush=True)
            elif event == "tune_start":
                print(f"[{record['scope']}] tuning the learning rate on validation (n = {record['n']}) around "
                      f"{record['centre']:g}", flush=True)
            elif event == "tune_point":
                score = "failed" if record["score"] is None else f"{record['score']:.3f}"
                print(f"[{record['scope']}] lr {record['lr']:g}: validation {score}", flush=True)
            elif event == "tune_run" and record.get("run_event") == "step" and record["step"] % 50 == 0:
                print(f"[{record['scope']}] lr {record['lr']:g}: step {record['step']}  loss {record['loss']:.4f}", flush=True)
            elif event == "tune_done":
                print(f"[{record['scope']}] chosen lr {record['chosen']}" + (" (on the grid's edge at the cap)"
                                                                            if record.get("capped") else ""), flush=True)
            elif event == "run_start":
                print(f"[{record['scope']} seed {record['seed']}] lr={record['lr']:g}: trains {record['trainable']:,} of "
                      f"{record['total']:,} parameters ({record['percent']:.4f} %)", flush=True)
            elif event == "scope_skipped":
                print(f"[{record['scope']}] skipped: {record['reason']}", flush=True)
            elif event == "scope_done":
                r = record["row"]
                print(f"[{r['scope']} seed {r['seed']}] {r['status']} in {r['wall_s']:.1f} s "
                      f"({r['train_s']:.1f} s training)", flush=True)
            elif event == "done":
                print()
                print(table_md(json.loads(Path(record["results"]).read_text(encoding="utf-8"))))
                print(f"\nresults: {record['results']}\ncsv:     {record['csv']}\nfigures: "
                      + ", ".join(record["figures"]) + f"\n({record['wall_s']:.1f} s)")
            elif event == "step" and (record["step"] % 10 == 0 or record["step"] == 1):
                print(f"[{record['scope']}] step {record['step']:>5}  loss {record['loss']:.4f}  "
                      f"{record['samples_per_s']:.1f} samples/s", flush=True)
    finally:
        if cells is not None:
            cells.close()
        signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass(kw_only=True)
class CompareArgs(CompareConfig):
    """The sweep's options, and how the command prints."""

    json: bool = _f(False, "one JSON object per progress record; the last holds the rows")


def add_cli(sub) -> None:
    add_command(sub, "compare", CompareArgs, cmd_compare, exclude=("scope",),
                help="train several scopes with the same budget and seeds; table, CSV, plots and a verdict")
