"""Building a random-weight model on the device, FLOPs and MFU, and the timed measurements
(training steps, generation)."""

from __future__ import annotations

import copy
import gc
import math
import time

from ..backbones import Family, model_class, part_of
from ..cpu4bit import dequant_while_training
from ..kernels import compile_blocks  # noqa: F401 - re-exported: the bench's --compile
from ..methods import TuningScope


def build_model(config, family: Family, device, dtype, *, sdpa: bool = True):
    """Random weights, allocated and initialised on `device` (transformers' own init)."""
    import torch

    with torch.device(device):
        model = model_class(family)._from_config(copy.deepcopy(config), dtype=dtype,
                                                 attn_implementation="sdpa" if sdpa else "eager")
    return model


def _skipped(name: str, keys) -> bool:
    """transformers' llm_int8_skip_modules rule: a key names a module or a dotted component."""
    return any(name == k or name.startswith(k + ".") or f".{k}." in f".{name}." for k in keys)


def quantize_4bit(model, skip, compute_dtype) -> int:
    """Replace every nn.Linear (except `skip`) by a bitsandbytes NF4 Linear4bit holding its
    weights quantized (double quantization, QLoRA's recipe, as backbones.quantization_config).
    transformers' bnb integration only quantizes while loading a checkpoint, hence by hand.
    Returns the number of layers replaced."""
    import bitsandbytes as bnb
    import torch.nn as nn

    # names only: each bf16 layer is freed as soon as its 4-bit replacement is in place
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _skipped(n, skip)]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        linear = model.get_submodule(name)
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta")
        # .to(device) on an unquantized Params4bit quantizes it there (the bf16 tensor is then freed)
        q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=True,
                                     quant_type="nf4", module=q).to(linear.weight.device)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(model.get_submodule(parent_name), attr, q)
        del linear
    model.is_loaded_in_4bit = True  # peft wraps Linear4bit with its 4-bit LoRA layer only if set
    return len(targets)


# --------------------------------------------------------------------------- FLOPs and MFU

# bf16 dense tensor-core peak, TFLOP/s (vendor data sheets); the first name contained in the
# device name wins, so the more specific names come first.
PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "T4": 65.0,
}


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def forward_flops(model, inputs: dict, autocast) -> dict[str, int]:
    """Matmul FLOPs of one forward pass per module, counted with hooks: 2 x rows x in x out
    for every linear layer (4-bit ones too) and the convolution FLOPs of patch embeddings. The
    rows a layer sees differ by part (vision patches vs text tokens), which 2·N·tokens misses.
    Attention scores (the T^2 term) are not counted: the MFU is a slight underestimate."""
    import torch
    import torch.nn as nn

    from ..structure import is_norm

    flops: dict[str, int] = {}
    hooks = []

    def linear_hook(name):
        def hook(m, args, out):
            rows = args[0].numel() // m.in_features
            flops[name] = flops.get(name, 0) + 2 * rows * m.in_features * m.out_features
        return hook

    def conv_hook(name):
        def hook(m, args, out):
            per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
            flops[name] = flops.get(name, 0) + 2 * out.numel() * per_output
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif hasattr(m, "in_features") and hasattr(m, "out_features") and not is_norm(m):
            hooks.append(m.register_forward_hook(linear_hook(name)))
    try:
        with torch.no_grad(), autocast():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return flops


PART_ORDER = ("vision", "connector", "llm")  # the order activations flow in


def training_flops(fwd: dict[str, int], family: Family, scope: TuningScope, modules: list[str]) -> int:
    """FLOPs of one training step: forward, plus the input-gradient matmuls (x1) wherever a
    gradient flows (every part from the first one holding a trained tensor onwards), plus the
    weight-gradient matmuls (x1) of trained whole weights. For LN scopes this is the 4·N·tokens
    of the issue, for full fine-tuning 6·N·tokens; for LoRA/ln-llm the vision tower is forward-only."""
    if scope.kind == "full":
        return 3 * sum(fwd.values())
    trained_parts = {part_of(family, m) or "llm" for m in modules}
    first = min(PART_ORDER.index(p) for p in trained_parts)
    whole = set(modules) if scope.kind == "whole-linear" else set()
    total = 0
    for name, f in fwd.items():
        part = part_of(family, name) or "llm"
        total += f * (1 + (PART_ORDER.index(part) >= first) + (name in whole))
    return total


# --------------------------------------------------------------------------- measurements


class _Clock:
    """Per-step timing: CUDA events on a GPU (no host sync inside the loop), else perf_counter."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch
        self.marks: list = []

    def mark(self):
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 4) if device.type == "cuda" else None


def _reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def time_training(model, inputs: dict, *, steps: int, warmup: int, device, autocast) -> tuple[list[float], float, object]:
    """AdamW steps with gradient clipping (as train.fit); returns the timed steps' seconds,
    the last loss and the optimizer (freed by the caller)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # A tiny learning rate: random weights, only the cost matters; fused AdamW on a GPU.
    opt = torch.optim.AdamW(params, lr=1e-7, fused=device.type == "cuda")
    clock = _Clock(device)
    model.train()
    with dequant_while_training(model):  # the answers timed before packed 4-bit CPU layers (medln.cpu4bit)
        for i in range(warmup + steps):
            if i >= warmup:
                clock.mark()
            with autocast():
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        clock.mark()
    return clock.intervals(), float(loss.detach().float()), opt


class _TokenClock:
    """A generate() streamer that only notes when each step's tokens reach the host: put() gets
    the prompt first, then every new token (generate copies it to the CPU: a device sync)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def time_generation(model, inputs: dict, *, new_tokens: int, device, autocast, eager) -> dict:
    """Greedy decoding of exactly `new_tokens` tokens (min = max: random weights may pick EOS),
    after a 2-token warm-up. first_token_s: call to first token (prefill, vision included);
    tokens_per_s: decode rate, batch x (n - 1) / (t(n) - t(1)); peak_mem_gb: during the call."""
    import torch

    model.eval()
    n_prompt, batch = inputs["input_ids"].shape[1], inputs["input_ids"].shape[0]

    def run(n):
        clock = _TokenClock()
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                             streamer=clock)
        _sync(device)
        if out.shape[1] - n_prompt != n:
            raise RuntimeError(f"generate returned {out.shape[1] - n_prompt} new tokens, {n} asked")
        return t0, clock.times

    with torch.inference_mode(), autocast(), eager():
        run(2)  # warm-up: kernels, cache allocation
        _reset_peak(device)
        t0, times = run(new_tokens)
        peak = _peak_gb(device)
    first = times[1] - t0  # times[0]: the prompt handed to the streamer
    rate = batch * (new_tokens - 1) / (times[-1] - times[1]) if new_tokens > 1 else None
    return {"first_token_s": round(first, 5), "tokens_per_s": round(rate, 2) if rate else None, "peak_mem_gb": peak}


def _free(device, *, compiled: bool = False):
    import torch

    if device.type == "cuda":  # only GPU memory is measured (a full collection costs ~0.3 s)
        gc.collect()
        torch.cuda.empty_cache()
    if compiled:  # compiled graphs hold the model; importing torch._dynamo otherwise costs seconds
        torch._dynamo.reset()
