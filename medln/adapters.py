"""An adapter folder (run/adapter/): what peft saves, made to stand alone.

- `adapter_off(model)`: the one way to run the base weights of a (peft-)wrapped model.
- `attach(model, adapter_dir)`: a saved adapter onto a loaded base (one copy of the weights).
- `make_portable(adapter_dir, base_name)`: adapter_config.json names the hub id or the
  bundled model's name, never the absolute path of the machine that trained it.
- `adapter_bytes(model)`: the adapter size every listing reports (train, compare, bench).
The folder's README.md, a real model card rather than peft's blank template, is medln.card's.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path



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
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    targets = config.get("target_modules") or ()
    return tuple(sorted([targets] if isinstance(targets, str) else targets))


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
