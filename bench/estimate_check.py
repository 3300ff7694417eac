"""How far the app's time estimates are from what the jobs then take.

    python bench/estimate_check.py [--scopes ln,lora,ia3] [--steps N]

The app's own handlers run in this process, with no page (medln.ui's start functions, as
the Start buttons call them): first the default fine-tune, then a comparison of --scopes,
each with the estimate its page shows before it starts (eta.Estimate: load + training +
scoring) and the wall time from submission to the end of the job. The fine-tune records its
speed in the server's book, as any finished job does, so the comparison's estimate rests on
this server's own recent steps where the scope was timed, and on the committed record
(docs/compare-medln-tiny) where not. The book and the answer cache start empty (a fresh
server: MEDLN_CACHE is a new temporary folder), so the fine-tune's estimate is the committed
record's.

Prints JSON: per job the estimate, its source, the actual wall seconds and actual/estimate
(above 1: the estimate was too low), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def wait(job, timeout: float = 3600) -> None:
    end = time.time() + timeout
    while job.active and time.time() < end:
        time.sleep(0.2)
    if job.active:
        raise SystemExit(f"job {job.id} still {job.state} after {timeout} s")


def row(job) -> dict:
    est = job.estimate
    actual = (job.finished or time.time()) - job.created
    return {"kind": job.kind, "title": job.title, "state": job.state,
            "estimate_s": None if est is None else round(est.total_s, 1),
            "estimate_parts_s": None if est is None else {"load": round(est.load_s, 1), "train": round(est.train_s, 1),
                                                          "score": None if est.score_s is None else round(est.score_s, 1)},
            "source": None if est is None else est.source, "actual_s": round(actual, 1),
            "actual_over_estimate": None if est is None else round(actual / est.total_s, 2),
            "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scopes", default="ln,lora,ia3", help="the comparison's scopes")
    p.add_argument("--steps", type=int, default=0, help="the comparison's steps per scope (0: the Compare tab's default)")
    args = p.parse_args()
    os.environ["MEDLN_CACHE"] = tempfile.mkdtemp(prefix="estimate-book-")  # an empty speed book and answer cache
    from medln.ui import build_app
    from medln.ui import compare as cmp
    from medln.ui import finetune as ft

    load_before = os.getloadavg()
    demo = build_app(runs_root=Path(tempfile.mkdtemp(prefix="estimate-runs-")), default_backbone="medln-tiny")
    ctx = demo.medln
    defaults = ft.DEFAULTS
    fields = {"backbone": "medln-tiny", "scope": defaults.scope, "quant": defaults.quant, "steps": defaults.steps,
              "lr": None, "batch_size": defaults.batch_size, "eval_limit": ctx.settings.eval_limit,
              "precision": defaults.precision}
    rows = []
    job = ft.start(ctx, "bench-finetune", fields, "sample", None, "")
    wait(job)
    rows.append(row(job))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    scopes = [s for s in args.scopes.split(",") if s]
    job = cmp.start(ctx, "bench-compare", "medln-tiny", scopes, defaults.quant == "4bit", args.steps or cmp.COMPARE_STEPS,
                    defaults.batch_size, "sample", None, "", ctx.settings.eval_limit)
    wait(job)
    rows.append(row(job))
    print(json.dumps({"jobs": rows, "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
