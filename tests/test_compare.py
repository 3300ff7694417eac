"""Scope sweeps (medln.compare) and their figures (medln.plots).

One real sweep on a tiny random 4-bit LLaVA (ln, lora, full: full must be reported as
skipped, not crash), shared by the tests below; the rest use hand-made rows or a fake
train_run, so no other test loads a model.
"""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
from PIL import Image

import medln.evaluate
import medln.train
from medln.compare import CompareConfig, compare, parse_scopes, retention, steady
from medln.config import TrainConfig
from medln.plots import (cost_fig, loss_curve_fig, metric_vs_params_fig, pareto_front, retention_fig,
                         trainable_params_fig)
from medln.methods import ScopeError
from medln.make.tiny import build_tiny

ROW_FIELDS = ["scope", "trainable", "percent", "adapter_bytes", "step_s", "samples_per_s", "peak_mem_gb", "train_s",
              "base", "tuned", "ood_base", "ood_tuned", "retention", "retention_pts", "skipped"]
QUESTIONS = [("Is there a pleural effusion?", "no", "CLOSED"), ("Is the heart size normal?", "yes", "CLOSED"),
             ("What organ is shown?", "liver", "OPEN")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One JSONL with a train, a test and an out-of-domain ("ood") split; PNG images."""
    root = tmp_path_factory.mktemp("compare-data")
    lines = []
    for i in range(10):
        rgb = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"img{i}.png")
    for split, first, n in (("train", 0, 4), ("test", 4, 3), ("ood", 7, 3)):
        for j in range(n):
            q, a, t = QUESTIONS[j % 3]
            lines.append({"id": f"{split}{j}", "split": split, "image": f"img{first + j}.png",
                          "question": q, "answer": a, "answer_type": t})
    path = root / "vqa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return f"jsonl:{path}"


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory, data):
    model = build_tiny("llava", tmp_path_factory.mktemp("compare-llava"))
    return TrainConfig(backbone=str(model), data=data, ood_split="ood", quant="4bit", steps=2, batch_size=2,
                       eval_batch_size=8)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, base_cfg):
    """compare(ln, lora, full) under 4-bit, counting how often the base model is scored."""
    out = tmp_path_factory.mktemp("compare-out")
    calls = []

    class Counting(medln.evaluate.Scoring):  # every scored split, through train or evaluate()
        def __init__(self, *args, adapter=True, **kw):
            calls.append(adapter)
            super().__init__(*args, adapter=adapter, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(medln.evaluate, "Scoring", Counting)
        progress = []
        records = list(compare(options(base_cfg, ["ln", "lora", "full"], out), progress=lambda f, m: progress.append(f)))
    rows = {r["scope"]: r for r in records[-1]["rows"]}
    return {"out": out, "records": records, "rows": rows, "calls": calls, "progress": progress}


def options(cfg: TrainConfig, scopes, out, **kw) -> CompareConfig:
    """The sweep's options (compare() takes one dataclass): cfg's budget, the scopes, the folder."""
    return CompareConfig(**cfg.to_dict(), scopes=scopes if isinstance(scopes, str) else ",".join(scopes), out=str(out),
                         **kw)


def test_full_under_4bit_is_a_skipped_row_with_the_reason(sweep):
    full = sweep["rows"]["full"]
    assert full["status"] == "skipped"
    assert "4-bit" in full["skipped"]
    assert full["trainable"] is None and full["tuned"] is None
    assert any(r.get("event") == "scope_skipped" and r["scope"] == "full" for r in sweep["records"])


def test_trained_rows_have_every_field(sweep):
    for scope in ("ln", "lora"):
        row = sweep["rows"][scope]
        assert row["status"] == "completed" and row["skipped"] is None, row
        for key in ROW_FIELDS:
            assert key in row, key
        for key in ("trainable", "percent", "adapter_bytes", "step_s", "samples_per_s", "peak_mem_gb", "train_s",
                    "retention_pts"):
            assert isinstance(row[key], (int, float)) and row[key] >= 0, (scope, key, row[key])
        assert 0 < row["percent"] < 100 and row["adapter_bytes"] > 0 and row["steps_done"] == 2
        assert {"overall", "closed_accuracy"} <= set(row["tuned"]) and row["ood_tuned"]["n"] == 3
        ratio, pts = retention(row["ood_base"], row["ood_tuned"], "overall")
        assert (row["retention"], row["retention_pts"]) == (ratio, pts)
        assert (sweep["out"] / "runs" / scope / "seed0" / "eval.json").exists()
    assert sweep["rows"]["ln"]["trainable"] < sweep["rows"]["lora"]["trainable"]


def test_base_model_is_scored_once_and_shared(sweep):
    ln, lora = sweep["rows"]["ln"], sweep["rows"]["lora"]
    assert ln["base"] == lora["base"] and ln["ood_base"] == lora["ood_base"]
    # ln scores base + tuned on test and ood; lora only tuned: its base metrics are reused.
    assert sweep["calls"].count(False) == 2 and sweep["calls"].count(True) == 4


def test_progress_records_and_callback(sweep):
    events = [r.get("event") for r in sweep["records"]]
    assert events[0] == "compare_start" and events[-1] == "done" and events.count("done") == 1
    # full cannot run under 4-bit: one skipped row, no start
    assert events.count("scope_start") == 2 and events.count("run_done") == 2
    steps = [r for r in sweep["records"] if r["event"] == "step"]
    assert [(r["scope"], r["step"]) for r in steps] == [("ln", 1), ("ln", 2), ("lora", 1), ("lora", 2)]
    assert sweep["progress"] == sorted(sweep["progress"]) and sweep["progress"][-1] == 1.0


def test_result_files(sweep):
    out = sweep["out"]
    results = json.loads((out / "results.json").read_text())
    assert [r["scope"] for r in results["rows"]] == ["ln", "lora", "full"]
    assert results["status"] == "completed" and results["wall_s"] > 0 and results["machine"]["cpus"]
    assert results["config"]["steps"] == 2 and results["config"]["quant"] == "4bit"
    assert results["backbone"] and results["ood"]["split"] == "ood"
    with (out / "results.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["scope"] for r in table] == ["ln", "lora", "full"]
    assert table[0]["trainable"] == str(sweep["rows"]["ln"]["trainable"]) and "tuned_overall" in table[0]
    assert "4-bit" in table[2]["skipped"]
    html = (out / "figures.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # plotly.js embedded: works offline
    assert html.count("Plotly.newPlot") == 7  # spread (test, retention), params, metric, retention, cost, loss


def test_existing_runs_are_not_overwritten(sweep, base_cfg):
    with pytest.raises(FileExistsError):
        next(compare(options(base_cfg, ["ln"], sweep["out"])))


def test_stop_during_a_scope_skips_the_rest(tmp_path, base_cfg):
    stop = threading.Event()
    cfg = TrainConfig(**{**base_cfg.to_dict(), "steps": 50, "ood_split": ""})
    records = []
    for record in compare(options(cfg, ["ln-llm", "lora"], tmp_path), stop=stop):
        records.append(record)
        if record.get("step") == 1:
            stop.set()
    rows = {r["scope"]: r for r in records[-1]["rows"]}
    assert records[-1]["status"] == "stopped"
    assert rows["ln-llm"]["status"] == "stopped" and rows["ln-llm"]["steps_done"] == 1
    assert rows["lora"]["skipped"] == "stopped before it ran"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "stopped"


def test_out_of_memory_and_runtime_errors_become_rows(tmp_path, monkeypatch, base_cfg):
    import torch

    def failing(cfg, out, **kw):
        yield {"event": "start", "backbone": "b", "trainable": 10, "total": 100, "percent": 10.0, "dead": 0, "notes": []}
        if cfg.scope == "ln":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("boom")

    monkeypatch.setattr(medln.train, "train_run", failing)
    records = list(compare(options(base_cfg, "ln,lora", tmp_path)))
    rows = records[-1]["rows"]
    assert rows[0]["skipped"].startswith("out of memory") and "2.00 GiB" in rows[0]["skipped"]
    assert rows[0]["trainable"] == 10  # what was known before it failed is kept
    assert rows[1]["skipped"] == "RuntimeError: boom"
    assert (tmp_path / "figures.html").exists() and (tmp_path / "results.csv").exists()


def test_parse_scopes():
    assert parse_scopes("ln, lora,ln") == ["ln", "lora"]
    assert parse_scopes(None)[0] == "ln" and "full" in parse_scopes("all")
    with pytest.raises(ScopeError):
        parse_scopes("ln,prefix")


def test_cli_compare_reports_skipped_scope(tmp_path, capsys, base_cfg):
    from medln.__main__ import main

    args = ["compare", "--backbone", base_cfg.backbone, "--data", base_cfg.data, "--quant", "4bit",
            "--scopes", "full", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "full" in out and "skipped" in out and "4-bit" in out
    assert main(["compare", "--data", base_cfg.data, "--scopes", "nope", "--out", str(tmp_path / "x")]) == 2


# ------------------------------------------------------------------- hand-made rows


def row(scope, trainable, overall, **kw):
    return {"scope": scope, "trainable": trainable, "percent": trainable / 1e4, "tuned": {"overall": overall},
            "base": {"overall": 0.3}, "skipped": None, **kw}


def test_pareto_front_keeps_only_non_dominated_rows():
    rows = [
        row("ln", 100, 0.5),
        row("lora", 1000, 0.7),
        row("attn", 2000, 0.6),  # dominated by lora: more parameters, lower metric
        row("ln-llm", 100, 0.4),  # dominated by ln: same parameters, lower metric
        row("ln-vision", 50, 0.3),
        row("ffn", 1000, 0.7),  # equal to lora: neither dominates
        {"scope": "full", "skipped": "out of memory"},
        row("x", 10, None),  # no metric: not placed
    ]
    assert [r["scope"] for r in pareto_front(rows)] == ["ln-vision", "ln", "lora", "ffn"]
    assert pareto_front([]) == [] and [r["scope"] for r in pareto_front([row("ln", 5, 0.1)])] == ["ln"]


def test_retention_and_steady_helpers():
    assert retention({"overall": 0.5}, {"overall": 0.4}, "overall") == (0.8, -10.0)
    assert retention({"overall": 0.0}, {"overall": 0.2}, "overall") == (None, 20.0)
    assert retention(None, {"overall": 0.2}, "overall") == (None, None)
    assert steady([5.0, 1.0, 3.0, 2.0]) == 2.0 and steady([4.0]) == 4.0 and steady([]) is None


def test_figures_from_hand_made_rows():
    rows = [row("ln", 100, 0.5, retention=0.98, retention_pts=-1.0, step_s=0.2, peak_mem_gb=1.5),
            row("lora", 1000, 0.7, retention=0.9, retention_pts=-5.0, step_s=0.3, peak_mem_gb=2.0),
            {"scope": "full", "skipped": "scope 'full' with quant '4bit': 4-bit weights cannot be trained"}]
    fig = trainable_params_fig(rows)
    assert fig.layout.yaxis.type == "log" and list(fig.data[0].x) == ["ln", "lora"]
    assert "full: skipped" in fig.layout.title.subtitle.text
    fig = metric_vs_params_fig(rows)
    assert fig.layout.xaxis.type == "log" and [t.name for t in fig.data] == ["ln", "lora", "Pareto front"]
    assert fig.data[0].marker.color != fig.data[1].marker.color  # one colour per scope
    assert list(retention_fig(rows).data[0].y) == pytest.approx([98.0, 90.0])
    assert len(cost_fig(rows).data) == 2
    curves = loss_curve_fig([{"event": "step", "scope": "ln", "step": 1, "loss": 2.0},
                             {"event": "step", "scope": "lora", "step": 1, "loss": 2.5},
                             {"event": "step", "scope": "ln", "step": 2, "loss": 1.5}, {"event": "run_done", "scope": "ln"}])
    lines = [t for t in curves.data if t.mode == "lines"]  # smoothed, over the raw points (markers)
    points = [t for t in curves.data if t.mode == "markers"]
    assert [t.name for t in lines] == ["ln", "lora"] and list(points[0].y) == [2.0, 1.5]
    report_rows = [{**r, "tuned": {"overall": None, "rouge_l": 0.2}} for r in rows[:2]]
    assert "rouge_l" in metric_vs_params_fig(report_rows).layout.title.text  # falls back to a report metric
