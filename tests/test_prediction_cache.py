"""The base model's answers cached on disk (medln.prediction_cache): a second run on the same
backbone and data reads them instead of generating, train and eval share them, and any
input they depend on (weights, data, split, limit, quant, precision, generation settings)
is another key, never a stale hit."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from conftest import run_cli
from medln import prediction_cache
from medln.backbones import load_backbone, resolve
from medln.config import TrainConfig
from medln.data import load_samples
from medln.runs import BaseSpec
from medln.train import train_run


def run(cfg, out) -> dict:
    records = list(train_run(cfg, out))
    assert records[-1]["event"] == "done"
    return records


def test_a_second_run_reads_the_base_answers_and_records_its_times(tiny_model, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLN_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=1, batch_size=2,
                      ood_split="", eval_limit=0)
    first = run(cfg, tmp_path / "a")
    generated = []
    import medln.evaluate as evaluate

    real = evaluate.predicting

    def counting(*args, **kwargs):
        generated.append(kwargs.get("adapter", True))
        yield from real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "predicting", counting)
    second = run(dataclasses.replace(cfg, seed=1), tmp_path / "b")
    a, b = first[-1], second[-1]
    assert a["base_cached"] == [] and b["base_cached"] == ["test"]
    assert generated == [True], "the second run generated base answers again"
    assert b["base"] == a["base"]
    for result in (a, b):
        assert result["train_s"] > 0 and result["eval_s"] > 0
        assert json.loads((tmp_path / ("a" if result is a else "b") / "eval.json").read_text())["eval_s"] == result["eval_s"]
    scores = [r for r in second if r["event"] == "score"]
    assert scores and scores[-1]["left"] == 0 and [r["which"] for r in scores][0] == "base"
    assert len(list((tmp_path / "cache" / "predictions").glob("*.json"))) == 1


def test_eval_of_the_base_and_train_share_the_cache(tiny_model, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLN_CACHE", str(tmp_path / "cache"))
    proc = run_cli("eval", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--limit", 0,
                   "--no-meteor", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=1, batch_size=2,
                      ood_split="", eval_limit=0)
    done = run(cfg, tmp_path / "run")[-1]
    assert done["base_cached"] == ["test"]
    assert {k: v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items() if k != "meteor_note"} == \
        {k: v for k, v in done["base"]["test"].items() if k != "meteor_note"}


@pytest.fixture(scope="module")
def keyed(tiny_model, dataset):
    """(key maker, its default key): every input can be varied."""
    path = tiny_model("llava")
    bb = load_backbone(str(path))
    samples = load_samples(f"jsonl:{dataset}", "test").samples

    def key(bb=bb, base=BaseSpec(str(path)), backbone=str(path), split="test", limit=0, samples=samples, batch_size=16):
        return prediction_cache.base_key(bb, base, backbone_revision=resolve(backbone).revision_record(), split=split,
                                         limit=limit, samples=samples, batch_size=batch_size)

    return key, key(), samples, bb


def test_every_input_is_part_of_the_key(keyed, tiny_model, dataset, tmp_path, monkeypatch):
    key, base, samples, bb = keyed
    monkeypatch.setenv("MEDLN_CACHE", str(tmp_path / "cache"))
    prediction_cache.save(base, samples, [f"answer {i}" for i in range(len(samples))])
    assert prediction_cache.load(base, samples) == [f"answer {i}" for i in range(len(samples))]
    assert key() == base  # the same inputs: the same key

    weights = tmp_path / "model"
    shutil.copytree(tiny_model("llava"), weights)
    cfg = json.loads((weights / "config.json").read_text())
    cfg["text_config"]["rms_norm_eps"] = 1e-5  # another model, same shapes
    (weights / "config.json").write_text(json.dumps(cfg))
    other_data = [dataclasses.replace(samples[0], answer="something else"), *samples[1:]]
    changed = {
        "weights": key(backbone=str(weights)),
        "data": key(samples=other_data),
        "split": key(split="validation"),
        "limit": key(limit=2),
        "quant": key(base=BaseSpec(str(tiny_model("llava")), "4bit"), bb=dataclasses.replace(bb, quant="4bit")),
        "dtype": key(bb=dataclasses.replace(bb, dtype="bfloat16")),
        "batch size": key(batch_size=4),
    }
    monkeypatch.setattr(prediction_cache, "MAX_NEW_TOKENS", {"vqa": 8, "report": 96})
    changed["new tokens"] = key()
    for what, other in changed.items():
        assert other != base, what
        assert prediction_cache.load(other, other_data if what == "data" else samples) is None, what
    assert len({json.dumps(k, sort_keys=True) for k in changed.values()}) == len(changed)


def test_an_entry_that_does_not_fit_its_samples_is_not_read(keyed, tmp_path, monkeypatch):
    key, base, samples, _ = keyed
    monkeypatch.setenv("MEDLN_CACHE", str(tmp_path / "cache"))
    prediction_cache.save(base, samples, ["x"] * len(samples))
    assert prediction_cache.load(base, samples[::-1]) is None  # other order: other ids
    prediction_cache.path_of(base).write_text("{not json")
    assert prediction_cache.load(base, samples) is None


def test_a_hub_model_without_a_known_commit_is_not_cached(keyed):
    key, _, samples, bb = keyed
    assert prediction_cache.base_key(bb, None, backbone_revision={"source": "hub", "id": "o/n", "commit": None},
                                     split="test", limit=0, samples=samples, batch_size=16) is None
