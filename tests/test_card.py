"""Model cards (medln.card): the metadata the Hub reads, a loading snippet that really gives the
run's outputs, the bundled base explained, the merged model's card, files readable by all."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
import torch

from medln import ASSETS
from medln.config import TrainConfig
from medln.metrics import METRICS
from medln.runs import RunDir
from medln.train import train_run

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


def default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory):
    """One step of `ln` on the bundled medln-tiny, scored on the test split (VQA + a report)."""
    out = tmp_path_factory.mktemp("card") / "run"
    cfg = TrainConfig(backbone="medln-tiny", scope="ln", data=f"jsonl:{dataset}", steps=1, batch_size=4, warmup=0.0,
                      lr=0.05, eval_split="test", ood_split="")
    records = list(train_run(cfg, out))
    assert records[-1]["event"] == "done"
    return RunDir(out)


def snippet(card_text: str) -> str:
    return re.search(r"## Load it\n\n```python\n(.*?)```", card_text, re.S).group(1)


def test_adapter_card_carries_the_hub_metadata(tiny_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_run.adapter_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit"  # medln-tiny's, from the registry
    assert data["base_model"] == "medln-tiny"
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "image-text-to-text"
    assert "datasets" not in data  # local JSONL data: nothing on the Hub to name
    assert set(data["metrics"]) >= {"accuracy", "bleu", "rouge"}
    tuned = tiny_run.eval()["tuned"]["test"]
    results = {m["name"]: m["value"] for r in data["model-index"][0]["results"] for m in r["metrics"]}
    label = {name: m.label for name, m in METRICS.items()}  # the one metrics table names them
    assert results[f"{label['closed_accuracy']} (n={tuned['n_closed']})"] == round(tuned["closed_accuracy"], 4)
    assert results[f"{label['bleu_4']} (n={tuned['n_report']})"] == round(tuned["bleu_4"], 4)
    text = card.text
    assert "not for clinical use" in text and f"| test | {label['overall']} | 3 |" in text
    # The data set is named without this machine's folders
    assert str(tiny_run.path.parent) not in card.content and os.path.dirname(json.loads(
        (tiny_run.path / "config.json").read_text())["config"]["data"][6:]) not in card.content


def test_the_run_records_what_it_used(tiny_run):
    from medln.revisions import fingerprint

    revisions = tiny_run.config()["revisions"]
    assert revisions["backbone"] == {"source": "local", "name": "medln-tiny", "sha256": fingerprint(ASSETS / "medln-tiny")}
    assert revisions["data"]["source"] == "local" and revisions["data"]["n"] == 12
    assert re.fullmatch(r"[0-9a-f]{64}", revisions["data"]["samples_sha256"])


def test_the_card_explains_the_bundled_base(tiny_run):
    text = (tiny_run.adapter_dir / "README.md").read_text()
    assert 'medln.ASSETS / "medln-tiny"' in text and "AutoPeftModel" in text and "not on the Hub" in text
    # adapter_config.json names the registry name, which the card explains
    assert json.loads((tiny_run.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "medln-tiny"


def test_the_snippet_gives_the_runs_own_outputs(tiny_run, train_samples):
    """The card's code, run as written (only the adapter path filled in), builds the model that
    `medln ask` / load_run builds: same dtype (float32 on a CPU; the checkpoint is stored in
    float16) and the same logits."""
    from medln.prompts import encode_for_training
    from medln.runs import load_run

    code = snippet((tiny_run.adapter_dir / "README.md").read_text())
    assert "dtype=torch.float32" in code
    scope: dict = {}
    exec(code.replace("path/to/this/folder", str(tiny_run.adapter_dir)), scope)  # noqa: S102 - our own card
    model = scope["model"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    bb = load_run(tiny_run.path, device="cpu")
    batch = encode_for_training(bb, train_samples[:3])
    with torch.no_grad():
        theirs = model(**batch).logits
        ours = bb.model(**batch).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0)


def test_saved_files_are_readable_by_all(tiny_run):
    """safetensors writes 0600 temporary files and renames them (medln.runs.give_default_modes)."""
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tiny_run.adapter_dir.iterdir()}
    assert modes["adapter_model.safetensors"] == default_mode(), modes
    assert set(modes.values()) == {default_mode()}


def test_merged_model_has_its_card(tiny_run, tmp_path):
    from huggingface_hub import ModelCard

    from medln.merge import merge_run

    info = merge_run(tiny_run.path, tmp_path / "merged", device="cpu")
    card = ModelCard.load(tmp_path / "merged" / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert card.data.base_model == "medln-tiny" and card.data.pipeline_tag == "image-text-to-text"
    assert f"dtype=torch.{info['dtype']}" in snippet(card.content)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "merged").iterdir()} == {default_mode()}


def record_for(backbone: str, **config) -> dict:
    return {"config": {"scope": "ln", "data": "sample", "split": "train", "steps": 5, "batch_size": 4,
                       "grad_accum": 1, "seed": 0, **config},
            "base": {"backbone": backbone, "quant": "none", "keep": [], "dtype": "bfloat16"},
            "family": "qwen2_vl", "trainable": 10, "total": 100, "percent": 10.0, "precision": "bf16",
            "revisions": {"backbone": {"source": "hub", "id": "Qwen/Qwen2-VL-2B-Instruct", "requested": "v1",
                                       "commit": "a" * 40},
                          "data": {"source": "hub", "id": "someorg/set", "commit": "b" * 40}}}


def test_a_hub_base_is_named_at_its_commit():
    from medln.card import adapter_card

    card = adapter_card(record_for("qwen2-vl-2b@v1", data="hf:someorg/set@main:en"), {}, repo_id="me/ln-qwen")
    data = card.data.to_dict()
    assert data["base_model"] == "Qwen/Qwen2-VL-2B-Instruct" and data["license"] == "apache-2.0"
    assert data["datasets"] == ["someorg/set"]
    code = snippet(card.content)
    assert f'revision="{"a" * 40}"' in code and "dtype=torch.bfloat16" in code
    assert 'PeftModel.from_pretrained(base, "me/ln-qwen")' in code and "medln.ASSETS" not in code


def test_a_pushed_card_names_no_base_outside_the_hub(tiny_run):
    """The Hub accepts only Hub ids as base_model: a pushed card of a bundled-base run leaves
    it out (the text still says which base and how to load it)."""
    from medln.card import adapter_card

    card = adapter_card(tiny_run.config(), tiny_run.eval(), repo_id="me/tiny-ln")
    assert card.data.base_model is None and card.data.license == "mit"
    assert 'PeftModel.from_pretrained(base, "me/tiny-ln")' in card.content and 'medln.ASSETS / "medln-tiny"' in card.content
