"""A sweep's options as one dataclass: TrainConfig's shared budget (every scope trains with
it) plus the sweep's own fields. `medln compare` builds its flags from it, the app and the
library pass it to compare(); its `scope` is not an option (`scopes` lists them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import TrainConfig, _f
from ..methods import scope_names
from .tuning import Grid


@dataclass(kw_only=True)
class CompareConfig(TrainConfig):
    scopes: str = _f(",".join(scope_names()), "comma-separated scopes")
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

    def train_config(self) -> TrainConfig:
        """The shared budget alone, as every run of the sweep starts from it."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def seed_list(self) -> list[int]:
        """--seed, --seed+1, ... (--seeds of them; at least --seed itself)."""
        return list(range(self.seed, self.seed + self.seeds)) or [self.seed]

    def grid(self) -> Grid:
        return Grid(points=self.grid_points, cap=self.grid_cap)
