"""Phase 1 of a sweep (medln.compare.sweep): each scope's learning rate, chosen on validation
cells with the equal-effort grid of medln.compare.tuning, or taken from an earlier sweep.

The grid search runs in rounds: every scope's pending rates (its initial grid first, then one
rate past an edge) are one list of cells for the executor, so under Ray they all run at once;
the rates tried are the same as one scope after another would try. A cell finished before
(resume) is read back, not run again; under collect an unfinished one is listed as missing and
ends that scope's search.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from ..metrics import headline_for
from .cells import Cell, Lane, base_key, cell_score
from .tuning import Tuning

# `sweep` below is a medln.compare.sweep.Sweep (not imported: sweep.py imports this module).


def choose_rates(sweep) -> Iterator[dict]:
    """Phase 1: each scope's rate, chosen on validation cells (the test split is not loaded
    here), or taken from an earlier sweep's choice (lrs_from). Every scope's pending rates run
    as one round (at once under Ray); the next round holds the rates past an edge."""
    tuned = sweep.tuned
    if tuned and not sweep.tune_lr:
        sweep.lrs = {scope: rec["chosen"] for scope, rec in (tuned.get("scopes") or {}).items() if rec.get("chosen")}
        sweep.val_info = tuned.get("split") or sweep.val_info
    if not sweep.tune_lr:
        return
    if tuned:
        # Tune only what the earlier sweep lacks; its rates came from the same grid, seed and
        # validation items (checked in start() and in tuning.reusable_tuning), so the effort is equal.
        for scope in sweep.runnable:
            rec = (tuned.get("scopes") or {}).get(scope)
            if rec and rec.get("chosen"):
                sweep.tuning[scope], sweep.lrs[scope] = {**rec, "reused": True}, rec["chosen"]
                sweep.reused.append(scope)
    lane = sweep.lane({"validation": sweep.val_tune}, None, bases={})
    seed = sweep.seeds[0]
    states: dict[str, Tuning] = {}
    for scope in (s for s in sweep.runnable if s not in sweep.reused):
        centre = dataclasses.replace(sweep.cfg, scope=scope).effective_lr
        states[scope] = Tuning(centre, sweep.grid)
        yield {"event": "tune_start", "scope": scope, "centre": centre, "n": len(sweep.val_tune)}

    def watch(cell, record, cfg):
        if sweep.progress and record.get("event") == "step" and record["step"] == cfg.steps:
            sweep.progress(0.0, f"tuning {cell.scope}: lr {cell.lr:g} trained")

    open_scopes = list(states)
    while open_scopes and not (sweep.stop is not None and sweep.stop.is_set()):
        cells = [Cell(scope, seed, lr, "validation", sweep.out / "tune" / scope / f"lr{lr:g}", tuning=True)
                 for scope in open_scopes for lr in states[scope].pending()]
        for record in sweep.execute(cells, lane, watch):
            if record["event"] == "cell_done":
                yield from _tune_point(sweep, states[record["cell"].scope], record)
            elif record["event"] != "cell_start":
                yield record
        for scope in [s for s in open_scopes if not states[s].pending()]:
            open_scopes.remove(scope)
            yield _tune_done(sweep, scope, states[scope], lane)
    for scope in open_scopes:  # stopped part-way: what was tried is recorded
        yield _tune_done(sweep, scope, states[scope], lane)


def _tune_point(sweep, state: Tuning, record: dict) -> Iterator[dict]:
    cell, row = record["cell"], record["row"]
    if record["how"] in ("not run", "missing"):  # stopped, or (collect) never finished: no score, no further rates
        state.halted = True
        if record["how"] == "missing":
            sweep.missing.append(cell.name)
        return
    if row["skipped"]:
        state.failed[cell.lr] = row["skipped"]
        yield {"event": "tune_run", "run_event": "failed", "scope": cell.scope, "lr": cell.lr, "reason": row["skipped"]}
    state.scores[cell.lr] = score = cell_score(row)
    yield {"event": "tune_point", "scope": cell.scope, "lr": cell.lr, "score": score}


def _tune_done(sweep, scope: str, state: Tuning, lane: Lane) -> dict:
    record = state.record()
    key = base_key(dataclasses.replace(sweep.cfg, scope=scope))
    record.update(centre=state.centre, metric=headline_for(s.task for s in sweep.val_tune),
                  split=sweep.val_info.get("split"), n=len(sweep.val_tune),
                  base=(lane.bases.get(key) or {}).get("validation"))
    sweep.tuning[scope] = record
    if record["chosen"] is not None:
        sweep.lrs[scope] = record["chosen"]
    sweep.save()
    return {"event": "tune_done", "scope": scope, **record}
