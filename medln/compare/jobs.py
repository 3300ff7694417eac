"""A sweep as separate jobs: one cell per job (`compare --cell`), then the folder collected
into the sweep's files (`compare --collect DIR`). A Slurm-style job array runs the same
command in every task with its own `--cell $SLURM_ARRAY_TASK_ID`; docs/scale.md shows it.

Every --cell job claims the folder as --resume does (sweep.json written by the first, checked
by the others: the same options or a refusal naming the field), skips its cell if it already
finished (a requeued job costs nothing) and otherwise runs it from scratch. It writes only its
cell's run folder; `collect` reads whatever cells finished, lists the planned ones that did
not as missing, and writes results.json, results.csv, TABLE.md and figures.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..config import ConfigError
from .folder import read_options
from .options import CompareConfig
from .rates import choose_rates
from .sweep import parse_scopes, plan, run_cells, start, sweep_records, test_cells


def collect(out: str | Path, *, command: str | None = None) -> Iterator[dict]:
    """The sweep's files from the cells in `out` that finished; runs nothing. The options come
    from out/sweep.json. Yields the records compare() yields; the done record's "missing" lists
    the cells without a finished run (also in results.json and TABLE.md)."""
    sweep = start(read_options(Path(out)), command=command, mode="collect")
    yield from sweep_records(sweep)


def cell_list(options: CompareConfig) -> list[str]:
    """The test cells of a sweep, in the order --cell numbers them: seed by seed, scope by scope."""
    seeds = list(dict.fromkeys(options.seed_list()))
    return [c.name for c in plan(parse_scopes(options.scopes), seeds, Path(options.out), {}, options.eval_split)]


def pick(names: list[str], which: str) -> int:
    """--cell N (0-based, as a job array numbers its tasks) or --cell SCOPE/seedK -> its index."""
    which = which.strip()
    if which.isdigit():
        if int(which) >= len(names):
            raise ConfigError(f"--cell {which}: this sweep has {len(names)} cells (0 to {len(names) - 1})")
        return int(which)
    wanted = which.removeprefix("runs/").strip("/")
    for i, name in enumerate(names):
        if name.removeprefix("runs/") == wanted:
            return i
    raise ConfigError(f"--cell {which}: no such cell; give 0 to {len(names) - 1} or one of "
                      + ", ".join(n.removeprefix("runs/") for n in names[:6]) + ("…" if len(names) > 6 else ""))


def run_one(options: CompareConfig, which: str, *, stop=None, command: str | None = None) -> Iterator[dict]:
    """One test cell of the sweep `options` describes, as its own job. Rates must be known
    without tuning here (--lr, the registry defaults, or --lrs-from an earlier --tune-lr sweep):
    the grid search decides its next rate from the last scores, which a job array cannot."""
    if options.tune_lr:
        raise ConfigError("--cell runs one cell at a known rate, and --tune-lr chooses rates from earlier cells: "
                          "tune first (compare --tune-lr, --executor ray for parallel), then --lrs-from its results.json")
    index = pick(cell_list(options), which)
    sweep = start(options, stop=stop, command=command, mode="cell")
    try:
        yield from choose_rates(sweep)  # with --lrs-from: the earlier choice; nothing runs
        cell = test_cells(sweep)[index]
        yield {"event": "cell_job", "cell": cell.name, "index": index, "of": len(test_cells(sweep)),
               "out": str(sweep.out)}
        yield from run_cells(sweep, [cell])
    finally:
        sweep.executor.close()
    yield {"event": "done", "status": sweep.status, "results": None, "rows": sweep.rows, "cell": cell.name}
