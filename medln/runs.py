"""The run folder contract: runs/<id>/ is self-describing.

  config.json    the TrainConfig plus what was resolved (backbone source, family, counts)
  metrics.jsonl  one JSON object per training log record, appended as training goes
  adapter/       peft adapter (adapter_config.json + adapter_model.safetensors), or for
                 scope 'full' a safetensors checkpoint
  eval.json      base and tuned metrics; written LAST: a run folder is complete iff it has it

Every file is written to a temporary name and renamed into place, and adapter/ is saved
into adapter.tmp/ first, so a crash mid-write never leaves a half-written file that looks
complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


def new_run_id(backbone: str, scope: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(backbone).name)[:40]
    return f"{stamp}-{slug}-{scope}-{os.urandom(2).hex()}"


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, path: str | Path, config: dict) -> "RunDir":
        path = Path(path)
        if (path / "config.json").exists():
            raise FileExistsError(f"{path} already holds a run; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        write_json_atomic(path / "config.json", config)
        return run

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    def update_config(self, **extra) -> None:
        config = self.config()
        config.update(extra)
        write_json_atomic(self.path / "config.json", config)

    def log(self, record: dict) -> None:
        # One line per write with a flush: a crash loses at most the line being written,
        # and readers skip a partial last line (see metrics()).
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def save_adapter(self, model) -> None:
        tmp = self.path / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        old = self.path / "adapter.old"
        if self.adapter_dir.exists():
            os.replace(self.adapter_dir, old)
        os.replace(tmp, self.adapter_dir)
        shutil.rmtree(old, ignore_errors=True)

    def write_eval(self, result: dict) -> None:
        write_json_atomic(self.path / "eval.json", result)

    # ----------------------------------------------------------------- reading

    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text(encoding="utf-8"))

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a partial last line from a crash
        return rows

    def eval(self) -> dict | None:
        path = self.path / "eval.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    @property
    def complete(self) -> bool:
        return (self.path / "eval.json").exists() and self.adapter_dir.exists()


def load_run_model(backbone, run_path: str | Path):
    """Attach a run's adapter to an already-loaded base model (one copy of the base
    weights: `disable_adapter()` still gives base answers). For scope 'full' the run holds a
    whole checkpoint, which loads as a second model: returned as is."""
    run = RunDir(Path(run_path))
    if not run.adapter_dir.is_dir():
        raise FileNotFoundError(f"{run.path} has no adapter/ folder (not a finished MedLN run?)")
    if (run.adapter_dir / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(backbone.model, run.adapter_dir)
    from .backbones import model_class

    device = next(backbone.model.parameters()).device
    return model_class(backbone.family).from_pretrained(run.adapter_dir, device_map={"": str(device)}, use_safetensors=True)
