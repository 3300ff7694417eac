"""Loading a backbone: its config alone (enough to count parameters on the meta device) or
the model with its processor, in the run's precision, optionally 4-bit (NF4), from a
registry name, a local folder or a hub id. Gated and offline cases fail early with a
message that says what to do; no remote code runs unless asked.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..cpu4bit import keep_packed
from .family import Family
from .registry import BACKBONES, BACKBONES_BY_NAME, FAMILIES, BackboneError, Resolved, family_of_model_type, resolve


# transformers builds a model under torch.set_default_dtype(the load's dtype) and puts the old
# value back after: process-global state, not per thread. Two builds at once (the app: a
# fine-tune loading its model while a request counts parameters, or /ask loads a base)
# interleave that save and restore: layers of one model come out in the other's dtype, or the
# default stays float16 for good ("mat1 and mat2 must have the same dtype, but got Float and
# Half", issue 25). Every build that sets the dtype holds this lock; meta_model sets none.
BUILD_LOCK = threading.RLock()


def hf_token() -> str | None:
    """The Hub token (medln.data.hub.hub_token: HF_TOKEN or `hf auth login`'s); never printed."""
    from ..data.hub import hub_token

    return hub_token()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Answers in seconds instead of a long retry loop. An HTTP probe, not a TCP connect:
    some networks accept every connection and then stay silent (medln.data.hub). In offline
    mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE: medln.data.hub.offline_mode) it sends nothing."""
    from ..data.hub import hub_reachable as answers, offline_mode

    if offline_mode():
        return False
    return answers(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def check_access(resolved: Resolved) -> dict:
    """kwargs for from_pretrained; raises BackboneError early for offline / gated cases."""
    if resolved.local:
        return {}
    kwargs: dict = {"revision": resolved.revision} if resolved.revision else {}
    if resolved.spec is not None and resolved.spec.gated and hf_token() is None:
        raise BackboneError(
            f"{resolved.source} is gated: accept its terms on the Hugging Face model page, "
            "then log in with `hf auth login` or set the HF_TOKEN environment variable"
        )
    token = hf_token()
    if token:
        kwargs["token"] = token
    if not hub_reachable():
        # Fall back to the local cache; fail with a message rather than a retry loop.
        kwargs["local_files_only"] = True
    return kwargs


def offline_message(resolved: Resolved) -> str:
    from ..data.hub import offline_mode

    why = ("offline mode is set (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)" if offline_mode()
           else "the Hugging Face Hub is not reachable from here")
    return (
        f"cannot load {resolved.source}: {why} and the model is not in the local cache. Use the bundled "
        "'medln-tiny', a local folder, or run where the network is available."
    )


def load_config(arg: str, *, trust_remote_code: bool = False):
    """The model config alone (config.json): enough to count parameters on the meta device."""
    from transformers import AutoConfig

    resolved = resolve(arg)
    kwargs = check_access(resolved)
    try:
        config = AutoConfig.from_pretrained(resolved.source, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as e:
        if kwargs.get("local_files_only"):
            raise BackboneError(offline_message(resolved)) from None
        raise BackboneError(f"cannot read the config of {resolved.source}: {e}") from None
    except ValueError as e:  # transformers' long advice for an unknown model_type or remote code
        raise BackboneError(_config_refusal(resolved, e)) from None
    return resolved, config, family_of_model_type(config.model_type)


def _config_refusal(resolved: Resolved, error: ValueError) -> str:
    """One line for a config transformers cannot build: custom code it was not allowed to
    run, or a model_type it does not know."""
    import json

    raw: dict = {}
    if resolved.local:
        try:
            raw = json.loads((Path(resolved.source) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    if (isinstance(raw, dict) and "auto_map" in raw) or "trust_remote_code" in str(error):
        return (f"{resolved.source}: its config needs custom code from the model's repository (auto_map); MedLN "
                "runs no remote code unless asked: `train --trust-remote-code` allows it, only if you trust that code")
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    return (f"{resolved.source}: unsupported model_type {model_type!r} (unknown to the installed transformers); "
            f"MedLN supports: {known}")


@dataclass
class Backbone:
    """A loaded model with its processor; `model` may later be wrapped by peft."""

    name: str
    source: str
    family: Family
    model: object
    processor: object
    quant: str
    prompt: str | None  # {question} template, or None for the processor's chat template
    dtype: str = "float32"  # of the unquantized weights, as loaded
    portable_name: str = ""  # Resolved.portable_name
    notes: list[str] = field(default_factory=list)  # what loading changed, for the user (4-bit on a CPU)
    precision: object = None  # medln.precision.Precision it computes in (None: from `dtype`)


def allow_processors_without_torchvision() -> None:
    """Qwen2-VL's processor insists on a video processor, which needs torchvision (there is no
    CPU build here); medln.no_torchvision installs an image-only stand-in when it is absent."""
    from ..no_torchvision import allow_processors_without_torchvision as allow

    allow()


def model_class(family: Family):
    import transformers

    return getattr(transformers, family.model_class)


def meta_model(config, family: Family):
    """The model's structure on the meta device: no memory, no weights, ~0.4 s for 7B."""
    import torch

    # dtype=None: built in the default dtype, which it leaves alone (BUILD_LOCK); on a copy,
    # as _from_config writes the dtype into the config (a cached one must not change)
    with torch.device("meta"):
        return model_class(family)._from_config(copy.deepcopy(config), dtype=None)


def quantization_config(family: Family, quant: str, keep_full_precision: list[str], compute_dtype):
    """NF4 with double quantisation (QLoRA's recipe). `keep_full_precision` holds the linear
    layers a scope trains as whole weights: Linear4bit weights cannot take gradients."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(family.not_quantized) + list(keep_full_precision),
    )


def default_dtype(arg: str, device: str, precision: str = "auto") -> str:
    """The torch dtype name a load of `arg` on `device` uses for `precision` (medln.precision):
    auto is bf16 on a GPU with bf16, fp16 on one without (fp32 for a family that refuses
    fp16), fp32 on a CPU."""
    from ..precision import resolve_precision

    try:
        return resolve_precision(precision, device=device, fp16_ok=_fp16_ok(arg)).dtype_name
    except ValueError as e:
        raise BackboneError(str(e)) from None


def _fp16_ok(arg: str) -> bool:
    """The family's fp16_ok: from the registry, else from config.json (when readable)."""
    spec = BACKBONES_BY_NAME.get(arg) or next((b for b in BACKBONES if b.hub_id == arg), None)
    if spec is not None:
        return FAMILIES[spec.family].fp16_ok
    try:
        return load_config(arg)[2].fp16_ok
    except Exception:  # unreadable here: loading will say why
        return True


# bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a Linear4bit's weight for its fused
# kernel at the first no-grad forward (bitsandbytes.functional._convert_weight_packed_for_cpu):
# it asserts out_features % 32 == 0 ("N must be divisible by block_n") and K even, and
# reshapes the per-block scales to (out_features, in_features // 64), which needs
# in_features % 64 == 0 (the NF4 block size). Layers that break either rule stay unquantized
# on every CPU, so a model loads and answers the same on CPUs with and without that kernel.
CPU_4BIT_ROWS = 32
CPU_4BIT_BLOCK = 64


def cpu_unpackable(config, family: Family, skip: list[str]) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of the linear layers the CPU 4-bit kernel cannot pack."""
    from ..structure import describe

    skipped = lambda name: any(name == k or name.startswith(k + ".") or name.endswith("." + k) for k in skip)  # noqa: E731
    return [(m.name, m.in_features, m.out_features) for m in describe(meta_model(config, family))
            if m.kind == "linear" and not skipped(m.name)
            and (m.out_features % CPU_4BIT_ROWS or m.in_features % CPU_4BIT_BLOCK)]


def load_backbone(
    arg: str,
    *,
    quant: str = "none",
    device: str | None = None,
    keep_full_precision: list[str] = (),
    dtype: str | None = None,
    trust_remote_code: bool = False,
    precision: str = "auto",
) -> Backbone:
    """Load model + processor from a registry name, a folder or a hub id.

    The frozen weights (and the 4-bit compute) take the run's precision (medln.precision):
    `auto` is bf16 on a GPU with bf16, fp16 on one without (fp32 for a family that gives NaNs
    in fp16), fp32 on a CPU; `dtype` (a torch dtype name) overrides it (medln.runs.BaseSpec:
    as a run was trained).
    """
    import torch
    from transformers import AutoProcessor

    from ..precision import from_dtype, resolve_precision

    resolved, config, family = load_config(arg, trust_remote_code=trust_remote_code)
    kwargs = check_access(resolved)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        prec = from_dtype(dtype, "as the run was trained") if dtype else resolve_precision(
            precision, device=device, fp16_ok=family.fp16_ok, model=f"{resolved.name} ({family.name})")
    except ValueError as e:  # the same for every scope of a sweep: a backbone problem, not a row
        raise BackboneError(str(e)) from None
    dtype = prec.dtype
    keep, notes = list(keep_full_precision), []
    if quant == "4bit" and not device.startswith("cuda"):
        odd = cpu_unpackable(config, family, list(family.not_quantized) + keep)
        if odd:
            keep += [name for name, _, _ in odd]
            name, k, n = odd[0]
            notes.append(f"{len(odd)} linear layer(s) kept unquantized (fp32): bitsandbytes' CPU 4-bit kernel needs "
                         f"out_features divisible by {CPU_4BIT_ROWS} and in_features by {CPU_4BIT_BLOCK} "
                         f"(e.g. {name}: {k} -> {n})")
    qconfig = quantization_config(family, quant, keep, dtype)
    allow_processors_without_torchvision()
    try:
        processor = AutoProcessor.from_pretrained(resolved.source, trust_remote_code=trust_remote_code, **kwargs)
        with BUILD_LOCK:
            model = model_class(family).from_pretrained(
                resolved.source,
                dtype=dtype,
                quantization_config=qconfig,
                device_map={"": device},
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                **kwargs,
            )
    except OSError as e:
        if kwargs.get("local_files_only"):
            raise BackboneError(offline_message(resolved)) from None
        raise BackboneError(f"cannot load {resolved.source}: {e}") from None
    model.eval()
    if quant == "4bit":  # a CPU-packed layer must survive peft's state_dict() reads (medln.cpu4bit)
        keep_packed(model)
    prompt = (resolved.spec.prompt if resolved.spec else None) or family.prompt
    return Backbone(resolved.name, resolved.source, family, model, processor, quant, prompt,
                    str(dtype).removeprefix("torch."), resolved.portable_name, notes, prec)
