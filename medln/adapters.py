"""An adapter folder (run/adapter/): what peft saves, made to stand alone.

- `adapter_off(model)`: the one way to run the base weights of a (peft-)wrapped model.
- `attach(model, adapter_dir)`: a saved adapter onto a loaded base (one copy of the weights).
- `make_portable(adapter_dir, base_name)`: adapter_config.json names the hub id or the
  bundled model's name, never the absolute path of the machine that trained it.
- `adapter_bytes(model)`: the adapter size every listing reports (train, compare, bench).
- `read_adapter_config(adapter_dir)`: adapter_config.json read as untrusted data (it decides
  what peft builds before any weight loads), every field checked, or one line naming it.
The folder's README.md, a real model card rather than peft's blank template, is medln.card's.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from .userfiles import FileError, Record, load_json, short

ADAPTER_CONFIG = "adapter_config.json"
MAX_RANK = 1024  # TrainConfig.lora_r's bound
MAX_VIRTUAL_TOKENS = 4096
MAX_TARGETS = 100_000
# peft features that change what is built (extra layers, copies, other initialisations, other
# libraries): MedLN never writes them, and a crafted adapter must not switch them on.
OFF = (None, False, {}, [], "")
MUST_BE_OFF = ("use_dora", "layer_replication", "trainable_token_indices", "arrow_config", "alora_invocation_tokens",
               "target_parameters", "use_bdlora", "kasa_config", "monteclora_config", "velora_config", "lora_ga_config",
               "eva_config", "corda_config", "megatron_config", "use_qalora", "loftq_config", "rank_pattern",
               "alpha_pattern", "lora_bias", "layers_pattern", "layers_to_transform", "tokenizer_kwargs")



def adapter_off(model, off: bool = True):
    """Context in which a peft model runs its frozen base weights (peft's disable_adapter).
    A plain model (no adapter, or a full fine-tune) has nothing to switch off."""
    if not off or not hasattr(model, "disable_adapter"):
        return nullcontext()
    return model.disable_adapter()


def is_peft_adapter(adapter_dir: Path) -> bool:
    """peft adapters have adapter_config.json; scope 'full' saves a whole checkpoint."""
    return (Path(adapter_dir) / "adapter_config.json").is_file()


def attach(model, adapter_dir: Path):
    """Wrap a loaded base with the saved peft adapter (`disable_adapter()` still gives base answers)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir))


def adapter_bytes(model) -> int:
    """Bytes of the tensors a run saves, in their dtype: the peft adapter state (LN copies,
    LoRA A/B, trained projections); for full fine-tuning the whole model (tied weights once).
    The one adapter size every listing reports (train, compare, bench, app)."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        tensors = get_peft_model_state_dict(model).values()
    else:
        seen, tensors = set(), []
        for t in model.state_dict().values():
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                tensors.append(t)
    return sum(t.numel() * t.element_size() for t in tensors)


def peft_targets(adapter_dir: Path) -> tuple[str, ...]:
    targets = read_adapter_config(adapter_dir).get("target_modules") or ()
    return tuple(sorted([targets] if isinstance(targets, str) else targets))


def _name_not_path(value, where: str) -> None:
    """A base or tokenizer named by registry name, hub id or folder name: never a path that
    leads elsewhere on this machine (absolute, home-relative, or with '..')."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > 1024:
        raise FileError(f"{where}: expected a model name (at most 1,024 characters), got {short(value)}")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if value.startswith(("/", "~", "\\")) or ".." in parts or (len(value) > 1 and value[1] == ":"):
        raise FileError(f"{where}: {short(value)} is a path outside the adapter; an adapter names its base by registry "
                        "name, hub id (owner/name) or folder name")


def read_adapter_config(adapter_dir: Path) -> dict:
    """adapter_config.json of a peft adapter, checked: a MedLN peft type, module names as
    text, the sizes peft allocates from (LoRA rank, virtual tokens) bounded, no peft feature
    MedLN does not use switched on, no base path outside the adapter. FileError otherwise."""
    from .methods import PEFT_TYPES

    path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        rec = Record(load_json(path, max_bytes=4 * 2**20), str(path))
    except FileError as e:
        raise FileError(f"{str(e).removesuffix('.')} (unreadable adapter config)") from None
    peft_type = rec.get("peft_type", str, None, optional=True)
    if peft_type not in PEFT_TYPES:
        rec.fail("peft_type", f"{short(peft_type)} is not a MedLN adapter type (one of {', '.join(PEFT_TYPES)})")
    for key in ("base_model_name_or_path", "tokenizer_name_or_path"):
        _name_not_path(rec.data.get(key), f"{path}: field {key!r}")
    targets = rec.data.get("target_modules")
    if peft_type != "PROMPT_TUNING" and not (isinstance(targets, str) and targets) \
            and not (isinstance(targets, list) and targets):
        rec.fail("target_modules", "must be a non-empty list of module names")
    if isinstance(targets, list):
        rec.get("target_modules", list, items=str, max_len=MAX_TARGETS)
    for key in ("modules_to_save", "feedforward_modules", "exclude_modules"):
        if isinstance(rec.data.get(key), list):
            rec.get(key, list, items=str, max_len=MAX_TARGETS)
        elif not isinstance(rec.data.get(key), (str, type(None))):
            rec.fail(key, f"expected a list of module names or null, got {short(rec.data[key])}")
    for key in MUST_BE_OFF:
        if rec.data.get(key) not in OFF:
            rec.fail(key, f"{short(rec.data[key])}: a peft feature MedLN adapters do not use (it must be off)")
    if peft_type == "LORA":
        rec.get("r", int, lo=1, hi=MAX_RANK)
        rec.get("lora_alpha", float, lo=0, hi=1e6)
        rec.get("lora_dropout", float, 0.0, lo=0, hi=1)
        rec.get("init_lora_weights", bool, True)
        rec.get("bias", str, "none", choices=("none", "all", "lora_only"))
    if peft_type == "PROMPT_TUNING":
        rec.get("num_virtual_tokens", int, lo=1, hi=MAX_VIRTUAL_TOKENS)
        rec.get("num_transformer_submodules", int, 1, lo=1, hi=2, optional=True)
        rec.get("token_dim", int, None, lo=1, hi=1 << 20, optional=True)
        rec.get("prompt_tuning_init", str, "RANDOM", choices=("RANDOM", "TEXT", "SAMPLE_VOCAB"))
    for key, value in rec.data.items():  # fields MedLN does not know: plain values only
        if isinstance(value, (dict, list)) and value and key not in (
                "target_modules", "modules_to_save", "feedforward_modules", "exclude_modules", "auto_mapping"):
            rec.fail(key, f"holds {short(value)}: not a field MedLN adapters use")
        if isinstance(value, str) and len(value) > 1024:
            rec.fail(key, f"text of {len(value):,} characters (at most 1,024)")
    return rec.data


def make_portable(adapter_dir: Path, base_name: str) -> None:
    """peft writes the base's `name_or_path`, which for a local or bundled model is an
    absolute path on the training machine; record the portable name instead."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    from .storage import write_json_atomic

    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    write_json_atomic(path, config)


def import_peft(*, quantized: bool) -> None:
    """Import peft now; for a process that loads no 4-bit weights, without bitsandbytes.
    peft imports bitsandbytes at import time whenever it is installed (peft.helpers: ~4 s on
    a quiet 2-core machine, for nothing when no weight is quantized). Marking it missing for
    the duration of the import makes that optional import fail; the marker is removed after,
    and peft's cached "is bitsandbytes there" answers are cleared, so 4-bit still works in
    this process (only peft.helpers' dequantizing kappa helper, unused by MedLN, stays without)."""
    import sys

    if quantized or "peft" in sys.modules or "bitsandbytes" in sys.modules:
        return
    sys.modules["bitsandbytes"] = None  # `import bitsandbytes` raises ImportError while set
    try:
        import peft  # noqa: F401
    finally:
        if sys.modules.get("bitsandbytes", 0) is None:
            del sys.modules["bitsandbytes"]
        from peft import import_utils

        import_utils.is_bnb_available.cache_clear()
        import_utils.is_bnb_4bit_available.cache_clear()
