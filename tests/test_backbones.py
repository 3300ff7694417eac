"""medln.backbones: loading in 4-bit on a CPU keeps the layers bitsandbytes' CPU kernel cannot
pack unquantized, and says so."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


def test_4bit_on_a_cpu_keeps_the_layers_its_kernel_cannot_pack(tmp_path):
    """bitsandbytes' AVX512-BF16 CPU path repacks each Linear4bit at the first no-grad
    forward and asserts 'N must be divisible by block_n' (hidden size 48). This machine may
    lack that instruction set, so the repacking itself (pure torch) is run on every 4-bit
    layer: none may fail, and the layers kept unquantized are said in a note."""
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from medln.backbones import load_backbone
    from medln.make.tiny import build_tiny

    path = build_tiny("llava", tmp_path / "m", hidden_size=48, intermediate_size=96)  # vision stays 64 / 128
    bb = load_backbone(str(path), quant="4bit", device="cpu")
    quantized = [m for m in bb.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    kept = [n for n, m in bb.model.named_modules() if type(m) is torch.nn.Linear and n != "lm_head"]
    assert quantized and kept
    for layer in quantized:
        _convert_weight_packed_for_cpu(layer.weight.data.clone(), __import__("copy").deepcopy(layer.weight.quant_state))
    assert "kept unquantized" in bb.notes[0] and "divisible by 32" in bb.notes[0]
