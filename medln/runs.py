"""The run folder contract: runs/<id>/ is self-describing.

  config.json    the TrainConfig ("config"), the base exactly as it was built ("base":
                 backbone, quant, projections kept unquantized, dtype) and the start record
                 (family, counts)
  metrics.jsonl  one JSON object per training record, appended as training goes; every
                 record has an `event` (medln.train.EVENTS)
  adapter/       peft adapter (adapter_config.json + adapter_model.safetensors + a model card
                 README.md), or for scope 'full' a safetensors checkpoint
  eval.json      base and tuned metrics; written LAST: a run folder is complete iff it has it

Every file is written to a temporary name and renamed into place, and adapter/ is saved
into adapter.tmp/ first, so a crash mid-write never leaves a half-written file that looks
complete.

`load_run(run_dir)` is the one way back from a folder to a model: the CLI, the app's model
cache (medln.serve) and library users all rebuild the base from the recorded `base` and
attach the adapter through it, so nothing else re-derives how a run was trained.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
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


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class BaseSpec:
    """How a base model was built, so it can be built again exactly (and a cache key).

    `keep`: linear layers left unquantized under 4-bit because the scope trains them as
    whole weights (Linear4bit weights take no gradient); an adapter of such a run holds
    [out, in] weights for them and cannot load onto their packed 4-bit form.
    `dtype`/`device`: the weights' dtype on the device kind that trained; a reload on the
    same kind of device uses it, another kind uses its own default (fp32 CPU, bf16 GPU)."""

    backbone: str  # registry name, hub id, or absolute folder
    quant: str = "none"
    keep: tuple[str, ...] = ()
    dtype: str | None = None
    device: str | None = None  # "cpu" | "cuda" of the training run
    trust_remote_code: bool = False

    def effective_dtype(self, device: str | None = None) -> str:
        """The dtype a load on `device` (default: CUDA if present) uses."""
        from .backbones import default_dtype

        device = device or _default_device()
        if self.dtype and self.device is not None and device.split(":")[0] == self.device:
            return self.dtype
        return default_dtype(self.backbone, device)

    def load(self, device: str | None = None):
        from .backbones import load_backbone

        device = device or _default_device()
        return load_backbone(self.backbone, quant=self.quant, device=device, keep_full_precision=list(self.keep),
                             dtype=self.effective_dtype(device), trust_remote_code=self.trust_remote_code)

    def to_dict(self) -> dict:
        return {**asdict(self), "keep": list(self.keep)}

    @classmethod
    def from_dict(cls, d: dict) -> "BaseSpec":
        return cls(**{**d, "keep": tuple(d.get("keep") or ())})


def base_spec(run_dir: str | Path) -> BaseSpec:
    """The recorded base of a run. Runs written before `base` was recorded: rebuilt from their
    config (a 4-bit attn/ffn run kept exactly its adapter's target modules unquantized)."""
    from .adapters import is_peft_adapter, peft_targets
    from .scopes import get_scope

    run = RunDir(Path(run_dir))
    try:
        config = run.config()
    except FileNotFoundError:
        raise FileNotFoundError(f"{run.path} is not a MedLN run folder (no config.json)") from None
    if "base" in config:
        return BaseSpec.from_dict(config["base"])
    cfg = config.get("config", {})
    keep: tuple[str, ...] = ()
    if cfg.get("quant") == "4bit" and get_scope(cfg.get("scope", "ln")).trains_whole_linears and is_peft_adapter(run.adapter_dir):
        keep = peft_targets(run.adapter_dir)
    return BaseSpec(cfg.get("backbone") or config.get("source"), cfg.get("quant", "none"), keep,
                    trust_remote_code=bool(cfg.get("trust_remote_code")))


def attach_run(backbone, run_dir: str | Path):
    """A run's tuned model on an already-loaded base (built from the run's BaseSpec): the peft
    adapter wraps it (one copy of the base weights; `adapters.adapter_off` gives base
    answers). Scope 'full' saved a whole checkpoint, which loads as a second model."""
    from .adapters import attach, is_peft_adapter

    run = RunDir(Path(run_dir))
    if not run.adapter_dir.is_dir():
        raise FileNotFoundError(f"{run.path} has no adapter/ folder (not a finished MedLN run?)")
    if is_peft_adapter(run.adapter_dir):
        return attach(backbone.model, run.adapter_dir)
    from .backbones import model_class

    device = next(backbone.model.parameters()).device
    return model_class(backbone.family).from_pretrained(run.adapter_dir, device_map={"": str(device)},
                                                        dtype=next(backbone.model.parameters()).dtype,
                                                        use_safetensors=True)


def load_run(run_dir: str | Path, *, device: str | None = None):
    """A run folder -> a Backbone whose `model` is the tuned model, its base rebuilt exactly
    as trained. For peft scopes `with adapter_off(bb.model):` runs the base weights."""
    import dataclasses

    bb = base_spec(run_dir).load(device)
    return dataclasses.replace(bb, model=attach_run(bb, run_dir).eval())
