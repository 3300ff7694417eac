"""The run folder contract: runs/<id>/ is self-describing.

  config.json    the TrainConfig ("config"), the base exactly as it was built ("base":
                 backbone, quant, projections kept unquantized, dtype) and the start record
                 (family, counts)
  metrics.jsonl  one JSON object per training record, appended as training goes; every
                 record has an `event` (medln.train.EVENTS)
  adapter/       peft adapter (adapter_config.json + adapter_model.safetensors + a model card
                 README.md), or for scope 'full' a safetensors checkpoint
  eval.json      base and tuned metrics; written LAST: a run folder is complete iff it has it
  tensorboard/   with --report-to tensorboard (medln.trackers): event files mirroring metrics.jsonl

Every file is written to a temporary name and renamed into place, and adapter/ is saved
into adapter.tmp/ first, so a crash mid-write never leaves a half-written file that looks
complete.

`load_run(run_dir)` is the one way back from a folder to a model: the CLI, the app's model
cache (medln.models) and library users all rebuild the base from the recorded `base` and
attach the adapter through it, so nothing else re-derives how a run was trained.

A run never deletes or overwrites what it did not create: `--out` must be new, empty, or a
MedLN run folder replaced on purpose (`overwrite=True`, which removes only the files named
above). A run that fails before its adapter is saved removes what it wrote, so the same
`--out` works again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .adapters import attach, is_peft_adapter, peft_targets, read_adapter_config
from .backbones import default_dtype, load_backbone, model_class
from .backbones.load import BUILD_LOCK
from .methods import METHODS, get_scope
from .storage import give_default_modes, write_json_atomic
from .run_records import read_eval, read_run_config
from .structure import shape_of
from .tensorfile import TensorFileError, shapes as tensor_shapes
from .userfiles import FileError, load_json, short


class RunError(ValueError):
    """A run folder cannot be written or read as asked; the message says why and what to do."""


# tensorboard/ and wandb/: what a tracker (--report-to, medln.trackers) writes into the run.
RUN_FILES = ("config.json", "metrics.jsonl", "eval.json", "adapter", "adapter.tmp", "adapter.old", "tensorboard", "wandb")


def is_run_folder(path: Path) -> bool:
    """A folder MedLN wrote: its config.json is a run's ({"config": {... "scope" ...}, ...})."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("config"), dict) and "scope" in config["config"]


def check_out(path: str | Path, *, overwrite: bool = False) -> None:
    """Refuse an output folder that would lose files: called before anything loads, and
    again when the run folder is created."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"--out {path}: {parent} is a file, not a folder")
            break
    if not path.is_dir() or not any(path.iterdir()):
        return  # new or empty: the run will create it
    if not is_run_folder(path):
        shown = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:5])
        raise RunError(f"--out {path} already exists and is not a MedLN run folder (it holds {shown}); "
                       "choose a new or empty folder: nothing that MedLN did not write is ever replaced")
    state = "a finished run" if (path / "eval.json").exists() else "an unfinished run (no eval.json)"
    if not overwrite:
        raise RunError(f"--out {path} already holds {state}; choose another --out, or pass --overwrite to "
                       "replace it (only the run's own files are removed)")


def _remove_run_files(path: Path) -> None:
    """The files of the run contract (plus predictions and adapter zips that MedLN writes
    beside them); anything else in the folder stays."""
    for name in RUN_FILES:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for extra in (*path.glob("predictions-*.jsonl"), *path.glob("*-adapter.zip"), *path.glob(".*.tmp")):
        extra.unlink()


def new_run_id(backbone: str, scope: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(backbone).name)[:40]
    return f"{stamp}-{slug}-{scope}-{os.urandom(2).hex()}"


@dataclass
class RunDir:
    path: Path
    created: bool = False  # this run made the folder (so discard() may remove it)

    @classmethod
    def create(cls, path: str | Path, config: dict, *, overwrite: bool = False) -> "RunDir":
        path = Path(path)
        check_out(path, overwrite=overwrite)
        created = not path.exists()
        if not created and overwrite:
            _remove_run_files(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, created)
        write_json_atomic(path / "config.json", config)
        return run

    def discard(self) -> None:
        """Remove what this run wrote (it failed before saving an adapter), and the folder
        itself if the run created it and nothing else is in it."""
        _remove_run_files(self.path)
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

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
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            give_default_modes(tmp)
        except Exception as e:  # disk full, quota, file-size limit: safetensors raises its own type
            shutil.rmtree(tmp, ignore_errors=True)
            full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in str(e)
            raise RunError(f"could not save the adapter to {self.adapter_dir}"
                           f"{': the disk is full' if full else ''} ({type(e).__name__}: {str(e).strip()[:200]})") from None
        old = self.path / "adapter.old"
        if self.adapter_dir.exists():
            os.replace(self.adapter_dir, old)
        os.replace(tmp, self.adapter_dir)
        shutil.rmtree(old, ignore_errors=True)

    def write_eval(self, result: dict) -> None:
        write_json_atomic(self.path / "eval.json", result)

    # ----------------------------------------------------------------- reading

    def config(self) -> dict:
        return read_run_config(self.path)  # checked field by field: a run folder is data (medln.run_records)

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
        return read_eval(self.path)

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
    same kind of device uses it, another kind resolves `precision` there (medln.precision:
    auto is fp32 on a CPU, bf16 or fp16 on a GPU)."""

    backbone: str  # registry name, hub id, or absolute folder
    quant: str = "none"
    keep: tuple[str, ...] = ()
    dtype: str | None = None
    device: str | None = None  # "cpu" | "cuda" of the training run
    trust_remote_code: bool = False
    precision: str = "auto"  # what the run asked for (TrainConfig.precision)

    def effective_dtype(self, device: str | None = None) -> str:
        """The dtype a load on `device` (default: CUDA if present) uses."""
        device = device or _default_device()
        return self._recorded_dtype(device) or default_dtype(self.backbone, device, self.precision)

    def _recorded_dtype(self, device: str) -> str | None:
        if self.dtype and self.device is not None and device.split(":")[0] == self.device:
            return self.dtype
        return None

    def load(self, device: str | None = None):
        device = device or _default_device()
        # Without a recorded dtype for this kind of device, load_backbone resolves the
        # precision itself: it knows the family (fp16_ok) from config.json.
        return load_backbone(self.backbone, quant=self.quant, device=device, keep_full_precision=list(self.keep),
                             dtype=self._recorded_dtype(device), trust_remote_code=self.trust_remote_code,
                             precision=self.precision)

    def to_dict(self) -> dict:
        return {**asdict(self), "keep": list(self.keep)}

    @classmethod
    def from_dict(cls, d: dict) -> "BaseSpec":
        known = {f.name for f in fields(cls)}  # a newer version's extra fields are not ours to pass
        return cls(**{k: v for k, v in d.items() if k in known and k != "keep"}, keep=tuple(d.get("keep") or ()))


def base_spec(run_dir: str | Path) -> BaseSpec:
    """The recorded base of a run. Runs written before `base` was recorded: rebuilt from their
    config (a 4-bit attn/ffn run kept exactly its adapter's target modules unquantized)."""
    run = RunDir(Path(run_dir))
    config = run.config()
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
    run = RunDir(Path(run_dir))
    if not run.adapter_dir.is_dir():
        raise RunError(f"{run.path} has no adapter/ folder (not a finished MedLN run?)")
    check_adapter(backbone.model, run.adapter_dir, family=backbone.family.name)
    if is_peft_adapter(run.adapter_dir):
        return attach(backbone.model, run.adapter_dir)
    device = next(backbone.model.parameters()).device
    with BUILD_LOCK:  # transformers sets the process's default dtype while it builds
        return model_class(backbone.family).from_pretrained(run.adapter_dir, device_map={"": str(device)},
                                                            dtype=next(backbone.model.parameters()).dtype,
                                                            use_safetensors=True)


def load_run(run_dir: str | Path, *, device: str | None = None):
    """A run folder -> a Backbone whose `model` is the tuned model, its base rebuilt exactly
    as trained. For peft scopes `with adapter_off(bb.model):` runs the base weights."""
    import dataclasses

    bb = base_spec(run_dir).load(device)
    return dataclasses.replace(bb, model=attach_run(bb, run_dir).eval())


# peft's names in a saved adapter: <module>.<marker><param> (the adapter name is stripped); each
# method says which markers its tensors carry and the shape each must have on this base
_SHAPES = {marker: rule for m in METHODS.values() for marker, rule in m.saved_shapes.items()}


def check_adapter(model, adapter_dir: str | Path, *, family: str | None = None) -> None:
    """Refuse, with the reason, an adapter that does not belong to this base model, before
    peft attaches it: peft only warns about missing keys, and a foreign adapter would then
    answer as "tuned" with the base weights. Checks the run's model family, that every
    module the adapter touches exists here, and every saved tensor's shape against it
    (safetensors header only: nothing is loaded). Scope 'full' checkpoints are checked
    by model type and tensor shapes alike."""
    adapter_dir = Path(adapter_dir)
    run_family = _run_family(adapter_dir.parent)
    if family and run_family and run_family != family:
        raise RunError(f"{adapter_dir.parent}: the run was trained on a {run_family} model; this backbone is "
                       f"{family}: an adapter only fits the model it was trained on")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not is_peft_adapter(adapter_dir):
        return _check_full(base, adapter_dir)
    try:
        config = read_adapter_config(adapter_dir)
    except FileError as e:
        raise RunError(str(e)) from None
    targets = config.get("target_modules")
    if isinstance(targets, str):  # peft's regex form: MedLN writes full names, and checks those
        raise RunError(f"{adapter_dir / 'adapter_config.json'}: field 'target_modules': a pattern, not a list of "
                       "module names (MedLN adapters name every module)")
    modules = dict(base.named_modules())
    saved = _saved_shapes(adapter_dir / "adapter_model.safetensors")
    if config["peft_type"] == "PROMPT_TUNING":  # virtual tokens: only their width (and count) must fit
        width = getattr(base.get_input_embeddings(), "embedding_dim", None)
        if width is not None and config.get("token_dim") not in (None, width):
            raise RunError(f"{adapter_dir}: the virtual tokens are {config.get('token_dim')} wide but this backbone's "
                           f"embeddings are {width}: it was trained on another model size")
        rows = config["num_virtual_tokens"] * (config.get("num_transformer_submodules") or 1)
        for key, shape in saved.items():
            if key.endswith("prompt_embeddings") and tuple(shape) != (rows, width or shape[-1]):
                raise RunError(f"{adapter_dir}: {key} has shape {list(shape)} but adapter_config.json asks for "
                               f"{rows} virtual tokens of width {width}")
        return
    missing = [t for t in targets if t not in modules and not any(n.endswith("." + t) for n in modules)]
    if missing:
        raise RunError(f"{adapter_dir}: the adapter targets {len(missing)} module(s) this backbone does not have "
                       f"(first: {missing[0]}): it was trained on another model")
    for key, shape in saved.items():
        key = key.removeprefix("base_model.model.")
        if ".lora_A." in key and (len(shape) != 2 or shape[0] != config.get("r")):
            raise RunError(f"{adapter_dir}: {key} has shape {list(shape)} but adapter_config.json says rank "
                           f"r={config.get('r')}: the two do not belong together")
        marker = next((m for m in _SHAPES if m in key), None)
        if marker is None:
            continue
        name, param = key.split(marker, 1)
        layer = modules.get(name)
        if layer is None:
            raise RunError(f"{adapter_dir}: the adapter holds weights for {name}, which this backbone does not "
                           "have: it was trained on another model")
        layer = getattr(layer, "base_layer", layer)  # already wrapped by peft
        expected = _SHAPES[marker](layer, param, shape)
        if expected is not None and tuple(expected) != tuple(shape):
            raise RunError(f"{adapter_dir}: {name}{marker}{param} has shape {list(shape)} in the adapter but this "
                           f"backbone needs {list(expected)}: it was trained on another model size")


def _run_family(run_path: Path) -> str | None:
    try:
        return json.loads((run_path / "config.json").read_text(encoding="utf-8")).get("family")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def _saved_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the safetensors header, checked before anything is allocated (medln.tensorfile)."""
    if not path.exists():
        raise RunError(f"{path.parent}: no {path.name} (the adapter's weights are missing)")
    try:
        return tensor_shapes(path)
    except TensorFileError as e:
        raise RunError(str(e)) from None


def _check_full(base, adapter_dir: Path) -> None:
    """A 'full' run's checkpoint: same model type, the same sizes in its config (they decide
    what from_pretrained allocates) and the same tensor shapes as the base."""
    try:
        config = load_json(adapter_dir / "config.json", max_bytes=4 * 2**20)
    except FileError as e:
        raise RunError(f"{adapter_dir}: neither a peft adapter nor a readable checkpoint config ({e})") from None
    model_type = getattr(base.config, "model_type", None)
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        other = config.get("model_type") if isinstance(config, dict) else None
        raise RunError(f"{adapter_dir}: a checkpoint of a {short(other)} model; this backbone is {model_type!r}")
    differs = _size_difference(base.config.to_dict(), config)
    if differs:
        raise RunError(f"{adapter_dir}: config.json field {differs[0]!r} is {short(differs[2])} but this backbone's is "
                       f"{differs[1]}: it was trained on another model size")
    own = {k: shape_of(t) for k, t in base.state_dict().items()}
    for file in sorted(adapter_dir.glob("*.safetensors")):
        for key, shape in _saved_shapes(file).items():
            if own.get(key) is not None and own[key] != tuple(shape):
                raise RunError(f"{adapter_dir}: {key} has shape {list(shape)} in the checkpoint but this backbone "
                               f"needs {list(own[key])}: it was trained on another model size")


def _size_difference(own: dict, other: dict, prefix: str = "") -> tuple | None:
    """(field, own value, other value) of the first whole-number field (sizes, counts, ids)
    where a checkpoint's config differs from the base's; None when they agree."""
    for key, value in own.items():
        if key not in other:
            continue
        theirs = other[key]
        if isinstance(value, dict):
            if not isinstance(theirs, dict):
                return prefix + key, "a mapping", theirs
            found = _size_difference(value, theirs, f"{prefix}{key}.")
            if found:
                return found
        elif isinstance(value, int) and not isinstance(value, bool) and theirs != value:
            return prefix + key, value, theirs
    return None
