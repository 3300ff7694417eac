"""medln.kernels: fused RMSNorm computes what transformers' norms compute (forward and the
gradients LN tuning trains on), refuses a norm it cannot reproduce, and regional compile
keeps the model's outputs; both switches reach training through TrainConfig."""

from __future__ import annotations

import pytest
import torch


def _norm_classes():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRMSNorm

    return {"LlamaRMSNorm": LlamaRMSNorm, "Gemma3RMSNorm": Gemma3RMSNorm, "Qwen2VLRMSNorm": Qwen2VLRMSNorm}


@pytest.mark.parametrize("name,convention", [("LlamaRMSNorm", "scale"), ("Qwen2VLRMSNorm", "scale"),
                                             ("Gemma3RMSNorm", "one_plus")])
@pytest.mark.parametrize("x_dtype,w_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                             (torch.bfloat16, torch.bfloat16)])
def test_fused_norm_matches_forward_and_gradients(name, convention, x_dtype, w_dtype):
    from medln.kernels import fuse_norms

    cls = _norm_classes()[name]
    g = torch.Generator().manual_seed(1)
    eager, fused = cls(32), cls(32)
    with torch.no_grad():
        eager.weight.copy_(torch.randn(32, generator=g))
    fused.load_state_dict(eager.state_dict())
    eager.to(w_dtype), fused.to(w_dtype)
    report = fuse_norms(torch.nn.Sequential(fused))
    assert report.fused == 1 and report.classes == {name: convention}
    x = (torch.randn(4, 7, 32, generator=g) * 2).to(x_dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = eager(x1), fused(x2)
    assert y1.dtype == y2.dtype
    tol = 1e-5 if x_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y2.float(), y1.float(), rtol=tol, atol=tol)
    (y1.float() ** 2).sum().backward()
    (y2.float() ** 2).sum().backward()
    torch.testing.assert_close(fused.weight.grad.float(), eager.weight.grad.float(), rtol=tol * 5, atol=tol * 5)
    torch.testing.assert_close(x2.grad.float(), x1.grad.float(), rtol=tol * 5, atol=tol * 5)


def test_a_norm_no_convention_reproduces_is_left_alone():
    from medln.kernels import fuse_norms

    class OddRMSNorm(torch.nn.Module):  # a gain added, not multiplied: neither convention
        def __init__(self, d):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(d))
            self.eps = 1e-6

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) + self.weight

    model = torch.nn.Sequential(OddRMSNorm(16), torch.nn.LayerNorm(16))
    report = fuse_norms(model)
    assert report.fused == 0 and report.classes == {}
    assert any("OddRMSNorm matches no fused convention" in n for n in report.notes)
    assert "forward" not in vars(model[0])  # its own forward, untouched


def test_fused_and_compiled_tiny_llava_gives_the_same_logits():
    """The whole model: fused norms (peft's LN-tuning copies included) and regional compile
    (the eager backend: graph capture without code generation) change no output."""
    from medln.bench import build_model, shape_config, synthetic_batch
    from medln.kernels import compile_blocks, eager_if, fuse_norms
    from medln.methods import apply_scope, get_scope

    shape, config, family = shape_config("tiny")
    torch.manual_seed(0)
    model, _ = apply_scope(build_model(config, family, torch.device("cpu"), torch.float32), config, family,
                           get_scope("ln"))
    model.eval()
    inputs = synthetic_batch(shape, config, family, 2, 40)
    with torch.no_grad():
        want = model(**inputs).logits
    report = fuse_norms(model)
    n_norms = sum(1 for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    assert report.fused == n_norms > 0  # the base norms and peft's trained copies
    assert compile_blocks(model, backend="eager") == config.text_config.num_hidden_layers + \
        config.vision_config.num_hidden_layers
    with torch.no_grad():
        got = model(**inputs).logits
        with eager_if(True):
            eager = model(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager, want, rtol=1e-5, atol=1e-5)


def test_train_config_switches_reach_the_model(tiny_model, monkeypatch, tmp_path):
    """TrainConfig.fused_norms and .compile: the run's notes say so, training works, and the
    trained norms are the ones saved (the adapter holds them)."""
    import medln.kernels
    import medln.train
    from medln.config import TrainConfig
    from medln.train import train_run

    calls = []

    def eager_compile(model, backend="inductor"):  # inductor would need minutes of C++ here
        calls.append(backend)
        return medln.kernels.compile_blocks(model, backend="eager")

    monkeypatch.setattr(medln.train, "compile_blocks", eager_compile)
    cfg = TrainConfig(backbone=str(tiny_model("llava")), scope="ln", data="sample", steps=2, batch_size=2,
                      eval_split="", ood_split="", compile=True, fused_norms=True, lr=0.05)
    records = list(train_run(cfg, tmp_path / "run"))
    start = records[0]
    assert any(n.startswith("fused norms:") and "LlamaRMSNorm: scale" in n for n in start["notes"])
    assert any(n.startswith("torch.compile:") for n in start["notes"])
    assert calls == ["inductor"]
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert records[-1]["event"] == "done" and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_compile_and_fused_norms_default_off():
    from medln.config import TrainConfig

    cfg = TrainConfig()
    assert cfg.compile is False and cfg.fused_norms is False
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
