"""Speed levers that change how a model computes, never what: regional `torch.compile` and
fused RMSNorm kernels. Both are off by default and switched on by config (TrainConfig.compile,
TrainConfig.fused_norms; `medln bench --compile --fused-norms`), so a run says which it used.

Fused norms. transformers' RMSNorm modules (Llama/Mistral/Qwen2/Idefics3 text, Gemma 3) are
written out in eager ops: upcast to fp32, square, mean, add eps, rsqrt, multiply, downcast,
multiply by the gain: about eight kernels forward, and fp32 copies of the activations kept for
backward. `torch.nn.functional.rms_norm` computes the same normalisation as one ATen op (one
fused kernel on CUDA in recent torch; a composite on the CPU). Two gain conventions exist:

- "scale" (Llama and most):  w * norm(x_fp32).to(dtype_of_x)
- "one_plus" (Gemma):        (norm(x_fp32) * (1 + w_fp32)).to(dtype_of_x)

No class names are listed here: each RMSNorm class found is probed once (a copy with a random
gain, fp32 and bf16 inputs, an fp32 gain as LN tuning trains it) against its own forward, and
the convention that reproduces it (same dtype, values within float rounding) is the one
installed. A class that matches neither keeps its own forward and is named in the notes, so a
new transformers release that changes a norm cannot change a model's numbers silently.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass, field


def compile_blocks(model, *, backend: str = "inductor") -> int:
    """Regional torch.compile: each block of every top-level layer list (vision and text
    transformer layers), compiled in place. Identical blocks share one compiled graph (torch
    inlines module parameters as graph inputs), so compiling costs about one block per kind.
    backend "eager" captures graphs without generating code: a CPU check of the path."""
    import torch.nn as nn

    done: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 1 and not any(name.startswith(d + ".") for d in done):
            for i, block in enumerate(m):
                block.compile(backend=backend)
                done.append(f"{name}.{i}")
    return len(done)


def _eps(module) -> float | None:
    for attr in ("variance_epsilon", "eps"):
        value = getattr(module, attr, None)
        if isinstance(value, float):
            return value
    return None


def _scale_forward(self, x):
    import torch.nn.functional as F

    return self.weight * F.rms_norm(x, (x.shape[-1],), eps=_eps(self))


def _one_plus_forward(self, x):
    import torch.nn.functional as F

    return F.rms_norm(x.float(), (x.shape[-1],), 1.0 + self.weight.float(), eps=_eps(self)).type_as(x)


CONVENTIONS = {"scale": _scale_forward, "one_plus": _one_plus_forward}


def is_rms_norm(module) -> bool:
    import torch

    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("RMSNorm") and isinstance(weight, torch.nn.Parameter) and weight.dim() == 1
            and _eps(module) is not None)


def _matches(module, forward) -> bool:
    """Does `forward` reproduce the module's own forward? Probed on a copy with a random gain
    (ones or zeros could not tell the conventions apart), for an fp32 input, a bf16 input with
    a bf16 gain (a frozen norm) and a bf16 input with an fp32 gain (a norm LN tuning trains)."""
    import torch

    probe = copy.deepcopy(module).to("cpu", torch.float32)
    g = torch.Generator().manual_seed(0)
    d = probe.weight.shape[0]
    with torch.no_grad():
        probe.weight.copy_(torch.randn(d, generator=g) * 0.5 + 1.0)
    x = torch.randn(3, d, generator=g) * 3.0
    cases = [(torch.float32, torch.float32, 1e-5), (torch.bfloat16, torch.bfloat16, 2e-2),
             (torch.bfloat16, torch.float32, 2e-2)]
    with torch.no_grad():
        for x_dtype, w_dtype, tol in cases:
            probe.weight.data = probe.weight.data.to(w_dtype)
            xi = x.to(x_dtype)
            want, got = probe(xi), forward(probe, xi)
            if want.dtype != got.dtype or want.shape != got.shape:
                return False
            if not torch.allclose(want.float(), got.float(), rtol=tol, atol=tol):
                return False
    return True


@dataclass
class FusedNorms:
    fused: int = 0  # modules whose forward was replaced
    classes: dict[str, str] = field(default_factory=dict)  # class name -> convention installed
    notes: list[str] = field(default_factory=list)


def fuse_norms(model) -> FusedNorms:
    """Replace the forward of every RMSNorm module (peft's LN-tuning copies included: call it
    after the scope is applied) by the fused op, where a probe shows it computes the same.
    nn.LayerNorm already runs as one fused kernel and is left as it is."""
    report = FusedNorms()
    chosen: dict[type, str | None] = {}
    for module in model.modules():
        if not is_rms_norm(module):
            continue
        cls = type(module)
        if cls not in chosen:
            chosen[cls] = next((name for name, fwd in CONVENTIONS.items() if _matches(module, fwd)), None)
            if chosen[cls] is None:
                report.notes.append(f"fused norms: {cls.__name__} matches no fused convention; kept as it is")
            else:
                report.classes[cls.__name__] = chosen[cls]
        if chosen[cls] is not None:
            module.forward = types.MethodType(CONVENTIONS[chosen[cls]], module)
            report.fused += 1
    if report.fused:
        report.notes.append(f"fused norms: {report.fused} RMSNorm modules use torch.nn.functional.rms_norm ("
                            + ", ".join(f"{k}: {v}" for k, v in sorted(report.classes.items())) + ")")
    return report


def eager_if(compiled: bool):
    """A context in which compiled blocks run eager (generation: every new length would
    recompile); a no-op when nothing was compiled (importing torch._dynamo costs seconds)."""
    from contextlib import nullcontext

    if not compiled:
        return nullcontext()
    import torch

    return torch.compiler.set_stance("force_eager")
