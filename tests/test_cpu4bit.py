"""medln.cpu4bit: a CPU-packed 4-bit layer comes out of state_dict() as it went in (issue 26), a
model loaded for training is never packed (the packed kernel has no backward), and the kernels
the tests force (tests/bnb_cpu.py) compute what bitsandbytes' do.

The layers are NF4 with double quantization: backbones.quantization_config's recipe."""

from __future__ import annotations

import pytest
import torch

import bnb_cpu
from medln.cpu4bit import cpu_4bit_kernel, dequant_while_training, keep_packed, remember_loaded

bnb = pytest.importorskip("bitsandbytes")
BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: rounding moves a value by at most 2^-9 of it


def nf4_layer(n_out=256, n_in=512, seed=0):
    """An NF4 Linear4bit on the CPU, quantized from a random dense layer."""
    torch.manual_seed(seed)
    dense = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():  # as transformers initializes (initializer_range): block scales spread as in a
        dense.weight.normal_(0, 0.02)  # real model (nn.Linear's uniform init makes them near-equal)
    layer = bnb.nn.Linear4bit(n_in, n_out, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=True)
    layer.load_state_dict(dense.state_dict())
    return layer.to("cpu").eval()  # quantizes


def packed(layer) -> bool:
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def test_the_kernel_this_cpu_takes_is_named():
    assert cpu_4bit_kernel() == ("avx512bf16" if bnb_cpu.native_avx512bf16() else "dequant")


def test_a_packed_layer_answers_the_same_after_state_dict(record_property):
    layer = nf4_layer()
    record_property("cpu_4bit_kernel", bnb_cpu.use(layer, "avx512bf16"))
    assert keep_packed(layer) == 1
    x = torch.randn(3, 512)
    with torch.no_grad():
        first = layer(x)
        assert packed(layer)
        for _ in range(3):  # what peft's load_adapter does to every layer of the model, each time
            saved = layer.state_dict()
            assert torch.equal(layer(x), first) and packed(layer)
    # what is saved is bitsandbytes' unpacked form, as without the guard
    plain = nf4_layer().state_dict()
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in plain.items()}
    assert torch.equal(saved["weight"], plain["weight"])  # the 4-bit codes round-trip exactly


def test_without_the_guard_bitsandbytes_changes_a_packed_layer():
    """The bug itself (a canary: if it fails, bitsandbytes no longer rewrites a packed layer in
    state_dict() and keep_packed has nothing left to do)."""
    layer = nf4_layer()
    bnb_cpu.use(layer, "avx512bf16")
    x = torch.randn(3, 512)
    with torch.no_grad():
        first = layer(x)
        scales = layer.weight.quant_state.absmax.clone()  # [in/64, out] bf16 once packed
        layer.state_dict()  # unpacks in place: the bf16 scales quantized again, to 8 bits
        again = layer(x)  # packs again, from those
    changed = layer.weight.quant_state.absmax != scales
    assert changed.any() and not torch.equal(again, first), "bitsandbytes kept the packed layer as it was"


def test_a_packed_layer_trains_on_its_loaded_weight_and_packs_again_after():
    """Packed by an answer after remember_loaded, a layer goes back to its loaded weight for
    training (its norm gets a gradient through it), packs nowhere inside the block, and answers
    exactly as before once the block ends."""
    layer = nf4_layer()
    bnb_cpu.use(layer, "avx512bf16")
    model = torch.nn.Sequential(torch.nn.LayerNorm(512), layer)
    x = torch.randn(3, 512)
    assert remember_loaded(model) == 1
    with torch.no_grad():
        first = model.eval()(x)
    assert packed(layer)
    with dequant_while_training(model) as n:
        assert n == 1 and not packed(layer)
        model.train()(x).square().sum().backward()
        with torch.no_grad():
            model.eval()(x)
        assert not packed(layer)
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        again = model.eval()(x)
    assert packed(layer) and torch.equal(again, first)
    # trained once: the loaded weight is let go; a second block unpacks with bitsandbytes' inverse
    assert not hasattr(layer, "_medln_loaded")
    model[0].weight.grad = None
    with dequant_while_training(model):
        assert not packed(layer)
        model.train()(x).square().sum().backward()
    assert model[0].weight.grad.abs().sum() > 0


def test_a_4bit_run_trains_the_same_on_a_cpu_that_packs(monkeypatch, tiny_model, dataset, tmp_path):
    """A 4-bit run answers before its first step (the base's scores, the probe ceiling's
    features): on an AVX512-BF16 CPU those answers packed the layers and the step failed (or,
    under the reference kernel, got no gradient through them). Built as on such a CPU, a run
    trains exactly what it trains where nothing packs."""
    from medln.config import TrainConfig
    from medln.train import prepare, train_run

    bnb_cpu.use(torch.nn.Module(), "avx512bf16")  # installs the reference kernel where the native one cannot run
    trained = {}
    for packs in (False, True):
        monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: packs)  # what Linear4bit.__init__ reads
        monkeypatch.setenv("MEDLN_CACHE", str(tmp_path / f"cache-{packs}"))  # the base is answered, not read back
        cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", quant="4bit", scope="ln",
                          steps=2, batch_size=2, warmup=0.0, lr=0.05, ood_split="")
        tunable = prepare(cfg, device="cpu")
        bnb_cpu.ran.clear()
        records = list(train_run(cfg, tmp_path / f"packs-{packs}", tunable=tunable))
        assert records[-1]["event"] == "done" and records[-1]["steps_done"] == 2
        assert bool(bnb_cpu.ran[bnb_cpu.label("avx512bf16")]) == packs
        trained[packs] = {n: p.detach().clone() for n, p in tunable.model.named_parameters() if p.requires_grad}
    assert trained[True].keys() == trained[False].keys()
    assert all(torch.equal(trained[True][n], trained[False][n]) for n in trained[False])


def test_the_reference_kernel_is_the_dequant_path_within_bf16():
    """The AVX512-BF16 path forced on a CPU without it (the reference) computes the layer: it
    differs from the exact fp32 dequant path by no more than its bf16 roundings allow (input,
    codebook and scale each within 2^-9, fp32 sums, the output within 2^-9 of itself; the
    bound allows a third more)."""
    x = torch.randn(5, 512)
    exact_layer, bf16_layer = nf4_layer(), nf4_layer()
    bnb_cpu.use(exact_layer, "dequant")
    bnb_cpu.use(bf16_layer, "avx512bf16")
    bnb_cpu.ran.clear()
    with torch.no_grad():
        exact = exact_layer(x)
        weight = bnb.functional.dequantize_4bit(exact_layer.weight.data, exact_layer.weight.quant_state)
        got = bf16_layer(x)
    assert set(bnb_cpu.ran) == {"dequant", bnb_cpu.label("avx512bf16")}
    bias = exact_layer.bias
    magnitude = x.abs() @ weight.abs().T  # sum of |x_k w_k| per output
    bound = 2 * BF16_EPS * magnitude + BF16_EPS / 2 * (exact - bias).abs() + 1e-6
    error = (got - exact).abs()
    assert (error <= bound).all(), f"worst excess {(error - bound).max():.3g}"
    assert error.max() > 0  # it did run in bf16


@pytest.mark.skipif(not bnb_cpu.native_avx512bf16(), reason="this CPU has no AVX512-BF16: no native kernel")
def test_the_reference_kernel_matches_the_native_one():
    """Same bf16 inputs, same order of fp32 sums: they may differ by the native instruction's
    flushed denormals and by a sum rounded another way (at most K fp32 roundings of the sum of
    |x_k w_k|), then by one bf16 step of the output (at most 2^-7 of it)."""
    layer = nf4_layer()
    bnb_cpu.use(layer, "avx512bf16")
    x = torch.randn(7, 512)
    with torch.no_grad():
        weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        layer(x)  # packs
    state = layer.weight.quant_state
    args = (x, layer.weight.data, state.shape, state.absmax, state.code, state.blocksize)
    native = torch.ops.bitsandbytes.gemv_4bit.default(*args)
    error = (bnb_cpu.reference_gemv_4bit(*args) - native).abs()
    bound = 2 * BF16_EPS * native.abs() + 2 * 512 * 2.0**-24 * (x.abs() @ weight.abs().T)
    assert (error <= bound).all(), f"worst excess {(error - bound).max():.3g}"
