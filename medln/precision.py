"""Which floating-point precision a run computes in: one decision, made here, used by loading,
training, generation and evaluation alike.

    auto  bf16 on a GPU that has it (Ampere and newer: A10G, L4, A100, H100),
          fp16 with a gradient scaler on one that does not (T4, V100),
          fp32 on a CPU
    bf16 | fp16 | fp32   as asked

What follows from the answer (see `Precision`): the dtype of the frozen weights and of the
4-bit compute (bnb_4bit_compute_dtype), the autocast dtype of forward passes, and whether the
loss is scaled (fp16's 5-bit exponent underflows small gradients; bf16 has fp32's range).
Trained tensors stay fp32 whatever the precision (medln.methods.apply_scope).

An explicit `accelerate launch --mixed_precision bf16|fp16` (or an `accelerate config` that
sets it) reaches the process as ACCELERATE_MIXED_PRECISION and decides `auto`. accelerate
writes "no" there when nothing was chosen, so "no" is read as "not set"; ask for fp32 with
`--precision fp32`. An explicit --precision wins over accelerate's, and the run says so.

Some families break in fp16 (MedGemma / Gemma 3 overflows to NaN): their registry entry says
`fp16_ok=False`, an explicit fp16 is refused with the reason, and `auto` on a GPU without bf16
falls back to fp32 compute rather than produce NaNs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ACCELERATE_ENV = "ACCELERATE_MIXED_PRECISION"
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class PrecisionError(ValueError):
    """A precision this backbone or this device cannot run; the message says what to use instead."""


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32: what the run computes in
    reason: str  # one line: why this one (shown at the start of every run)
    notes: tuple[str, ...] = field(default=())

    @property
    def dtype(self):
        """torch dtype of the frozen weights, the 4-bit compute and autocast."""
        import torch

        return getattr(torch, _TORCH_DTYPES[self.name])

    @property
    def dtype_name(self) -> str:
        return _TORCH_DTYPES[self.name]

    @property
    def autocast(self) -> bool:
        return self.name != "fp32"

    @property
    def scaled(self) -> bool:
        """fp16 needs a gradient (loss) scaler; bf16 and fp32 do not."""
        return self.name == "fp16"


@dataclass(frozen=True)
class Device:
    """What the decision needs to know of the hardware (tests pass their own)."""

    kind: str  # "cuda" | "cpu"
    name: str = ""
    bf16: bool = False  # torch.cuda.is_bf16_supported()

    @classmethod
    def detect(cls, device: str | None = None) -> "Device":
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not str(device).startswith("cuda"):
            return cls("cpu", "cpu")
        return cls("cuda", torch.cuda.get_device_name(torch.device(device)),
                   bool(torch.cuda.is_bf16_supported()))


def from_dtype(dtype, reason: str = "from the weights' dtype") -> Precision:
    """The precision of weights loaded in `dtype` (a torch dtype or its name)."""
    name = str(dtype).removeprefix("torch.")
    by_dtype = {v: k for k, v in _TORCH_DTYPES.items()}
    if name not in by_dtype:
        raise PrecisionError(f"dtype {name!r} is not one of {', '.join(by_dtype)}")
    return Precision(by_dtype[name], reason)


def accelerate_choice(env=None) -> str | None:
    """bf16 / fp16 when `accelerate launch --mixed_precision` or an accelerate config chose it."""
    value = (os.environ if env is None else env).get(ACCELERATE_ENV, "").strip().lower()
    return value if value in ("bf16", "fp16") else None


def resolve_precision(requested: str = "auto", *, device: Device | str | None = None, fp16_ok: bool = True,
                      model: str = "this backbone", env=None) -> Precision:
    """The precision a run on `device` computes in (see the module docstring for the rules).

    `fp16_ok`: False for families that give NaNs in fp16 (the registry says which)."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision: must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dev = device if isinstance(device, Device) else Device.detect(device)
    no_fp16 = (f"{model} gives NaNs in fp16 (its activations overflow fp16's range); use bf16 on a GPU that "
               "has it (A10G, L4, A100, H100) or fp32")
    launcher = accelerate_choice(env)
    notes: list[str] = []
    if requested != "auto":
        if launcher and launcher != requested:
            notes.append(f"--precision {requested} overrides accelerate's mixed_precision {launcher}")
        if requested == "fp16" and not fp16_ok:
            raise PrecisionError(f"precision fp16 refused: {no_fp16}")
        if requested == "bf16" and dev.kind == "cuda" and not dev.bf16:
            raise PrecisionError(f"precision bf16: {dev.name or 'this GPU'} has no bf16 support; use fp16 or fp32")
        return Precision(requested, "asked for", tuple(notes))
    if launcher:
        if launcher == "fp16" and not fp16_ok:
            raise PrecisionError(f"accelerate's mixed_precision fp16 refused: {no_fp16}")
        return Precision(launcher, f"accelerate launch / accelerate config chose {launcher}")
    if dev.kind != "cuda":
        return Precision("fp32", "CPU: fp32 (reduced precision brings no speed there)")
    if dev.bf16:
        return Precision("bf16", f"{dev.name or 'GPU'} supports bf16: fp32's range at half the memory, no loss scaling")
    if not fp16_ok:
        return Precision("fp32", f"{dev.name or 'this GPU'} has no bf16 and {model} gives NaNs in fp16: fp32 compute "
                                 "(slower; load in 4-bit to fit)")
    return Precision("fp16", f"{dev.name or 'this GPU'} has no bf16: fp16 with a gradient scaler")


def autocast_context(precision: Precision, device_type: str):
    """torch.autocast for the precision's dtype; a no-op for fp32."""
    import torch

    return torch.autocast(device_type, dtype=precision.dtype, enabled=precision.autocast)


def grad_scaler(precision: Precision, device_type: str):
    """torch.amp.GradScaler, enabled for fp16 only (a disabled scaler passes everything through)."""
    import torch

    return torch.amp.GradScaler(device_type, enabled=precision.scaled)


def precision_notes(precision: Precision | None) -> list[str]:
    """A run's notes about its precision: which one and why, then its own notes (none: [])."""
    if precision is None:
        return []
    return [f"precision {precision.name}: {precision.reason}", *precision.notes]
