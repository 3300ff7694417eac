"""The benchmark on a CPU: correctness of rows, shapes and accounting, never timings.

The `tiny` shape runs every code path (peft scopes, full fine-tuning, 4-bit, refusal); the
real shapes are checked on the meta device (parameter counts against docs/reference.md) and, at
toy widths, with their real image geometry and sequence layout.
"""

from __future__ import annotations

import json
import math

import pytest

from medln.__main__ import main
from medln.bench import (
    ROW_KEYS,
    SHAPES,
    BenchConfig,
    bench_row,
    image_tokens,
    meta_param_count,
    merge_results,
    peak_tflops,
    run_bench,
    shape_config,
    synthetic_batch,
    training_flops,
)
from medln.methods import count_from_config, get_scope

REAL = ["llava-7b", "smolvlm-256m", "qwen2-vl-2b", "medgemma-4b"]
IMAGE_TOKENS = {"llava-7b": 576, "smolvlm-256m": 64, "qwen2-vl-2b": 576, "medgemma-4b": 256}
QUICK = dict(steps=1, warmup=0, gen_tokens=2, gen_text=2, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy matmuls gain nothing from threads, and on a busy 2-core machine two OpenMP threads
    wait on each other for milliseconds per call (a 25x slower test)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_rows():
    cfg = BenchConfig(shape="tiny", scopes="ln,lora,attn,full", quant="none,4bit", batch="2", seq="40", **QUICK)
    rows = run_bench(cfg)["rows"]
    return {(r["scope"], r["quant"]): r for r in rows}


@pytest.mark.parametrize("name", REAL)
def test_real_shapes_match_reference_parameter_counts(name):
    count = meta_param_count(name)
    reference = SHAPES[name].reference_params
    assert abs(count - reference) / reference < 0.01, f"{name}: {count:,} vs REFERENCE {reference:,}"


@pytest.mark.parametrize("name", REAL)
def test_real_shape_inputs_carry_one_image(name):
    shape, config, family = shape_config(name)
    batch = synthetic_batch(shape, config, family, 2, IMAGE_TOKENS[name] + 40, seed=1)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (2, IMAGE_TOKENS[name] + 40)
    assert image_tokens(shape, config, family) == IMAGE_TOKENS[name]
    assert ((ids == config.image_token_id).sum(dim=1) == IMAGE_TOKENS[name]).all()
    assert (labels[ids == config.image_token_id] == -100).all()  # no loss on image placeholders
    assert (labels != -100).sum() > 0
    assert batch["pixel_values"].is_floating_point()


def test_tiny_rows_have_every_key_with_sane_types(tiny_rows):
    assert set(tiny_rows) == {(s, q) for s in ("ln", "lora", "attn", "full") for q in ("none", "4bit")}
    for (scope, quant), row in tiny_rows.items():
        assert set(ROW_KEYS) <= set(row), (scope, quant)
        if (scope, quant) == ("full", "4bit"):
            continue
        assert row["skipped"] is None, row["skipped"]
        assert isinstance(row["step_s"], float) and row["step_s"] > 0
        assert row["tokens_per_s"] > 0
        assert isinstance(row["trainable"], int) and row["trainable"] > 0
        assert isinstance(row["adapter_bytes"], int) and row["adapter_bytes"] > 0
        assert row["peak_mem_gb"] is None and row["mfu"] is None  # CPU: no GPU memory, no peak FLOP/s
        assert row["gen_tokens_per_s_base"] > 0 and row["gen_tokens_per_s_tuned"] > 0
        assert row["gen_first_token_s_base"] > 0 and row["gen_first_token_s_tuned"] > 0
        assert math.isfinite(row["loss"])
        assert row["flops_per_step"] > 0 and row["image_tokens"] == 16
        assert (row["shape"], row["batch"], row["seq"]) == ("tiny", 2, 40)
    json.dumps(list(tiny_rows.values()))


def test_tiny_trainable_counts_follow_the_scope_rule(tiny_rows):
    shape, config, family = shape_config("tiny")
    for scope in ("ln", "lora", "attn"):
        expected = count_from_config(config, family, get_scope(scope)).trainable
        for quant in ("none", "4bit"):
            row = tiny_rows[(scope, quant)]
            assert row["trainable"] == expected, (scope, quant)
            assert row["adapter_bytes"] == 4 * expected  # trained tensors are saved in fp32
    full = tiny_rows[("full", "none")]
    assert full["trainable"] == full["total_params"]
    assert tiny_rows[("ln", "none")]["trainable"] < tiny_rows[("lora", "none")]["trainable"] < full["trainable"]


def test_full_fine_tuning_of_4bit_weights_is_skipped_with_a_reason(tiny_rows):
    row = tiny_rows[("full", "4bit")]
    assert "4-bit" in row["skipped"]
    assert row["step_s"] is None and row["trainable"] is None


@pytest.mark.parametrize("scope,quant", [("ln", "none"), ("lora", "4bit")])
@pytest.mark.parametrize("name", REAL)
def test_real_shapes_run_at_toy_widths(name, scope, quant):
    shape, config, family = shape_config(name, toy=True)
    cfg = BenchConfig(toy=True, steps=1, warmup=0, gen_tokens=2, gen_text=2, device="cpu")
    row = bench_row(cfg, name, scope, quant, 1, IMAGE_TOKENS[name] + 12)
    assert row["skipped"] is None, row["skipped"]
    assert row["image_tokens"] == IMAGE_TOKENS[name]
    assert row["trainable"] == count_from_config(config, family, get_scope(scope)).trainable
    assert row["step_s"] > 0 and math.isfinite(row["loss"]) and row["gen_tokens_per_s_tuned"] > 0


def test_gradient_checkpointing_row_records_its_flag():
    cfg = BenchConfig(grad_ckpt=True, sdpa=False, **QUICK)
    row = bench_row(cfg, "tiny", "ln", "none", 2, 40)
    assert row["skipped"] is None, row["skipped"]
    assert row["grad_ckpt"] is True and row["sdpa"] is False and row["compile"] is False
    assert row["gen_tokens_per_s_tuned"] > 0  # generation after checkpointed training


def test_4bit_keeps_trained_projections_and_the_projector_unquantized():
    import bitsandbytes as bnb
    import torch

    from medln.bench import build_model, quantize_4bit

    shape, config, family = shape_config("tiny")
    model = build_model(config, family, "cpu", torch.float32)
    keep = list(family.not_quantized) + count_from_config(config, family, get_scope("attn")).modules
    n = quantize_4bit(model, keep, torch.float32)
    kinds = {name: type(m) for name, m in model.named_modules()}
    assert kinds["model.language_model.layers.0.self_attn.q_proj"] is torch.nn.Linear
    assert kinds["model.language_model.layers.0.mlp.up_proj"] is bnb.nn.Linear4bit
    assert kinds["model.vision_tower.encoder.layers.0.mlp.fc1"] is bnb.nn.Linear4bit
    assert kinds["model.multi_modal_projector.linear_1"] is torch.nn.Linear and kinds["lm_head"] is torch.nn.Linear
    assert n == sum(k is bnb.nn.Linear4bit for k in kinds.values())


def test_flops_rule_per_part():
    family = shape_config("tiny")[2]
    fwd = {"model.vision_tower.encoder.layers.0.mlp.fc1": 10, "model.multi_modal_projector.linear_1": 100,
           "model.language_model.layers.0.mlp.up_proj": 1000, "lm_head": 10000}
    total = sum(fwd.values())
    assert training_flops(fwd, family, get_scope("full"), [""]) == 3 * total  # 6·N·tokens
    ln_all = ["model.vision_tower.encoder.layers.0.layer_norm1", "model.language_model.norm"]
    assert training_flops(fwd, family, get_scope("ln"), ln_all) == 2 * total  # 4·N·tokens
    lora = ["model.language_model.layers.0.mlp.up_proj"]
    assert training_flops(fwd, family, get_scope("lora"), lora) == 10 + 100 + 2 * 11000  # vision forward only
    assert training_flops(fwd, family, get_scope("ffn"), lora) == 10 + 100 + 2 * 10000 + 3 * 1000


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("cpu") is None


def test_cli_json_and_results_file(tmp_path, capsys):
    argv = ["bench", "--shape", "tiny", "--scopes", "ln", "--quant", "none", "--batch", "1", "--seq", "24",
            "--steps", "1", "--warmup", "0", "--gen-tokens", "2", "--device", "cpu", "--json", "--out", f"{tmp_path}/"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu" and len(out["rows"]) == 1 and out["rows"][0]["scope"] == "ln"
    written = json.loads((tmp_path / "cpu.json").read_text())
    assert written["rows"] == out["rows"]
    # merging two result files of one device: later rows replace rows with the same settings
    (tmp_path / "b.json").write_text(json.dumps({**out, "rows": [{**out["rows"][0], "step_s": 9.0},
                                                                 {**out["rows"][0], "batch": 8}]}))
    assert main(["bench", "--merge", str(tmp_path / "cpu.json"), str(tmp_path / "b.json"), "--out",
                 str(tmp_path / "all.json")]) == 0
    merged = merge_results([str(tmp_path / "all.json")])
    assert [(r["batch"], r["step_s"]) for r in merged["rows"]] == [(1, 9.0), (8, out["rows"][0]["step_s"])]


def test_bad_arguments_exit_2_with_every_problem(capsys):
    assert main(["bench", "--shape", "nope", "--scopes", "ln,bogus", "--quant", "8bit"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "bogus" in err and "8bit" in err
    assert main(["bench", "--shape", "llava-7b", "--seq", "100"]) == 2
    assert "too short" in capsys.readouterr().err
