"""train_run end to end on tiny models: the run folder contract, adapters that reload with
PeftModel.from_pretrained to the same outputs, determinism on the CPU and the stop flag."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from conftest import FAMILY_NAMES
from medln.backbones import load_backbone
from medln.config import TrainConfig
from medln.prompts import encode_for_training
from medln.runs import RunDir, attach_run
from medln.train import prepare, train_run

# peft warns for every LN-tuning target that is not a known layer type; wrapping norms (and
# whole projections for attn/ffn) is exactly what medln asks of it.
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


def cfg_for(path, dataset, scope="ln", **kw) -> TrainConfig:
    base = dict(backbone=str(path), scope=scope, data=f"jsonl:{dataset}", steps=1, batch_size=4, warmup=0.0,
                lr=0.05, eval_split="", ood_split="")
    return TrainConfig(**{**base, **kw})


@torch.no_grad()
def outputs(model, batch) -> dict[str, torch.Tensor]:
    """Every tensor the forward returns (loss, logits; BLIP: loss and image embeddings)."""
    model.eval()
    out = model(**batch)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)


def differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-5) for k in a)


def run(cfg, out, **kw) -> list[dict]:
    return list(train_run(cfg, out, **kw))


# --------------------------------------------------------------------------- run folder + reload


@pytest.mark.parametrize("family,scope", [(f, "ln") for f in FAMILY_NAMES] + [("llava", "lora"), ("qwen2_vl", "attn")])
def test_run_folder_and_adapter_reload(family, scope, tiny_model, dataset, train_samples, tmp_path):
    from peft import PeftModel

    path = tiny_model(family)
    cfg = cfg_for(path, dataset, scope, steps=2 if scope == "lora" else 1)
    tunable = prepare(cfg, device="cpu")
    records = run(cfg, tmp_path / "run", tunable=tunable)

    start = records[0]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["event"] for r in records] == ["start"] + ["step"] * cfg.steps + ["eval", "eval", "done"]
    assert [r["step"] for r in steps] == list(range(1, cfg.steps + 1))
    rd = RunDir(tmp_path / "run")
    assert {p.name for p in rd.path.iterdir()} == {"config.json", "metrics.jsonl", "eval.json", "adapter", "inspect.json"}
    assert rd.complete
    saved = rd.config()
    assert saved["config"] == cfg.to_dict()
    assert saved["trainable"] == start["trainable"] == tunable.selection.trainable
    assert saved["family"] == family and saved["num_processes"] == 1
    assert rd.metrics() == steps
    ev = rd.eval()
    assert ev["status"] == "completed" and ev["steps_done"] == cfg.steps
    assert ev["adapter_bytes"] > 0 and ev["base"] == {} and ev["tuned"] == {}
    assert (rd.adapter_dir / "adapter_config.json").is_file()
    assert (rd.adapter_dir / "adapter_model.safetensors").is_file()
    # The adapter stands alone: a portable base name (never this machine's path) and a model card.
    adapter_config = json.loads((rd.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == path.name
    card = (rd.adapter_dir / "README.md").read_text()
    assert "not for clinical use" in card and f"{start['trainable']:,}" in card and "PeftModel.from_pretrained" in card
    assert saved["base"]["backbone"] == str(path) and saved["base"]["dtype"] == "float32"

    # The adapter holds exactly the trained tensors: same count of numbers.
    from safetensors.torch import load_file

    adapter = load_file(rd.adapter_dir / "adapter_model.safetensors")
    assert sum(t.numel() for t in adapter.values()) == tunable.selection.trainable

    # Reload on a fresh base: same outputs as the tuned model in memory; adapter off = base.
    bb = load_backbone(str(path))
    batch = encode_for_training(bb, train_samples[:3] + train_samples[-1:])
    base_out = outputs(bb.model, batch)
    tuned_out = outputs(tunable.model, batch)
    assert differs(base_out, tuned_out), "training did not change the outputs: the comparison would be vacuous"
    reloaded = PeftModel.from_pretrained(bb.model, rd.adapter_dir)
    assert_same(outputs(reloaded, batch), tuned_out)
    with reloaded.disable_adapter():
        assert_same(outputs(reloaded, batch), base_out)


def test_4bit_run_reloads_in_4bit(tiny_model, dataset, train_samples, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel

    path = tiny_model("llava")
    cfg = cfg_for(path, dataset, "ln", quant="4bit")
    tunable = prepare(cfg, device="cpu")
    records = run(cfg, tmp_path / "run", tunable=tunable)
    assert records[-1]["status"] == "completed"
    bb = load_backbone(str(path), quant="4bit", device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in bb.model.modules())
    batch = encode_for_training(bb, train_samples[:4])
    reloaded = PeftModel.from_pretrained(bb.model, tmp_path / "run" / "adapter")
    assert_same(outputs(reloaded, batch), outputs(tunable.model, batch))


def test_full_scope_saves_a_checkpoint_that_loads(tiny_model, dataset, train_samples, tmp_path):
    path = tiny_model("llava")
    cfg = cfg_for(path, dataset, "full", lr=1e-3)
    tunable = prepare(cfg, device="cpu")
    run(cfg, tmp_path / "run", tunable=tunable)
    rd = RunDir(tmp_path / "run")
    assert rd.complete and not (rd.adapter_dir / "adapter_config.json").exists()
    bb = load_backbone(str(path))
    batch = encode_for_training(bb, train_samples[:4])
    base_out = outputs(bb.model, batch)
    loaded = attach_run(bb, rd.path)
    tuned_out = outputs(tunable.model, batch)
    assert differs(base_out, tuned_out)
    assert_same(outputs(loaded, batch), tuned_out)


def test_run_with_evaluation_writes_base_and_tuned_metrics(tiny_model, dataset, tmp_path):
    cfg = cfg_for(tiny_model("llava"), dataset, eval_split="test", eval_limit=2, eval_batch_size=2)
    done = run(cfg, tmp_path / "run")[-1]
    ev = RunDir(tmp_path / "run").eval()
    assert ev == {k: v for k, v in done.items() if k not in ("event", "run")}
    for which in ("base", "tuned"):
        assert set(ev[which]) == {"test"}
        assert ev[which]["test"]["n"] == 2
        assert 0.0 <= ev[which]["test"]["overall"] <= 1.0


def test_existing_run_folder_is_not_overwritten(tiny_model, dataset, tmp_path):
    cfg = cfg_for(tiny_model("llava"), dataset)
    run(cfg, tmp_path / "run")
    from medln.runs import RunError

    with pytest.raises(RunError, match="already holds a finished run"):
        run(cfg, tmp_path / "run")


# --------------------------------------------------------------------------- determinism, stop flag


def losses(records) -> list[float]:
    return [r["loss"] for r in records if "loss" in r]


def test_seeded_runs_are_deterministic_on_cpu(tiny_model, dataset, tmp_path):
    path = tiny_model("llava")
    first = losses(run(cfg_for(path, dataset, "lora", steps=3, batch_size=2, seed=7), tmp_path / "a"))
    second = losses(run(cfg_for(path, dataset, "lora", steps=3, batch_size=2, seed=7), tmp_path / "b"))
    other = losses(run(cfg_for(path, dataset, "lora", steps=3, batch_size=2, seed=8), tmp_path / "c"))
    assert len(first) == 3
    assert first == second
    assert first != other  # the seed does drive data order / initialisation
    a = RunDir(tmp_path / "a").adapter_dir / "adapter_model.safetensors"
    b = RunDir(tmp_path / "b").adapter_dir / "adapter_model.safetensors"
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_stop_flag_ends_training_within_one_step(tiny_model, dataset, tmp_path):
    stop = threading.Event()
    cfg = cfg_for(tiny_model("llava"), dataset, steps=50, batch_size=2)
    records = []
    for record in train_run(cfg, tmp_path / "run", stop=stop):
        records.append(record)
        if record["event"] == "step" and record["step"] == 1:
            stop.set()
    kinds = [r["event"] for r in records]
    assert kinds == ["start", "step", "stopped", "eval", "eval", "done"]
    assert records[2]["step"] == 1
    done = records[-1]
    assert done["status"] == "stopped" and done["steps_done"] == 1
    rd = RunDir(tmp_path / "run")
    assert rd.complete and (rd.adapter_dir / "adapter_config.json").is_file()
    assert rd.eval()["status"] == "stopped"
    assert [r["event"] for r in rd.metrics()] == ["step", "stopped"]


def test_stop_flag_set_from_another_thread(tiny_model, dataset, tmp_path):
    """The UI sets the flag from a request thread while a worker trains."""
    stop = threading.Event()
    cfg = cfg_for(tiny_model("llava"), dataset, steps=1000, batch_size=2)
    seen: list[dict] = []
    first_step = threading.Event()

    def worker():
        for record in train_run(cfg, tmp_path / "run", stop=stop):
            seen.append(record)
            if "loss" in record:
                first_step.set()

    t = threading.Thread(target=worker)
    t.start()
    assert first_step.wait(120)
    stop.set()
    steps_seen = sum("loss" in r for r in seen)
    t.join(120)
    assert not t.is_alive()
    done = seen[-1]
    assert done["event"] == "done" and done["status"] == "stopped"
    # fit checks the flag before every micro-batch: at most the step under way finishes
    assert steps_seen <= done["steps_done"] <= steps_seen + 1
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["status"] == "stopped"
