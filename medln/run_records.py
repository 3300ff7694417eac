"""A run folder's records read as data (medln.userfiles): a run folder may come from anywhere
(copied, unpacked, edited by hand, crafted), and what it records decides what gets loaded
(the base model, its precision, which layers stay unquantized). Each record is checked
field by field; a problem is one line naming the file and the field.

  config.json   {"config": TrainConfig fields, "base": medln.runs.BaseSpec fields, "family", ...}
  eval.json     {"status", "steps_done", "base": {split: metrics}, "tuned": {split: metrics}, ...}

Fields this version does not know are kept but not trusted (nothing reads them); known
fields must have their type and, where the config says so, their choices and bounds.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from .config import TrainConfig, check_field, type_problem
from .userfiles import FileError, Record, load_json

MAX_RECORD_BYTES = 16 * 2**20
DTYPES = ("float32", "float16", "bfloat16")


def read_run_config(run_path: str | Path) -> dict:
    """config.json of a run folder, checked (FileNotFoundError when there is none)."""
    path = Path(run_path) / "config.json"
    if not path.is_file() and not path.exists():
        raise FileNotFoundError(f"{Path(run_path)} is not a MedLN run folder (no config.json)")
    rec = Record(load_json(path, max_bytes=MAX_RECORD_BYTES), str(path))
    cfg = rec.sub("config")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in cfg:
            value = cfg.data[f.name]
            problem = type_problem(f.name, hints[f.name], value) or check_field(f, value)
            if problem:
                cfg.fail(f.name, problem.removeprefix(f"{f.name}: "))
    cfg.get("scope", str, max_len=64)
    for key in ("family", "backbone", "source"):
        rec.get(key, str, None, optional=True, max_len=4096)
    base = rec.sub("base", optional=True)
    if base is not None:
        check_base(base)
    return rec.data


def check_base(base: Record) -> None:
    """The recorded base (medln.runs.BaseSpec): what a reload builds."""
    from .precision import PRECISIONS

    base.get("backbone", str, max_len=1024)
    base.get("quant", str, "none", choices=("none", "4bit"))
    base.get("keep", list, [], items=str, max_len=100_000, optional=True)
    base.get("dtype", str, None, choices=DTYPES, optional=True)
    base.get("device", str, None, choices=("cpu", "cuda"), optional=True)
    base.get("trust_remote_code", bool, False)
    base.get("precision", str, "auto", choices=PRECISIONS)


def read_eval(run_path: str | Path) -> dict | None:
    """eval.json of a run folder, checked; None when the run has none (it is unfinished)."""
    path = Path(run_path) / "eval.json"
    if not path.exists():
        return None
    rec = Record(load_json(path, max_bytes=MAX_RECORD_BYTES), str(path))
    rec.get("status", str, None, optional=True, max_len=64)
    rec.get("steps_done", int, None, optional=True, lo=0)
    for which in ("base", "tuned"):
        splits = rec.sub(which, optional=True)
        if splits is not None:
            for split in splits.keys():
                splits.sub(split, optional=True)
    return rec.data


__all__ = ["FileError", "check_base", "read_eval", "read_run_config"]
