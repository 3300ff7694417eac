"""bitsandbytes' CPU 4-bit kernels, and keeping a loaded model's 4-bit layers as they were loaded.

On a CPU, bitsandbytes 0.50 runs a 4-bit layer (nn/modules.py Linear4bit.forward,
autograd/_functions.py matmul_4bit) one of two ways:
  dequant     the NF4 weight is dequantized to the compute dtype (fp32 on a CPU: exact) and
              torch's linear runs. Any CPU; the only path with a backward.
  avx512bf16  where the CPU has AVX512-BF16 (the native has_avx512bf16_cpu(), read into
              Linear4bit.support_avx512bf16_for_cpu when the layer is built), the first
              eval-mode forward whose input needs no gradient REPACKS the layer's weight in
              place (functional._convert_weight_packed_for_cpu: a tiled nibble layout, the
              double-quantized scales folded and rounded to bf16), and every later call runs the
              fused gemv_4bit: input and NF4 codebook in bf16, fp32 sums per 64-element block,
              output rounded to bf16 (csrc/cpu_ops.cpp).

The trap (issue 26): Linear4bit._save_to_state_dict turns a packed layer back IN PLACE
(_convert_weight_packed_for_cpu_inverse), and that inverse is lossy: the bf16 scales are
quantized again to 8 bits around a new offset (the double quantization), so the next forward
packs different scales. peft calls model.state_dict() whenever it loads an adapter
(set_peft_model_state_dict -> _remap_adapter_state_dict_for_load), so on such a CPU a cached
4-bit base answered differently after each adapter it loaded (logits 2-3e-3 off on the tiny
model): the app's tuned answers were not the run's. `keep_packed` makes a layer's state_dict()
leave the layer as it found it, so the packing state of a model depends only on how it was
loaded, not on what read its weights since.

The second trap: once packed, a layer takes the fused gemv in training mode too (matmul_4bit
checks only the packing), and that kernel has no backward: on an AVX512-BF16 CPU a 4-bit
training run failed at its first step ("a view of a leaf Variable that requires grad is used in
an in-place operation"), because scoring the base and the probe ceiling's features, before
training, had packed the layers. `remember_loaded` (when a run loads its model) and
`dequant_while_training` (around the training steps) put a packed layer back exactly as it was
loaded and keep it on the dequant path until the last step; before and after, its answers take
the path the CPU has, like every other model's (the app's cached bases included).
"""

from __future__ import annotations

from contextlib import contextmanager

_STASH = "_medln_packed"  # the packed weight and quant state, kept across one state_dict() call


def cpu_4bit_kernel() -> str:
    """The path an inference forward of a 4-bit layer built here takes on this CPU."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return "dequant"
    return "avx512bf16" if has_avx512bf16() else "dequant"


def keep_packed(model) -> int:
    """Make every bitsandbytes Linear4bit of `model` come out of state_dict() unchanged (its
    saved tensors are bitsandbytes' unpacked form, as before); returns how many layers."""
    layers = _layers(model)
    for layer in layers:
        if not getattr(layer, "_medln_keeps_packed", False):
            layer.register_state_dict_pre_hook(_stash)
            layer.register_state_dict_post_hook(_restore)
            layer._medln_keeps_packed = True
    return len(layers)


def _layers(model) -> list:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, Linear4bit)]


def _packed(layer) -> bool:
    return bool(getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False))


def _snapshot(layer) -> tuple:
    """The layer's weight and quant state as they are now. Packing and its inverse rebind
    weight.data and rewrite the state's fields, never a tensor in place: references suffice."""
    state = layer.weight.quant_state
    return layer.weight.data, state, dict(vars(state))


def _put_back(layer, snapshot: tuple) -> None:
    data, state, fields = snapshot
    vars(state).clear()
    vars(state).update(fields)
    layer.weight.data = data
    layer.weight.quant_state = layer.quant_state = state


def _unpack_lossy(layer) -> None:
    """bitsandbytes' own inverse of the packing (its scales come back re-quantized)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    data, state = _convert_weight_packed_for_cpu_inverse(layer.weight.data, layer.weight.quant_state)
    layer.weight.data, layer.weight.quant_state, layer.quant_state = data, state, state


def _stash(module, prefix, keep_vars) -> None:
    if _packed(module):  # state_dict() is about to unpack it in place
        setattr(module, _STASH, _snapshot(module))


def _restore(module, state_dict, prefix, local_metadata) -> None:
    snapshot = module.__dict__.pop(_STASH, None)
    if snapshot is not None:
        _put_back(module, snapshot)


def remember_loaded(model) -> int:
    """For a model loaded to be trained: remember each 4-bit layer as loaded (a snapshot:
    nothing is copied, but once answers pack the layer the loaded weight stays alive beside the
    packed one, 4-bit weights twice, until training ends), so that `dequant_while_training` can
    return a packed layer to it exactly. Returns how many layers. A layer packed already is
    first unpacked with bitsandbytes' inverse (lossy, see above)."""
    layers = _layers(model)
    for layer in layers:
        if _packed(layer):
            _unpack_lossy(layer)
        layer._medln_loaded = _snapshot(layer)
    return len(layers)


@contextmanager
def dequant_while_training(model):
    """Train a 4-bit model on the dequant path: a packed layer (the base's answers and the
    probe's features before the first step pack it) goes back to its weight as `remember_loaded`
    saw it, exactly (or through bitsandbytes' lossy inverse where nothing was remembered), and
    none packs until the block ends. After it, answers pack the layers again from that weight, as
    in a model freshly loaded with the adapter: the run's tuned answers are the app's. Enter it
    before DDP's wrapper, which copies the main process's layers (the only ones that answered)."""
    layers = _layers(model)  # none without bitsandbytes
    allowed = [layer.support_avx512bf16_for_cpu for layer in layers]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False  # Linear4bit.forward packs only where this is set
        if _packed(layer) and hasattr(layer, "_medln_loaded"):
            _put_back(layer, layer._medln_loaded)
        elif _packed(layer):
            _unpack_lossy(layer)
    try:
        yield len(layers)
    finally:
        for layer, allow in zip(layers, allowed):
            layer.support_avx512bf16_for_cpu = allow
            # A run trains once: kept past it, the loaded weight would sit beside the packed one.
            layer.__dict__.pop("_medln_loaded", None)
