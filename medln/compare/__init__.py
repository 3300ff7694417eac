"""Comparing tuning scopes with the same budget: a sweep of cells, its protocol and its report.

    options.py   CompareConfig: the sweep's options as one dataclass (TrainConfig's budget + its own)
    sweep.py     compare(): start, choose_rates, run_cells, finish
    cells.py     Cell (scope, seed, rate, split) and run_cell(), the one helper that runs and folds a cell
    rates.py     choose_rates(): the tuning phase as rounds of validation cells
    executors.py who runs the cells: local (one after another) or Ray tasks
    folder.py    the sweep's folder: sweep.json, finished cells read back (resume, collect)
    jobs.py      one cell as its own job (--cell) and collect (--collect DIR)
    tuning.py    equal-effort learning-rate grids, on validation only
    protocol.py  the validation split and the reference rows (base model, image-blind baseline)
    stats.py     spread over seeds: mean, sd, 95 % intervals, "within noise"
    summary.py   per-scope summaries and the verdict in words
    report.py    results.csv, TABLE.md, figures.html, the console table
    cli.py       `medln compare`
"""

from .cells import Cell, base_key, retention, run_cell, steady
from .jobs import collect, run_one
from .options import CompareConfig
from .protocol import split_validation
from .report import format_bytes, format_table, write_csv, write_figures
from .sweep import ALL_SCOPES, compare, parse_scopes

__all__ = ["ALL_SCOPES", "Cell", "CompareConfig", "base_key", "collect", "compare", "format_bytes", "format_table",
           "parse_scopes", "retention", "run_cell", "run_one", "split_validation", "steady", "write_csv",
           "write_figures"]
