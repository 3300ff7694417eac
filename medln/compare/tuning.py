"""Equal-effort learning-rate tuning, on validation data only.

Every scope gets the same-size log grid around its default rate (half-decade steps; less any
rate of 1 or more, which the config refuses and which would only fail). While
the best validation score sits on an edge of the grid, one more rate is tried past that
edge, up to a cap on the number of rates per scope, so no scope is judged at a rate the
grid merely failed to reach, and no scope gets more tries than another unless its optimum
lies further out (the record says how far each went and whether the cap stopped it).

`tune_scope` is a generator: it yields the progress records of the runs it starts and
returns (StopIteration value) the record kept in results.json:
    {"grid": [rates tried, ascending], "scores": {rate: validation score}, "chosen": rate,
     "metric": name, "split": "validation", "n": items, "capped": bool,
     "failed": {rate: why}  (only when a run failed)}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

from ..userfiles import short


LR_MAX = 1.0  # TrainConfig takes rates in (0, 1): a grid never proposes one it would refuse


@dataclass(frozen=True)
class Grid:
    points: int = 3  # rates in the initial grid, centred on the scope's default
    step: float = math.sqrt(10)  # ratio between neighbouring rates (half a decade)
    cap: int = 6  # most rates tried per scope, extensions included

    def initial(self, centre: float) -> list[float]:
        """The grid around `centre`, less any rate TrainConfig would refuse (a centre near 1)."""
        half = (self.points - 1) / 2
        rates = [_round(centre * self.step ** (i - half)) for i in range(self.points)]
        return [lr for lr in rates if lr < LR_MAX]

    def describe(self) -> dict:
        return {"points": self.points, "step": round(self.step, 4), "cap": self.cap,
                "rule": "log grid centred on the scope's default rate; one rate past an edge while the best "
                        "validation score sits on it, up to the cap"}


def _round(lr: float) -> float:
    """Three significant digits: rates read as 3.16e-03, not 0.0031622776601683794."""
    return float(f"{lr:.3g}")


def past_limit(rate: float, grid_step: float) -> bool:
    """Whether the next rate up from `rate` is one TrainConfig refuses (so a search ends there)."""
    return _round(rate * grid_step) >= LR_MAX


def at_limit(chosen: float | None, scores: dict[float, float | None], grid_step: float) -> bool:
    """`chosen` is the highest rate that scored, and no rate past it is allowed: the optimum may lie beyond."""
    top = max((lr for lr, v in scores.items() if v is not None), default=None)
    return chosen is not None and chosen == top and past_limit(top, grid_step)


def best_rate(scores: dict[float, float | None]) -> float:
    """Highest score; failed runs (None) count as worst; ties go to the lower rate."""
    return max(sorted(scores), key=lambda lr: -math.inf if scores[lr] is None else scores[lr])


def next_rate(scores: dict[float, float | None], grid: Grid) -> float | None:
    """The rate past the edge the best sits on, or None when the best is inside the grid."""
    rates = sorted(scores)
    best = best_rate(scores)
    if best == rates[-1]:
        nxt = _round(rates[-1] * grid.step)
        return nxt if nxt < LR_MAX else None
    if best == rates[0]:
        return _round(rates[0] / grid.step)
    return None


class Tuning:
    """One scope's search as rounds, so a sweep can run every scope's next rates at once (Ray):
    `pending()` is the initial grid, then one rate past the edge the best sits on, until the
    best is inside the grid or the cap is reached; `scores` fill in as cells finish. The rates
    tried are the same whatever order the cells run in."""

    def __init__(self, centre: float, grid: Grid):
        self.centre, self.grid = centre, grid
        self.scores: dict[float, float | None] = {}
        self.failed: dict[float, str] = {}  # why a rate has no score (its run's error), for the record
        self.halted = False  # stopped, or a cell missing (collect): no further rates

    def pending(self) -> list[float]:
        if self.halted:
            return []
        initial = [lr for lr in self.grid.initial(self.centre) if lr not in self.scores]
        if initial:
            return initial
        if len(self.scores) >= self.grid.cap:
            return []
        nxt = next_rate(self.scores, self.grid) if self.scores else None
        return [] if nxt is None or nxt in self.scores else [nxt]

    def record(self) -> dict:
        scores = self.scores
        if not scores:
            return {"grid": [], "scores": {}, "chosen": None, "capped": False}
        best = best_rate(scores)
        out = {"grid": sorted(scores), "scores": {str(lr): scores[lr] for lr in sorted(scores)},
               "chosen": best, "capped": next_rate(scores, self.grid) is not None,
               "at_limit": at_limit(best, scores, self.grid.step)}
        if self.failed:
            out["failed"] = {str(lr): why for lr, why in sorted(self.failed.items())}
        return out


RunOne = Callable[[float], Generator[dict, None, "float | None"]]


def tune_scope(run_one: RunOne, centre: float, grid: Grid = Grid(), *, stop=None) -> Generator[dict, None, dict]:
    """Try the grid around `centre` with `run_one(lr)` (a generator of progress records that
    returns the validation score), extending past edges as described above, one rate at a time."""
    state = Tuning(centre, grid)
    while rates := state.pending():
        for lr in rates:
            if stop is not None and stop.is_set():
                return state.record()
            state.scores[lr] = yield from run_one(lr)
    return state.record()


__all__ = ["Grid", "Tuning", "best_rate", "next_rate", "tune_scope"]


# What an earlier sweep's rates are only comparable under: the same model, data and budget.
REUSE_KEYS = ("backbone", "data", "split", "quant", "precision", "steps", "batch_size", "grad_accum", "warmup",
              "weight_decay", "max_length", "lora_r", "lora_alpha", "ln_lr")


def reusable_tuning(results: dict, config: dict, source: str, grid: Grid | None = None) -> dict:
    """The "tuning" record of an earlier `compare --tune-lr` results.json, checked against
    this sweep's `config` (TrainConfig.to_dict()): a rate chosen for another model, data or
    budget says nothing here, so any difference is refused, naming the field. With `grid`
    (this sweep tunes the scopes the record lacks), the grids must match too: equal effort.
    """
    from ..config import ConfigError

    tuned = results.get("tuning")
    if not tuned or not tuned.get("scopes"):
        raise ConfigError(f"{source}: no 'tuning' record (run compare --tune-lr first)")
    # The options as given (results["backbone"] is the resolved name, a path for a local folder);
    # the top-level copies only where an older file lacks "config".
    before = {"data": results.get("data"), "quant": results.get("quant"), "steps": results.get("steps"),
              **(results.get("config") or {})}
    before.setdefault("backbone", results.get("backbone"))
    for key in REUSE_KEYS:
        if key in before and before[key] != config.get(key):
            raise ConfigError(f"{source}: its rates were tuned with {key}={short(before[key])}, this sweep has "
                              f"{key}={short(config.get(key))}; tune again (--tune-lr) or match it")
    if grid is not None and tuned.get("grid") and {k: v for k, v in tuned["grid"].items() if k != "rule"} != \
            {k: v for k, v in grid.describe().items() if k != "rule"}:
        raise ConfigError(f"{source}: its grid {short(tuned['grid'], 120)} differs from this sweep's (--grid-points, --grid-cap); "
                          "every scope must get the same-size grid")
    if grid is not None:  # a scope whose tuning was stopped part-way had less effort: tune it again here
        tuned = {**tuned, "scopes": {scope: rec for scope, rec in tuned["scopes"].items()
                                     if len(rec.get("grid") or []) >= grid.points}}
    return {**tuned, "reused_from": source}


def read_lrs_from(path: str) -> dict:
    """An earlier sweep's results.json (--lrs-from), read as data: the fields reusable_tuning
    and the sweep read are checked (types, rates in (0, 1)), each refusal naming the field."""
    from ..userfiles import Record, load_json

    rec = Record(load_json(path, what="--lrs-from", max_bytes=64 * 2**20), f"--lrs-from {path}")
    for key in ("data", "quant", "backbone"):
        rec.get(key, str, None, optional=True, max_len=4096)
    rec.get("steps", int, None, optional=True)
    rec.sub("config", optional=True)
    tuning = rec.sub("tuning", optional=True)
    if tuning is None:
        return rec.data
    tuning.get("seed", int, None, optional=True)
    tuning.get("n", int, None, optional=True, lo=0)
    split = tuning.sub("split", optional=True)
    if split is not None:
        split.get("n", int, None, optional=True, lo=0)
    grid = tuning.sub("grid", optional=True)
    if grid is not None:
        grid.get("points", int, None, optional=True, lo=1, hi=1000)
        grid.get("cap", int, None, optional=True, lo=1, hi=1000)
        grid.get("step", float, None, optional=True)
    scopes = tuning.sub("scopes", optional=True)
    for scope in (scopes.keys() if scopes else ()):
        if len(scope) > 64:
            scopes.fail(scope, "not a scope name")
        one = scopes.sub(scope)
        chosen = one.get("chosen", float, None, optional=True)
        if chosen is not None and not 0 < chosen < 1:
            one.fail("chosen", f"a learning rate must be in (0, 1), got {short(chosen)}")
        one.get("grid", list, [], items=float, max_len=1000, optional=True)
    return rec.data
