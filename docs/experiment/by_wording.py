"""Validation scores by question wording of every rate the v3.2 sweeps tried (seed 0).

    python docs/experiment/by_wording.py   # -> diagnosis/v3.2-validation-by-wording.json

Reads docs/compare-medln-tiny*/tune/<scope>/lr<rate>/eval.json, which stay out of git (the runs'
folders); the JSON keeps what docs/experiment.md ("What is left") quotes from them.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
SWEEPS = {"scanner": DOCS / "compare-medln-tiny", "findings": DOCS / "compare-medln-tiny-findings"}


def scores(metrics: dict) -> dict:
    return {"overall": round(metrics["overall"], 4),
            **{k: round(v["overall"], 4) for k, v in metrics["by_phrasing"].items()}}


def target(sweep: Path) -> dict:
    rows: dict = {}
    for path in sorted(sweep.glob("tune/*/lr*/eval.json")):
        e = json.loads(path.read_text())
        rows.setdefault(path.parent.parent.name, {})[path.parent.name[2:]] = scores(e["tuned"]["validation"])
        for ref in ("blind", "base"):  # the same items for every run: the last one read stands
            m = e[ref]["validation"]
            rows[f"*{ref}*"] = {**scores(m), "n": m["n"], "n_by_phrasing": {k: v["n"] for k, v in m["by_phrasing"].items()}}
    return rows


if __name__ == "__main__":
    out = {"what": __doc__.split("\n")[0], "command": "python docs/experiment/by_wording.py",
           "targets": {name: target(sweep) for name, sweep in SWEEPS.items()}}
    (DOCS / "experiment" / "diagnosis" / "v3.2-validation-by-wording.json").write_text(json.dumps(out, indent=1) + "\n")
