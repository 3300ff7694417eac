"""`inspect` (where the weights moved) on real tiny runs, checked against norms computed here
from the saved adapter and the base weights; `merge` (adapter folded into the base) and the
swapped-in tuned path give the adapter's exact generations."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from medln.backbones import load_backbone
from medln.config import TrainConfig
from medln.data.images import load_image
from medln.prompts import generate
from medln.runs import attach_run as load_run_model
from medln.methods import ScopeError
from medln.train import fit, prepare, train_run

pytestmark = [pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning"),
              pytest.mark.filterwarnings("ignore:Detected that the base layer has no bias:UserWarning")]


def cfg_for(path, dataset, scope, **kw) -> TrainConfig:
    base = dict(backbone=str(path), scope=scope, data=f"jsonl:{dataset}", steps=2, batch_size=4, warmup=0.0,
                lr=0.05, eval_split="", ood_split="")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tiny_model, dataset, tmp_path_factory):
    """Three real runs on the tiny LLaVA: ln with seeds 0 and 1, and lora."""
    root = tmp_path_factory.mktemp("inspect-runs")
    path = tiny_model("llava")
    out = {}
    for name, scope, seed in (("ln0", "ln", 0), ("ln1", "ln", 1), ("lora", "lora", 0)):
        list(train_run(cfg_for(path, dataset, scope, seed=seed, lr=0.05 if scope == "ln" else 0.01), root / name))
        out[name] = root / name
    return out


def test_inspect_json_matches_norms_computed_from_the_adapter(runs, tiny_model):
    result = json.loads((runs["ln0"] / "inspect.json").read_text())
    adapter = load_file(runs["ln0"] / "adapter" / "adapter_model.safetensors")
    base = load_backbone(str(tiny_model("llava"))).model
    expected = {}
    for key, trained in adapter.items():  # base_model.model.<module>.ln_tuning_layers.<weight|bias>
        module, _, pname = key.removeprefix("base_model.model.").rpartition(".ln_tuning_layers.")
        b = getattr(base.get_submodule(module), pname).detach().float()
        delta = float((trained.float() - b).norm())
        expected[(module, "gain" if pname == "weight" else "bias")] = (delta, float(b.norm()))
    rows = {(r["module"], r["param"]): r for r in result["rows"]}
    assert set(rows) == set(expected)
    for k, (delta, ref) in expected.items():
        assert rows[k]["delta_norm"] == pytest.approx(delta, rel=1e-5, abs=1e-7)
        assert rows[k]["rel"] == (pytest.approx(delta / ref, rel=1e-5) if ref else None)  # β starts at 0
        assert rows[k]["part"] in ("vision", "connector", "llm")
    assert any(r["delta_norm"] > 0 for r in rows.values())
    # Per-layer profile of the language model: one entry per decoder layer.
    n = base.config.text_config.num_hidden_layers
    assert sorted(result["layers"]["llm"], key=int) == [str(i) for i in range(n)]
    top = result["top"]["relative"][0]
    assert top["rel"] == max(r["rel"] for r in rows.values() if r["param"] == "gain")


def test_inspect_command_compares_seeds_and_lora(runs):
    from medln.__main__ import main

    assert main(["inspect", str(runs["ln0"]), "--with", str(runs["ln1"]), str(runs["lora"])]) == 0
    result = json.loads((runs["ln0"] / "inspect.json").read_text())
    by_run = {c["run"]: c for c in result["compare"]}
    seed = by_run[str(runs["ln1"])]
    assert seed["same_scope"] and seed["common_tensors"] == len(result["rows"])
    assert seed["spearman_tensors"] is not None and -1 <= seed["spearman_tensors"] <= 1
    lora = by_run[str(runs["lora"])]
    assert not lora["same_scope"] and lora["common_tensors"] == 0
    # Per language-model layer: the norms' ‖Δγ‖/‖γ‖ against LoRA's ‖ΔW‖/‖W‖ (a rank correlation
    # needs 3 layers; the tiny decoder may have fewer).
    lora_layers = result["others"][str(runs["lora"])]["llm"]
    assert sorted(lora_layers) == sorted(result["layers"]["llm"]) and all(v > 0 for v in lora_layers.values())
    assert (lora["spearman_llm_layers"] is None) == (len(lora_layers) < 3)
    html = (runs["ln0"] / "inspect.html").read_text()
    assert "Where the weights moved" in html and "plotly" in html.lower()

    # LoRA's rows: ‖B·A·alpha/r‖ per projection, from the saved matrices.
    lora_rows = {r["module"]: r for r in json.loads((runs["lora"] / "inspect.json").read_text())["rows"]}
    adapter = load_file(runs["lora"] / "adapter" / "adapter_model.safetensors")
    for key, a in adapter.items():
        if ".lora_A." in key:
            module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            b = adapter[key.replace("lora_A", "lora_B")]
            assert lora_rows[module]["delta_norm"] == pytest.approx(float((b @ a).norm()) * 16 / 8, rel=1e-4)


def test_gemma_style_gain_is_measured_against_one_plus_w():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from medln.methods.norm import gain_offset as _gain_offset

    g, ll = Gemma3RMSNorm(8), LlamaRMSNorm(8)
    torch.nn.init.normal_(g.weight, 0, 0.1)
    assert _gain_offset(g) == 1.0 and _gain_offset(ll) == 0.0


# --------------------------------------------------------------------------- merge


def answers(bb, model, images, questions):
    return generate(bb, model, images, questions, max_new_tokens=8)


@pytest.mark.parametrize("scope", ["ln", "lora", "ia3", "bitfit", "ln-lora"])
def test_merged_model_generates_exactly_what_the_adapter_does(scope, tiny_model, train_samples):
    from peft.tuners.ln_tuning.layer import LNTuningLayer

    from medln.merge import merge_model, swapped_in

    path = str(tiny_model("llava"))
    cfg = TrainConfig(backbone=path, scope=scope, lr=0.05, steps=1, batch_size=4, warmup=0.0, eval_split="",
                      ood_split="").validate()
    bb = load_backbone(path)
    tunable = prepare(cfg, backbone=bb)
    samples = [s for s in train_samples if s.task == "vqa"][:4]
    list(fit(tunable, cfg, samples))
    samples = samples[:2]
    model = tunable.model.eval()
    images = [load_image(s.image, where=s.id) for s in samples]
    questions = [s.question for s in samples]
    with model.disable_adapter():
        base = answers(bb, model, images, questions)
    tuned = answers(bb, model, images, questions)
    if scope == "ln":
        wrappers = sum(isinstance(m, LNTuningLayer) for m in model.modules())
        with swapped_in(model):
            assert not any(isinstance(m, LNTuningLayer) for m in model.modules())
            assert answers(bb, model, images, questions) == tuned
        assert sum(isinstance(m, LNTuningLayer) for m in model.modules()) == wrappers
        with model.disable_adapter():
            assert answers(bb, model, images, questions) == base
    merged = merge_model(model)
    assert not hasattr(merged, "peft_config")
    assert answers(bb, merged, images, questions) == tuned


def test_merge_command_writes_a_standalone_model(runs, tiny_model, dataset, tmp_path, train_samples):
    from medln.__main__ import main

    out = tmp_path / "merged"
    assert main(["merge", str(runs["ln0"]), "--out", str(out)]) == 0
    info = json.loads((out / "medln-merged.json").read_text())
    assert info["scope"] == "ln" and info["peft_type"] == "LN_TUNING"
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    samples = [s for s in train_samples if s.task == "vqa"][:2]
    images = [load_image(s.image, where=s.id) for s in samples]
    questions = [s.question for s in samples]
    bb = load_backbone(str(tiny_model("llava")))
    with_adapter = answers(bb, load_run_model(bb, runs["ln0"]).eval(), images, questions)
    standalone = load_backbone(str(out))
    assert answers(standalone, standalone.model, images, questions) == with_adapter
    assert main(["merge", str(runs["ln0"]), "--out", str(out)]) == 2  # never over an existing model


def test_a_soft_prompt_has_nothing_to_merge(tiny_model):
    from peft import PromptTuningConfig, get_peft_model

    from medln.merge import merge_model

    bb = load_backbone(str(tiny_model("llava")))
    model = get_peft_model(bb.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with pytest.raises(ScopeError, match="nothing to merge"):
        merge_model(model)


def test_app_panels_merge_download_and_heatmap(runs):
    """The Fine-tune tab's merged-model download and its 'where the weights moved' panel."""
    import zipfile

    from medln.ui.downloads import merged_zip
    from medln.ui.finetune import movement_update

    names = set(zipfile.ZipFile(merged_zip(runs["ln1"])).namelist())
    stem = f"{runs['ln1'].name}-merged"
    assert {f"{stem}/config.json", f"{stem}/model.safetensors", f"{stem}/medln-merged.json"} <= names
    shown = movement_update(runs["ln1"])
    assert shown["visible"] is True and shown["value"].data  # a plotly figure with traces
    assert movement_update(None)["visible"] is False
