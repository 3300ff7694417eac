"""Why a findings choice made on validation does not carry to test: the two splits' question mix.

    python docs/experiment/mix.py SWEEP [SCOPE]   # -> diagnosis/v3.3-findings-mix-n<validation n>.json

SWEEP is a `medln compare --data sample:findings --tune-lr` folder with its (git-ignored) run
folders: tune/<scope>/lr<rate>/eval.json (validation, seed 0) and runs/<scope>/seed<k>/eval.json
(test). For SCOPE (default `full`, the best on findings) at its chosen rate it writes, per
(question type, wording) cell, how many questions each split asks and the scope's accuracy on
each, and the validation score re-weighted to the test's mix: how much of the validation-to-test
drop the mix explains, and how much is left to each cell's own noise.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cells(metrics: dict) -> dict[str, dict]:
    """{"PRES held-out": {"n", "accuracy"}, ...} from one eval.json split entry."""
    return {f"{qtype} {wording}": cell
            for wording, m in metrics["by_phrasing"].items() for qtype, cell in m["by_question_type"].items()}


def reweighted(acc: dict[str, dict], weights: dict[str, dict]) -> float:
    """`acc`'s cell accuracies averaged with `weights`' cell sizes, over the cells both have."""
    shared = [k for k in weights if k in acc]
    return sum(weights[k]["n"] * acc[k]["accuracy"] for k in shared) / sum(weights[k]["n"] for k in shared)


def main(sweep: Path, scope: str = "full") -> dict:
    results = json.loads((sweep / "results.json").read_text())
    lr = next(s["lr"] for s in results["summary"] if s["scope"] == scope)
    val = json.loads((sweep / "tune" / scope / f"lr{lr:g}" / "eval.json").read_text())["tuned"]["validation"]
    tests = [json.loads(p.read_text())["tuned"]["test"] for p in sorted((sweep / "runs" / scope).glob("seed*/eval.json"))]
    v, t0 = cells(val), cells(tests[0])
    per_cell = {k: {"validation_n": v.get(k, {}).get("n", 0), "test_n": t0.get(k, {}).get("n", 0),
                    "validation_seed0": round(v[k]["accuracy"], 3) if k in v else None,
                    "test_mean_over_seeds": round(statistics.mean(cells(t)[k]["accuracy"] for t in tests), 3)
                    if k in t0 else None}
                for k in sorted(set(v) | set(t0))}
    out = {"what": __doc__.split("\n")[0], "command": f"python docs/experiment/mix.py {sweep} {scope}",
           "scope": scope, "lr": lr, "test_seeds": len(tests),
           "validation_overall_seed0": round(val["overall"], 4),
           "validation_reweighted_to_test_mix": round(reweighted(v, t0), 4),
           "test_overall_mean": round(statistics.mean(t["overall"] for t in tests), 4),
           "test_overall_seed0": round(tests[0]["overall"], 4),
           "cells": per_cell}
    (HERE / "diagnosis" / f"v3.3-findings-mix-n{val['n']}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{scope} at {lr:g}: validation {out['validation_overall_seed0']} (seed 0), re-weighted to the test's "
          f"mix {out['validation_reweighted_to_test_mix']}, test {out['test_overall_mean']} (mean of {len(tests)} seeds)")
    print(f"  {'cell':20s} {'val n':>6s} {'test n':>6s} {'val acc':>8s} {'test acc':>8s}")
    for k, c in per_cell.items():
        print(f"  {k:20s} {c['validation_n']:6d} {c['test_n']:6d} {c['validation_seed0'] or 0:8.3f} {c['test_mean_over_seeds'] or 0:8.3f}")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(sys.argv[2:3] or ["full"]))
