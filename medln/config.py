"""The typed configuration: the single source of truth for the CLI flags, the UI widgets
and the config.json saved with every run. Each field's `help` is its documentation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """Every problem with a config at once, one per line."""


def _f(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    backbone: str = _f("medln-tiny", "registry name (see `backbones`), hub id owner/name, or local folder")
    scope: str = _f("ln", "tuning scope (see `scopes`)")
    data: str = _f("sample", "data spec: sample, jsonl:PATH, vqa-rad:PATH, slake:PATH, pathvqa:PATH, iu-xray:PATH, hf:ID")
    split: str = _f("train", "split to train on")
    eval_split: str = _f("test", "split to evaluate base and tuned on ('' to skip evaluation)")
    ood_split: str = _f("source-test", "held-out out-of-domain split for retention ('' to skip; sample data only)")
    quant: str = _f("none", "weights: none (fp32 on CPU, bf16 on GPU) or 4bit (NF4)", choices=("none", "4bit"))
    steps: int = _f(200, "optimizer steps (the default: ~30 s for medln-tiny on 2 CPU cores)")
    lr: float | None = _f(None, "peak learning rate; default: the backbone's measured one for the scope, else the scope's own")
    batch_size: int = _f(8, "samples per micro-batch (per process)")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    warmup: float = _f(0.1, "fraction of steps with linear warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_checkpointing: bool = _f(False, "recompute activations in backward (less memory, ~30%% slower)")
    max_length: int = _f(512, "truncate token sequences to this length")
    lora_r: int = _f(8, "LoRA rank (scope lora)")
    lora_alpha: int = _f(16, "LoRA alpha (scope lora)")
    ln_lr: float | None = _f(None, "learning rate of the norms in scope ln-lora (--lr sets the LoRA part's); "
                                   "default: the backbone's rate for scope ln")
    seed: int = _f(0, "random seed (data order, initialisation)")
    eval_limit: int = _f(0, "evaluate at most this many samples per split (0: all)")
    eval_batch_size: int = _f(16, "batch size for generation")
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
        for name in ("steps", "batch_size", "grad_accum", "max_length", "lora_r", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not (0 < self.lr < 1):
            problems.append(f"lr: must be in (0, 1), got {self.lr}")
        if self.ln_lr is not None and not (0 < self.ln_lr < 1):
            problems.append(f"ln_lr: must be in (0, 1), got {self.ln_lr}")
        if not 0 <= self.warmup < 1:
            problems.append(f"warmup: must be in [0, 1), got {self.warmup}")
        if self.eval_limit < 0:
            problems.append(f"eval_limit: must be >= 0, got {self.eval_limit}")
        if problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
        return self

    @property
    def effective_lr(self) -> float:
        from .backbones import default_lr

        return self.lr if self.lr is not None else default_lr(self.backbone, self.scope)

    @property
    def effective_ln_lr(self) -> float:
        """The norms' rate in scope ln-lora."""
        from .backbones import default_lr

        return self.ln_lr if self.ln_lr is not None else default_lr(self.backbone, "ln")

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
