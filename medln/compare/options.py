"""A sweep's options as one dataclass: TrainConfig's shared budget (every scope trains with
it) plus the sweep's own fields. `medln compare` builds its flags from it, the app and the
library pass it to compare(); its `scope` is not an option (`scopes` lists them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ConfigError, TrainConfig, _f, raise_problems
from ..methods import scope_names
from ..trackers import REPORT_TO
from .tuning import Grid

MAX_SEEDS = 100  # a sweep of more seeds than this is not a comparison anyone waits for


@dataclass(kw_only=True)
class CompareConfig(TrainConfig):
    scopes: str = _f(",".join(scope_names()), "comma-separated scopes")
    ood: str = _f("", "data spec of a second dataset for out-of-domain retention (its --eval-split split); "
                      "default: the --ood-split split of --data")
    out: str = _f(help="folder for results.json, results.csv, TABLE.md, figures.html and runs/")
    seeds: int = _f(1, "train every scope with this many seeds (--seed, --seed+1, ...): mean ± sd and a 95 %% "
                       "interval per metric (use >= 3 to compare)", min=1, max=MAX_SEEDS)
    tune_lr: bool = _f(False, "choose each scope's learning rate on the validation split first (the same-size log "
                              "grid per scope; the test split is not read while tuning)")
    grid_points: int = _f(Grid.points, "rates in each scope's initial grid (--tune-lr)", min=1, max=12)
    grid_cap: int = _f(Grid.cap, "most rates per scope, edge extensions included (--tune-lr); at least --grid-points",
                       min=1, max=30)
    lrs_from: str = _f("", "results.json of an earlier `compare --tune-lr` (same backbone, data, budget): use the "
                           "rates it chose on validation; with --tune-lr, tune only the scopes it lacks (same grid)")
    # How the sweep runs, not what it measures (medln.compare.folder.RUN_ONLY): free to differ on --resume.
    resume: bool = _f(False, "finish the sweep in --out: its finished cells are kept as they are, the others run "
                             "from scratch; the options must match its sweep.json")
    executor: str = _f("local", "who runs the cells: local (one after another, here) or ray (each cell a Ray task, "
                                "one GPU each where the cluster has GPUs; pip install 'medln[ray]')",
                       choices=("local", "ray"))
    ray_address: str = _f("", "--executor ray: a running cluster's address (ray start --head prints it); "
                              "default: start a local Ray for this command")
    ray_cpus: int = _f(1, "--executor ray without GPUs: CPUs (torch threads) each cell asks for", min=1, max=1024)
    report_to: str = _f("none", "mirror every run's config, loss, learning rate and eval metrics to a tracker "
                                "(medln.trackers)", choices=REPORT_TO)

    def train_config(self) -> TrainConfig:
        """The shared budget alone, as every run of the sweep starts from it."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def validate(self) -> "CompareConfig":
        """TrainConfig's checks, the sweep's own bounds (seeds, grid), and what they imply
        together: checked before any list is built from them."""
        problems = []
        try:
            super().validate()
        except ConfigError as e:
            problems += [line.strip() for line in str(e).removeprefix("invalid config:").strip().splitlines()]
        if not problems and self.seed + self.seeds - 1 > 2**32 - 1:
            problems.append(f"seeds: --seed {self.seed} + --seeds {self.seeds} runs past the largest seed, 2**32 - 1")
        if not problems and self.grid_cap < self.grid_points:
            problems.append(f"grid_cap: must be >= grid_points ({self.grid_points}), got {self.grid_cap}")
        raise_problems(problems)
        return self

    def seed_list(self) -> list[int]:
        """--seed, --seed+1, ... (--seeds of them, bounded by validate())."""
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= MAX_SEEDS):
            raise ConfigError(f"invalid config: seeds: must be between 1 and {MAX_SEEDS}, got {self.seeds!r}")
        return list(range(self.seed, self.seed + self.seeds))

    def grid(self) -> Grid:
        return Grid(points=self.grid_points, cap=self.grid_cap)
