"""The typed configuration: the single source of truth for the CLI flags, the UI widgets
and the config.json saved with every run. Each field's `help` is its documentation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """Every problem with a config at once, one per line."""


def _f(default, help: str, **meta):
    """A field with its help and, for numbers, its valid range: `min`/`max` (inclusive unless
    named in `open`). validate(), the CLI, the app's widgets and its API all read the range
    from here (`bounds`), so no caller can be looser than another."""
    return field(default=default, metadata={"help": help, **meta})


def bounds(name: str, cls=None) -> dict:
    """{min, max, open} of a numeric field (for widgets: minimum/maximum)."""
    f = next(f for f in dataclasses.fields(cls or TrainConfig) if f.name == name)
    return {k: f.metadata[k] for k in ("min", "max", "open") if k in f.metadata}


def check_field(f: dataclasses.Field, value) -> str | None:
    """The problem with `value` for field `f` (type and range), or None."""
    meta = f.metadata
    if "min" not in meta and "max" not in meta:
        return None
    if value is None and f.default is None:
        return None
    whole = isinstance(meta.get("min", meta.get("max")), int)
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value != value:
        kind = "a whole number" if whole else "a number"
        return f"{f.name}: must be {kind}, got {value!r}"
    opened = meta.get("open", ())
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value <= lo if "min" in opened else value < lo):
        return f"{f.name}: must be {'>' if 'min' in opened else '>='} {lo}, got {value}"
    if hi is not None and (value >= hi if "max" in opened else value > hi):
        return f"{f.name}: must be {'<' if 'max' in opened else '<='} {hi}, got {value}"
    return None


@dataclass
class TrainConfig:
    backbone: str = _f("medln-tiny", "registry name (see `backbones`), hub id owner/name, or local folder")
    scope: str = _f("ln", "tuning scope (see `scopes`)")
    data: str = _f("sample", "data spec: sample, jsonl:PATH, vqa-rad:PATH, slake:PATH, pathvqa:PATH, iu-xray:PATH, hf:ID")
    split: str = _f("train", "split to train on")
    eval_split: str = _f("test", "split to evaluate base and tuned on ('' to skip evaluation)")
    ood_split: str = _f("source-test", "held-out out-of-domain split for retention ('' to skip; sample data only)")
    quant: str = _f("none", "weights: none (fp32 on CPU, bf16 on GPU) or 4bit (NF4)", choices=("none", "4bit"))
    steps: int = _f(200, "optimizer steps (the default: ~30 s for medln-tiny on 2 CPU cores)", min=1, max=100_000)
    lr: float | None = _f(None, "peak learning rate; default: the backbone's measured one for the scope, else the scope's own",
                          min=0.0, max=1.0, open=("min", "max"))
    batch_size: int = _f(8, "samples per micro-batch (per process)", min=1, max=512)
    grad_accum: int = _f(1, "micro-batches per optimizer step", min=1, max=1024)
    warmup: float = _f(0.1, "fraction of steps with linear warm-up", min=0.0, max=1.0, open=("max",))
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0, max=1.0)
    grad_checkpointing: bool = _f(False, "recompute activations in backward (less memory, ~30%% slower)")
    max_length: int = _f(512, "longest token sequence (prompt with image tokens + answer); longer records are refused",
                         min=8, max=32_768)
    lora_r: int = _f(8, "LoRA rank (scope lora)", min=1, max=1024)
    lora_alpha: int = _f(16, "LoRA alpha (scope lora)", min=1, max=4096)
    seed: int = _f(0, "random seed (data order, initialisation)", min=0, max=2**32 - 1)
    eval_limit: int = _f(0, "evaluate at most this many samples per split (0: all)", min=0, max=1_000_000)
    eval_batch_size: int = _f(16, "batch size for generation", min=1, max=512)
    skip_bad: bool = _f(False, "skip bad data records (reported), instead of failing on the first")
    trust_remote_code: bool = _f(False, "allow custom model code from the hub (off unless you trust the repo)")

    def validate(self) -> "TrainConfig":
        from .scopes import SCOPES_BY_NAME

        problems = []
        if self.scope not in SCOPES_BY_NAME:
            problems.append(f"scope: unknown {self.scope!r} (choose from {', '.join(SCOPES_BY_NAME)})")
        if self.quant not in ("none", "4bit"):
            problems.append(f"quant: must be none or 4bit, got {self.quant!r}")
        if self.scope == "full" and self.quant == "4bit":
            problems.append("scope 'full' with quant '4bit': 4-bit weights cannot be trained; use --quant none")
        problems += [p for f in dataclasses.fields(self) if (p := check_field(f, getattr(self, f.name)))]
        if len(problems) == 1:
            raise ConfigError(f"invalid config: {problems[0]}")
        if problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
        return self

    @property
    def effective_lr(self) -> float:
        from .backbones import default_lr

        return self.lr if self.lr is not None else default_lr(self.backbone, self.scope)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def add_arguments(parser, cls=TrainConfig, only: tuple[str, ...] | None = None) -> None:
    """argparse flags built from the dataclass: --batch-size for batch_size, with its help."""
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = {"help": f.metadata.get("help", ""), "default": f.default, "dest": f.name}
        if f.type in (bool, "bool"):
            kw["action"] = "store_true"
        else:
            kw["type"] = {"int": int, "float": float, "float | None": float, "str": str}.get(str(f.type), str)
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kw)


def from_args(args, cls=TrainConfig) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}).validate()
