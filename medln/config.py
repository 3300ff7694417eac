"""The typed configuration: the single source of truth for the CLI flags, the UI widgets
and the config.json saved with every run.

Each field carries its documentation and rules in `metadata`: `help` (shown by --help and
the app), `choices`, and bounds `min` / `max` (inclusive) or `gt` / `lt` (exclusive), which
validate() checks for the CLI, the app and the API alike. Every command's flags are built
from these dataclasses (add_arguments): defaults and help in --help, booleans as
--x / --no-x, and `--config run.json|yaml` supplies values that flags then override; a run's
saved config.json replays it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import MISSING, dataclass, field

from .methods import default_batch, default_lr, find_scope, scope_names
from .methods.lora import ALPHA, RANK
from .trackers import REPORT_TO
from .userfiles import short

MAX_TEXT = 4096  # any text option (a path, a data spec, a list of scopes) unless its field says `max_len`


# How many samples per split base and tuned are scored on by default, in the CLI (train, eval,
# compare) and the app alike: 200 (stratified by task) gives the bundled test splits 23 reports
# and 57 closed questions, so every report row rests on more than 20 items (medln.ui.views.MIN_N).
EVAL_LIMIT = 200


class ConfigError(ValueError):
    """Every problem with a config at once, one per line."""


def raise_problems(problems: list[str]) -> None:
    """One ConfigError for every problem a validate() found: one line, or one per problem."""
    if len(problems) == 1:
        raise ConfigError(f"invalid config: {problems[0]}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _f(default=MISSING, help: str = "", **meta):
    """A documented field; without a default it is a required flag. Numbers carry their valid
    range: `min`/`max` (inclusive unless named in `open`). validate(), the CLI, the app's widgets
    and its API all read the range from here (`bounds`), so no caller can be looser than another.
    Text carries `max_len` (default MAX_TEXT): a 100,000-character value is named, not tried.
    `positional=True`: a command-line argument, not a flag; `flag="--with"`: another flag name;
    `aliases=("--limit",)`: old names that still work, hidden from --help (one name per option
    across commands; the old spelling is kept for scripts and --config files)."""
    return field(default=default, metadata={"help": help, **meta})


def bounds(name: str, cls=None) -> dict:
    """{min, max, open} of a numeric field (for widgets: minimum/maximum)."""
    f = next(f for f in dataclasses.fields(cls or TrainConfig) if f.name == name)
    return {k: f.metadata[k] for k in ("min", "max", "open") if k in f.metadata}


def check_field(f: dataclasses.Field, value) -> str | None:
    """The problem with `value` for field `f` (choices, length and range), or None."""
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        return f"{f.name}: must be one of {', '.join(map(str, meta['choices']))}, got {short(value)}"
    if isinstance(value, str) and len(value) > meta.get("max_len", MAX_TEXT):
        return f"{f.name}: at most {meta.get('max_len', MAX_TEXT):,} characters, got {len(value):,}"
    if "min" not in meta and "max" not in meta:
        return None
    if value is None and f.default is None:
        return None
    whole = isinstance(meta.get("min", meta.get("max")), int) and not isinstance(meta.get("min", meta.get("max")), bool)
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value != value:
        kind = "a whole number" if whole else "a number"
        return f"{f.name}: must be {kind}, got {short(value)}"
    opened = meta.get("open", ())
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value <= lo if "min" in opened else value < lo):
        return f"{f.name}: must be {'>' if 'min' in opened else '>='} {lo}, got {short(value)}"
    if hi is not None and (value >= hi if "max" in opened else value > hi):
        return f"{f.name}: must be {'<' if 'max' in opened else '<='} {hi}, got {short(value)}"
    return None


KIND_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def type_problem(name: str, tp, value) -> str | None:
    """The problem with `value` for a field annotated `tp` (str, int, float, bool, X | None,
    tuple[str, ...]): a list where text belongs, text where a number does, ... or None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        if value is None:
            return None
        tp = args[0]
    if typing.get_origin(tp) in (list, tuple):
        item = typing.get_args(tp)[0]
        if isinstance(value, (list, tuple)) and all(isinstance(v, item) for v in value):
            return None
        return f"{name}: must be a list of {KIND_WORDS.get(item, item.__name__)}, got {short(value)}"
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(tp)
    if ok is None or ok(value):
        return None
    return f"{name}: must be {KIND_WORDS[tp]}, got {short(value)}"


def bound_problems(obj) -> list[str]:
    """Every field of a config dataclass of the wrong type or outside its metadata rules."""
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        problem = type_problem(f.name, hints[f.name], value)
        if problem is None and (f.default is not MISSING or value is not None):
            problem = check_field(f, value)
        if problem:
            problems.append(problem)
    return problems


@dataclass
class TrainConfig:
    backbone: str = _f("medln-tiny", "registry name (see `backbones`), hub id owner/name, or local folder",
                       max_len=1024)
    scope: str = _f("ln", "tuning scope (see `scopes`)")
    data: str = _f("sample", "data spec: sample, jsonl:PATH, vqa-rad:PATH, slake:PATH, pathvqa:PATH, iu-xray:PATH, hf:ID")
    split: str = _f("train", "split to train on")
    eval_split: str = _f("test", "split to evaluate base and tuned on ('' to skip evaluation)")
    ood_split: str = _f("source-test", "held-out out-of-domain split for retention ('' to skip; sample data only)")
    quant: str = _f("none", "weights: none (in the --precision dtype) or 4bit (NF4, computing in that dtype)",
                    choices=("none", "4bit"))
    precision: str = _f("auto", "compute precision: auto (bf16 on a GPU with bf16, else fp16 with a gradient scaler; "
                        "fp32 on a CPU; an explicit accelerate --mixed_precision decides auto), bf16, fp16, fp32",
                        choices=("auto", "bf16", "fp16", "fp32"))
    steps: int = _f(200, "optimizer steps (the default, 200, trains medln-tiny's ln at batch 32 in 41-49 s "
                         "on 2 quiet CPU cores, 47-60 s with loading and scoring: docs/results.md)", min=1, max=100_000)
    lr: float | None = _f(None, "peak learning rate; default: the backbone's measured one for the scope, else the scope's own",
                          min=0.0, max=1.0, open=("min", "max"))
    batch_size: int | None = _f(None, "samples per micro-batch (per process); default: the one the backbone's default "
                                      "budget was measured with (`backbones`), else 8", min=1, max=512)
    grad_accum: int = _f(1, "micro-batches per optimizer step", min=1, max=1024)
    warmup: float = _f(0.1, "fraction of steps with linear warm-up", min=0.0, max=1.0, open=("max",))
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0, max=1.0)
    grad_checkpointing: bool = _f(False, "recompute activations in backward (less memory, ~30%% slower)")
    compile: bool = _f(False, "torch.compile each transformer block for the training steps (regional; the first "
                       "steps compile; generation stays eager): medln.kernels")
    fused_norms: bool = _f(False, "RMSNorm through the fused torch.nn.functional.rms_norm op, where a probe shows it "
                           "computes the same: medln.kernels")
    max_length: int = _f(512, "longest token sequence (prompt with image tokens + answer); longer records are refused",
                         min=8, max=32_768)
    lora_r: int = _f(RANK, "LoRA rank (scopes lora, ln-lora)", min=1, max=1024)
    lora_alpha: int = _f(ALPHA, "LoRA alpha (scopes lora, ln-lora)", min=1, max=4096)
    ln_lr: float | None = _f(None, "learning rate of the norms in scope ln-lora (--lr sets the LoRA part's); "
                                   "default: the backbone's rate for scope ln", gt=0, lt=1)
    seed: int = _f(0, "random seed (data order, initialisation)", min=0, max=2**32 - 1)
    eval_limit: int = _f(EVAL_LIMIT, "score base and tuned on at most this many samples per split, evenly spaced "
                         "within each task (the app's default too; 0: all)", min=0, max=1_000_000)
    eval_batch_size: int = _f(16, "batch size for generation", min=1, max=512)
    skip_bad: bool = _f(False, "skip bad data records (reported), instead of failing on the first")
    trust_remote_code: bool = _f(False, "allow custom model code from the hub (off unless you trust the repo)")

    def __post_init__(self):
        # Resolved here, so every run folder, sweep and report records the batch it trained with.
        if self.batch_size is None and isinstance(self.backbone, str):
            self.batch_size = default_batch(self.backbone)

    def validate(self) -> "TrainConfig":
        problems = bound_problems(self)  # types first: a list where a name belongs is named, not looked up
        scope = find_scope(self.scope) if isinstance(self.scope, str) else None
        if scope is None and isinstance(self.scope, str) and len(self.scope) <= MAX_TEXT:
            problems.insert(0, f"scope: unknown {short(self.scope)} (choose from {', '.join(scope_names())})")
        if scope is not None and scope.refuses_4bit and self.quant == "4bit":
            problems.append(f"scope {self.scope!r} with quant '4bit': 4-bit weights cannot be trained; use --quant none")
        raise_problems(problems)
        return self

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.backbone, self.scope)

    @property
    def effective_ln_lr(self) -> float:
        """The norms' rate in scope ln-lora."""
        return self.ln_lr if self.ln_lr is not None else default_lr(self.backbone, "ln")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return from_dict(cls, d)


def from_dict(cls, d: dict):
    """A dataclass from a dict, refusing unknown keys (a typo must not be ignored)."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping of option names to values, got {short(d)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(short(k, 40) if not isinstance(k, str) else k[:40] for k in set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown[:10])} (known: {', '.join(sorted(names))})")
    return cls(**d)


def like(cls, name: str, **override):
    """The same field as `cls.name` (its default and metadata), for another command's dataclass."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = {**f.metadata, **{k: v for k, v in override.items() if k != "default"}}
    return field(default=override.get("default", f.default), metadata=meta)


# ------------------------------------------------------------------ the other commands' options


@dataclass
class Listing:
    json: bool = _f(False, "print JSON instead of a table")


@dataclass
class ParamsArgs:
    backbone: str = like(TrainConfig, "backbone")
    scope: str = _f("ln", "a scope name, or 'all'")
    quant: str = like(TrainConfig, "quant")
    lora_r: int = like(TrainConfig, "lora_r")
    json: bool = _f(False, "print JSON")


@dataclass
class TrainArgs(TrainConfig):
    """TrainConfig (what config.json saves) plus where the run goes and how it prints."""

    out: str = _f("", "run folder to create (default runs/<id>); must be new, empty, or a MedLN run replaced "
                  "with --overwrite", saved=False)
    overwrite: bool = _f(False, "replace the MedLN run already in --out (only its own files; a folder MedLN did not "
                         "write is never touched)", saved=False)
    json: bool = _f(False, "one JSON object per training record on stdout", saved=False)
    report_to: str = _f("none", "mirror the config, loss, learning rate and eval metrics to a tracker (medln.trackers; "
                                "metrics.jsonl stays the record)", choices=REPORT_TO, saved=False)

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


@dataclass(kw_only=True)
class AskArgs:
    image: str = _f(help="image to ask about (PNG, JPEG, TIFF, DICOM)")
    question: str = _f("", "the question; omit it to generate a report")
    adapter: str = _f("", "a run folder: answer with its tuned weights, on its base rebuilt as trained")
    backbone: str = like(TrainConfig, "backbone", default="",
                         help="backbone without --adapter (default medln-tiny); with --adapter the run's own")
    quant: str = like(TrainConfig, "quant", help="weights without --adapter; with --adapter the run's own")
    precision: str = like(TrainConfig, "precision", help="auto, bf16, fp16 or fp32 (auto: as the run was trained, "
                                                           "or as train's auto decides)")
    json: bool = _f(False, "print JSON (answer, backbone, adapter, disclaimer, warning: null unless the demo model's "
                           "image check has one)")


@dataclass
class EvalArgs:
    adapter: str = _f("", "a run folder: evaluate its tuned weights")
    backbone: str = like(AskArgs, "backbone")
    quant: str = like(AskArgs, "quant")
    precision: str = like(AskArgs, "precision")
    data: str = like(TrainConfig, "data")
    split: str = _f("test", "split to predict and score")
    eval_limit: int = like(TrainConfig, "eval_limit", aliases=("--limit",),
                           help="score at most N samples, evenly spaced per task (train's and the app's default; 0: all)")
    eval_batch_size: int = like(TrainConfig, "eval_batch_size", aliases=("--batch-size",))
    meteor: bool = _f(True, "score METEOR (it starts a Java process)")
    predictions: str = _f("", "predictions JSONL to write (default: RUN/predictions-SPLIT.jsonl with --adapter, else none)")
    skip_bad: bool = like(TrainConfig, "skip_bad")
    json: bool = _f(False, "print JSON")


@dataclass(kw_only=True)
class ScoreArgs:
    task: str = _f(help="what the files hold", choices=("vqa", "report"))
    predictions: str = _f(help="predictions JSONL (id, prediction)", aliases=("--pred",))  # eval's name for that file
    references: str = _f(help="references JSONL (id, answer, ...)", aliases=("--ref",))
    json: bool = _f(False, "print JSON")


# ------------------------------------------------------------------ dataclass -> argparse


def _arg_type(tp):
    """int for `int`, float for `float | None`, ... (the annotation's non-None member)."""
    if typing.get_origin(tp) in (list, tuple):  # list[str], tuple[str, ...]: several values
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default; an empty or None default is not worth a '(default: )'."""

    def _get_help_string(self, action):
        if action.default in (None, "", (), [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_arguments(parser, cls=TrainConfig, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> None:
    """argparse flags built from the dataclass: --batch-size for batch_size with its help and
    default; booleans as --x / --no-x; choices; lists as several values."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _arg_type(hints[f.name])
        kw: dict = {"help": f.metadata.get("help", ""), "dest": f.name}
        if f.metadata.get("positional"):  # `medln inspect RUN`: optional here, required after --config merges
            parser.add_argument(f.name, nargs="?", default=None, metavar=f.name.upper(), help=kw["help"])
            continue
        if f.metadata.get("flag"):  # a flag name that is not the field's (a keyword like `with`)
            flag = f.metadata["flag"]
        # Required options may come from --config: the CLI checks them after merging (__main__.parse).
        kw["default"] = None if f.default is MISSING else f.default
        if f.default is MISSING:
            kw["help"] += " (required)"
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) in (list, tuple):
            kw.update(nargs="+", type=typing.get_args(tp)[0])
            if "metavar" in f.metadata:
                kw["metavar"] = f.metadata["metavar"]
        else:
            kw["type"] = tp
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kw)
        for alias in f.metadata.get("aliases", ()):  # hidden; its default must not overwrite the flag's
            parser.add_argument(alias, **{**kw, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS})


def aliases(cls) -> dict[str, str]:
    """Old option names -> field names, as --config keys spell them ("limit" -> "eval_limit")."""
    return {a.lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}


def add_command(sub, name: str, cls, func, *, help: str, exclude: tuple[str, ...] = (), quiet: bool = True):
    """A subcommand whose flags are `cls`'s fields, plus --config FILE and (unless quiet=False)
    --quiet; its diagnostics go to the console log (medln.logs) unless it says otherwise."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    add_arguments(p, cls, exclude=exclude)
    p.add_argument("--config", metavar="FILE",
                   help="JSON or YAML of option values (a run's config.json too); flags given here override it")
    if quiet:
        p.add_argument("--quiet", action="store_true",
                       help="no progress bars; only warnings and errors on stderr")
    p.set_defaults(func=func, _options=cls, _parser=p, _console_log=quiet)
    return p


def from_args(args, cls=TrainConfig):
    """The dataclass the parsed flags describe (validated when it has validate())."""
    names = {f.name for f in dataclasses.fields(cls)}
    obj = cls(**{k: v for k, v in vars(args).items() if k in names})
    if hasattr(obj, "validate"):
        return obj.validate()
    problems = bound_problems(obj)
    if problems:
        raise ConfigError("invalid options:\n  " + "\n  ".join(problems))
    return obj
