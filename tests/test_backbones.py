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


def test_concurrent_builds_keep_every_dtype(monkeypatch):
    """Issue 25: the app's 1-step fine-tune failed with "mat1 and mat2 must have the same dtype,
    Float and Half" when a request counted parameters (a meta model of medln-tiny, whose
    config says float16) while the job loaded its model: transformers sets the process's
    default dtype around every build. meta_model no longer sets it; loads hold BUILD_LOCK."""
    import threading

    import torch

    from medln.backbones import load_backbone, load_config, meta_model

    _, config, family = load_config("medln-tiny")
    assert str(config.dtype).endswith("float16")  # the condition: a half-precision config
    set_to = []
    real_set = torch.set_default_dtype
    monkeypatch.setattr(torch, "set_default_dtype", lambda d: (set_to.append(d), real_set(d)))
    meta_model(config, family)
    assert set_to == [] and torch.get_default_dtype() == torch.float32
    assert str(config.dtype).endswith("float16")  # the shared config is not rewritten

    stop = threading.Event()

    def count_forever():
        while not stop.is_set():
            meta_model(config, family)

    thread = threading.Thread(target=count_forever)
    thread.start()
    try:
        for _ in range(3):
            model = load_backbone("medln-tiny", device="cpu").model
            assert {p.dtype for p in model.parameters()} == {torch.float32}
    finally:
        stop.set()
        thread.join()
    assert torch.get_default_dtype() == torch.float32
