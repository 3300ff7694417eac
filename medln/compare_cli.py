"""`medln compare`: the command line of a scope sweep (medln.compare), its options as one
dataclass (TrainConfig's shared budget plus the sweep's own), and its console progress."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

from .compare import ALL_SCOPES, compare
from .compare_report import table_md
from .config import ConfigError, TrainConfig, _f, add_command, from_args
from .tuning import Grid, reusable_tuning


def cmd_compare(args) -> None:
    import signal
    import threading

    cfg = from_args(args)
    stop = threading.Event()

    def on_interrupt(signum, frame):
        # First Ctrl-C: finish gracefully (the current scope stops within a step, is saved and
        # scored, the rest are skipped, the files are written). Second: abort.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping after the current step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        seeds = list(range(cfg.seed, cfg.seed + args.seeds))
        grid = Grid(points=args.grid_points, cap=args.grid_cap)
        command = "python -m medln " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        tuned = None
        if args.lrs_from:
            try:
                earlier = json.loads(Path(args.lrs_from).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"--lrs-from {args.lrs_from}: {e}") from None
            tuned = reusable_tuning(earlier, cfg.to_dict(), args.lrs_from, grid if args.tune_lr else None)
        for record in compare(cfg, args.scopes, args.out, ood=args.ood or None, seeds=seeds, tune_lr=args.tune_lr, grid=grid,
                              stop=stop, command=command, tuned=tuned):
            event = record.get("event")
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
        signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass(kw_only=True)
class CompareArgs(TrainConfig):
    """TrainConfig's shared budget (its `scope` is not an option: --scopes lists them)."""

    scopes: str = _f(",".join(ALL_SCOPES), "comma-separated scopes")
    ood: str = _f("", "data spec of a second dataset for out-of-domain retention (its --eval-split split); "
                      "default: the --ood-split split of --data")
    out: str = _f(help="folder for results.json, results.csv, TABLE.md, figures.html and runs/")
    seeds: int = _f(1, "train every scope with this many seeds (--seed, --seed+1, ...): mean ± sd and a 95 %% "
                       "interval per metric (use >= 3 to compare)")
    tune_lr: bool = _f(False, "choose each scope's learning rate on the validation split first (the same-size log "
                              "grid per scope; the test split is not read while tuning)")
    grid_points: int = _f(Grid.points, "rates in each scope's initial grid (--tune-lr)")
    grid_cap: int = _f(Grid.cap, "most rates per scope, edge extensions included (--tune-lr)")
    lrs_from: str = _f("", "results.json of an earlier `compare --tune-lr` (same backbone, data, budget): use the "
                           "rates it chose on validation; with --tune-lr, tune only the scopes it lacks (same grid)")
    json: bool = _f(False, "one JSON object per progress record; the last holds the rows")


def add_cli(sub) -> None:
    add_command(sub, "compare", CompareArgs, cmd_compare, exclude=("scope",),
                help="train several scopes with the same budget and seeds; table, CSV, plots and a verdict")
