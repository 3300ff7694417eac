"""medln.precision: which precision each kind of hardware gets (with a stand-in for torch.cuda),
the registry's fp16 refusal, accelerate's --mixed_precision, and the fp16 path trained on a CPU."""

from __future__ import annotations

import math

import pytest
import torch

from medln.backbones import FAMILIES, BackboneError, load_backbone
from medln.config import ConfigError, TrainConfig
from medln.precision import Device, PrecisionError, grad_scaler, resolve_precision
from medln.train import fit, prepare

T4 = Device("cuda", "Tesla T4", bf16=False)
A10G = Device("cuda", "NVIDIA A10G", bf16=True)
CPU = Device("cpu", "cpu")
NO_ENV: dict = {}


@pytest.mark.parametrize("device, fp16_ok, expected", [
    (CPU, True, "fp32"),
    (A10G, True, "bf16"),
    (T4, True, "fp16"),
    (T4, False, "fp32"),  # a family that overflows fp16 on a GPU without bf16: fp32, never NaNs
    (A10G, False, "bf16"),
])
def test_auto_follows_the_hardware(device, fp16_ok, expected):
    p = resolve_precision("auto", device=device, fp16_ok=fp16_ok, env=NO_ENV)
    assert p.name == expected
    assert p.scaled == (expected == "fp16")  # the gradient scaler only for fp16
    assert p.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[expected]


def test_auto_reads_torch_cuda_capabilities(monkeypatch):
    """A stand-in for torch.cuda: a T4 (no bf16) gets fp16, an Ampere card bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert Device.detect() == T4
    assert resolve_precision("auto", env=NO_ENV).name == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", env=NO_ENV).name == "bf16"
    assert resolve_precision("auto", device="cpu", env=NO_ENV).name == "fp32"


def test_fp16_refused_for_families_that_need_bf16():
    needs_bf16 = [f.name for f in FAMILIES.values() if not f.fp16_ok]
    assert needs_bf16 == ["gemma3"]  # MedGemma: data in the registry, not a name test
    with pytest.raises(PrecisionError, match="NaN.*bf16"):
        resolve_precision("fp16", device=A10G, fp16_ok=False, model="medgemma-4b (gemma3)", env=NO_ENV)
    with pytest.raises(PrecisionError, match="no bf16"):
        resolve_precision("bf16", device=T4, env=NO_ENV)
    with pytest.raises(PrecisionError, match="must be one of"):
        resolve_precision("fp8", device=CPU, env=NO_ENV)


def test_load_backbone_refuses_fp16_for_gemma3_before_loading(tiny_model):
    with pytest.raises(BackboneError, match="fp16 refused.*NaN"):
        load_backbone(str(tiny_model("gemma3")), precision="fp16", device="cpu")


def test_an_explicit_accelerate_mixed_precision_decides_auto():
    launched = {"ACCELERATE_MIXED_PRECISION": "fp16"}
    assert resolve_precision("auto", device=A10G, env=launched).name == "fp16"
    assert "accelerate" in resolve_precision("auto", device=A10G, env=launched).reason
    # accelerate writes "no" when nothing was chosen: not a choice
    assert resolve_precision("auto", device=A10G, env={"ACCELERATE_MIXED_PRECISION": "no"}).name == "bf16"
    # an explicit --precision wins, and says so
    p = resolve_precision("fp32", device=A10G, env=launched)
    assert p.name == "fp32" and any("overrides accelerate" in n for n in p.notes)
    with pytest.raises(PrecisionError, match="accelerate.*fp16 refused"):
        resolve_precision("auto", device=A10G, fp16_ok=False, env=launched)


def test_precision_is_a_config_field_and_cli_flag():
    from medln.__main__ import build_parser

    assert TrainConfig().precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="half").validate()
    args = build_parser().parse_args(["train", "--precision", "fp16"])
    assert args.precision == "fp16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--precision", "half"])


def _cfg(path, dataset, **kw) -> TrainConfig:
    base = dict(backbone=str(path), scope="ln", data=f"jsonl:{dataset}", steps=3, batch_size=2, warmup=0.0,
                lr=0.05, eval_split="", ood_split="")
    return TrainConfig(**{**base, **kw})


def test_fp16_trains_and_answers_on_a_cpu_with_a_scaler(tiny_model, dataset, train_samples, monkeypatch):
    """The T4 path on a CPU: 4-bit weights computing in fp16, the unquantized frozen weights
    fp16, the trained norms fp32, autocast and loss scaling, then fp16 generation."""
    import medln.train as train_mod
    from medln.data.images import load_image
    from medln.prompts import generate

    scalers = []

    def spy(p, device_type):
        s = grad_scaler(p, device_type)  # the real one (imported above)
        scalers.append(s)
        return s

    monkeypatch.setattr(train_mod, "grad_scaler", spy)
    cfg = _cfg(tiny_model("llava"), dataset, precision="fp16", quant="4bit", steps=2)
    tunable = prepare(cfg, device="cpu")
    model = tunable.model
    assert tunable.backbone.precision.name == "fp16"
    assert model.config.quantization_config.bnb_4bit_compute_dtype in (torch.float16, "float16")
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    frozen_float = {p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()}
    assert frozen_float == {torch.float16}  # lm_head, projector, norms: the precision's dtype
    records = list(fit(tunable, cfg, train_samples))
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
    assert len(scalers) == 1 and scalers[0].is_enabled()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), trained[n])]
    assert moved  # the scaler stepped (it skips a step whose gradients overflowed)
    sample = train_samples[0]
    answers = generate(tunable.backbone, model, [load_image(sample.image)], [sample.question], max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_bf16_and_fp32_use_no_scaler():
    assert not grad_scaler(resolve_precision("bf16", device=A10G, env=NO_ENV), "cpu").is_enabled()
    assert not grad_scaler(resolve_precision("auto", device=CPU, env=NO_ENV), "cpu").is_enabled()
