"""Force each CPU path a bitsandbytes 0.50 4-bit matmul can take, whatever this CPU has, and
record which one ran (a test helper, imported by the tests and by their subprocesses).

The paths (bitsandbytes/nn/modules.py Linear4bit.forward, autograd/_functions.py matmul_4bit,
backends/cpu/ops.py), on a CPU:
  dequant      the NF4 weight dequantized to the compute dtype (fp32 here: exact, the same on
               every CPU), then torch's linear. Taken when the CPU lacks AVX512-BF16, and by
               a layer not packed yet while training or when the input needs a gradient (a
               packed layer takes the fused gemv even then: medln.cpu4bit.dequant_while_training).
  avx512bf16   Linear4bit.support_avx512bf16_for_cpu (= the native has_avx512bf16_cpu()) and an
               eval-mode forward with no gradient REPACK the layer's weight in place
               (functional._convert_weight_packed_for_cpu: a tiled nibble layout, absmax
               transposed and rounded to bf16, double quantization folded), and from then on
               every call of that layer runs the fused gemv_4bit: input rounded to bf16, NF4
               codebook in bf16, fp32 sums per 64-element block, scaled, output rounded to bf16.

`force("avx512bf16")` on a CPU without the instructions (the native kernel would SIGILL) puts
a reference of that kernel's arithmetic in its place (`reference_gemv_4bit`); the packing,
bf16 scales and state handling around it are bitsandbytes' own code either way.
`force("dequant")` turns the packing off on a CPU that has it.
"""

from __future__ import annotations

import os
from collections import Counter

import torch

KERNELS = ("dequant", "avx512bf16")
ENV = "MEDLN_TEST_BNB_KERNEL"  # carries the forced path into subprocesses
ran: Counter = Counter()  # kernel label -> 4-bit matmuls run under it


def native_avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def label(kernel: str) -> str:
    """The path and what computes it here: 'dequant', 'avx512bf16-native', 'avx512bf16-reference'."""
    if kernel == "avx512bf16":
        return f"avx512bf16-{'native' if native_avx512bf16() else 'reference'}"
    return kernel


def force(kernel: str) -> str:
    """Make every Linear4bit built from now on take `kernel`'s path (and every 4-bit matmul
    counted in `ran`); returns the kernel's label. Subprocesses inherit it (force_from_env)."""
    import bitsandbytes.nn.modules as modules

    _check(kernel)
    packed = kernel == "avx512bf16"
    modules.has_avx512bf16 = lambda: packed  # what Linear4bit.__init__ reads
    _install()
    os.environ[ENV] = kernel
    return label(kernel)


def force_from_env() -> str | None:
    kernel = os.environ.get(ENV)
    return force(kernel) if kernel else None


def use(model, kernel: str) -> str:
    """Switch the Linear4bit layers of an already built model to `kernel`'s path (before any
    packed it: a packed layer cannot go back exactly); returns the kernel's label."""
    from bitsandbytes.nn import Linear4bit

    _check(kernel)
    _install()
    for name, module in model.named_modules():
        if isinstance(module, Linear4bit):
            if getattr(module.weight.quant_state, "packing_format_for_cpu", False) and kernel != "avx512bf16":
                raise RuntimeError(f"{name} is already packed for the AVX512-BF16 kernel")
            module.support_avx512bf16_for_cpu = kernel == "avx512bf16"
    return label(kernel)


def _check(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown 4-bit CPU kernel {kernel!r}; one of {', '.join(KERNELS)}")


_installed: list = []


def _install() -> None:
    """Once per process: the reference kernel where the native one cannot run, and the counter."""
    import bitsandbytes as bnb

    if _installed:
        return
    if not native_avx512bf16():  # bitsandbytes registered no CPU gemv_4bit: its kernel needs the instructions
        torch.library.register_kernel("bitsandbytes::gemv_4bit", "cpu")(reference_gemv_4bit)
    bnb.matmul_4bit = _recording(bnb.matmul_4bit)  # Linear4bit.forward calls bnb.matmul_4bit
    _installed.append(True)


def _recording(matmul_4bit):
    def wrapper(A, B, quant_state, *args, **kwargs):
        packed = A.device.type == "cpu" and getattr(quant_state, "packing_format_for_cpu", False)
        ran[label("avx512bf16") if packed else "dequant"] += 1
        return matmul_4bit(A, B, quant_state, *args, **kwargs)

    return wrapper


def reference_gemv_4bit(A, B, shapeB, absmax, code, blocksize):
    """bitsandbytes' AVX512-BF16 gemv_4bit (csrc/cpu_ops.cpp tinygemm_kernel_nn) in torch: for
    B packed by _convert_weight_packed_for_cpu ([N, K/2] uint8; per 32 output rows, K/2 rows
    of 32 bytes whose low nibbles hold rows 0-15 and high nibbles rows 16-31, two k each) and
    absmax [K/blocksize, N] bf16. Per output: the input and the codebook rounded to bf16,
    products exact in fp32, summed in fp32 pair by pair (vdpbf16ps: odd element, then even)
    within a block, each block sum times its bf16 scale added in fp32 (an FMA), and the result
    rounded to bf16. Denormals are not flushed here (the instruction flushes them)."""
    dtype = A.dtype
    N, K = shapeB
    nibbles = B.contiguous().view(torch.uint8).reshape(-1, 32)
    tiles = torch.cat([nibbles & 0xF, nibbles >> 4], dim=-1)  # [N/32 * K/2, 64]: (row, k parity)
    idx = tiles.reshape(N // 32, K // 2, 32, 2).transpose(1, 2).reshape(N, K).long()
    W = code.to(torch.bfloat16).float()[idx]  # [N, K]
    x = A.reshape(-1, K).to(torch.bfloat16).float()  # [M, K]
    scales = absmax.to(torch.bfloat16).float()  # [K/blocksize, N]
    out = torch.zeros(x.shape[0], N, dtype=torch.float32)
    for g in range(K // blocksize):
        acc = torch.zeros_like(out)
        for k in range(g * blocksize, (g + 1) * blocksize, 2):
            acc += x[:, k + 1, None] * W[None, :, k + 1]
            acc += x[:, k, None] * W[None, :, k]
        out = (acc.double() * scales[g].double() + out.double()).float()  # one rounding, as an FMA
    return out.to(torch.bfloat16).to(dtype).reshape(*A.shape[:-1], N)
