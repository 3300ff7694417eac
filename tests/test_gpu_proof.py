"""The GPU proof (bench/gpu_proof.sh, medln.bench.gpu_proof): its CPU dry run end to end, so
the script cannot rot between GPU loans, and the pure parts (targets, batch search, wheels,
pins) on made-up inputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    out = tmp_path / "cpu-dry-run.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_proof.sh"), "--dry-run", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu-dry-run" and result["dry_run"] is True and "DRY RUN" in result["what"]
    assert result["parts_done"] == ["llava", "qwen", "fp16", "demo", "app", "batch", "levers"], result["parts_skipped"]
    # every bench row ran (CPU: no GPU memory, no MFU) and carries the columns
    rows = [r for r in result["rows"] if not r["skipped"]]
    assert {(r["part"], r["scope"]) for r in rows} >= {("llava", "ln"), ("llava", "lora"), ("qwen", "ln"),
                                                        ("qwen", "full"), ("levers", "ln")}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["trainable"] > 0 and r["peak_mem_gb"] is None and r["mfu"] is None
    levers = {r.get("lever") for r in result["rows"] if r["part"] == "levers"}
    assert levers == {"reference", "sdpa", "frozen-dtype", "compile", "fused-norms"}
    by_lever = {r["lever"]: r for r in rows if r["part"] == "levers"}
    assert any("fused norms:" in n for n in by_lever["fused-norms"]["notes"])
    assert any(n.startswith("compiled") for n in by_lever["compile"]["notes"])
    # fp16 with its scaler and bf16 trained the same batches; both losses finite
    pc = result["precision_check"]
    assert [len(pc["runs"][p]["losses"]) for p in ("bf16", "fp16")] == [pc["steps"]] * 2
    assert pc["runs"]["fp16"]["precision"] == "fp16" and pc["runs"]["bf16"]["precision"] == "bf16"
    # the demo through the CLI; its base answers are those of the committed CPU reference
    demo = result["demo"]
    assert demo["train"]["steps_done"] == 2 and demo["answers"] and all(a["base"] for a in demo["answers"])
    vs = demo["vs_reference"]
    if (REPO / "bench" / "results" / "demo-cpu-reference.json").exists():
        assert vs["base_comparable"] is True and vs["tuned_comparable"] is False  # 2 steps, not the demo's
        assert [r["base_match"] for r in vs["rows"]] == [True] * len(demo["answers"])  # the same CPU answers
    else:  # until `bench/gpu_proof.sh --cpu-reference` has been run and committed: said, not guessed
        demo_target = next(t for t in result["targets"] if t["id"] == "demo")
        assert "--cpu-reference" in vs["error"] and demo_target["status"] == "not measured"
    # the app through gradio_client
    app = result["app"]
    assert "error" not in app, app.get("log_tail")
    assert app["finetune"]["state"] == "done" and app["ask"]["base"] and app["ask"]["tuned"]
    assert "not for clinical use" in app["ask"]["notice"]
    # judged, and labelled a dry run on every line
    targets = {t["id"]: t for t in result["targets"]}
    assert {"llava-memory", "llava-speed", "llava-16gb", "qwen-speed", "qwen-mfu", "fp16-loss", "demo",
            "app"} <= set(targets)
    assert all(t["dry_run"] for t in targets.values())
    assert targets["llava-memory"]["status"] == "not measured"  # no GPU memory on a CPU: never a guess
    assert targets["qwen-mfu"]["status"] == "not measured"
    assert targets["app"]["status"] == "met"
    lines = [x for x in proc.stdout.splitlines() if "] " in x and x.startswith("DRY RUN")]
    assert len(lines) >= len(targets)


def test_dry_run_never_writes_into_the_results_folder(tmp_path):
    target = REPO / "bench" / "results" / "cpu-dry-run.json"
    proc = subprocess.run([sys.executable, "-m", "medln.bench.gpu_proof", "run", "--dry-run", "--out", str(target)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "does not write into" in proc.stderr
    assert not target.exists()


def test_next_batch_searches_by_measurement_only():
    from medln.bench.gpu_proof import next_batch

    assert next_batch({4: 10.0}, 16) == 8  # fits: double
    assert next_batch({4: 10.0, 8: 20.0}, 16) == 6  # bisect between the largest fit and smallest misfit
    assert next_batch({4: 10.0, 8: None}, 16) == 6  # out of memory counts as a misfit
    assert next_batch({4: 10.0, 6: 14.0, 8: 20.0}, 16) == 7
    assert next_batch({4: 10.0, 6: 14.0, 7: 17.0, 8: 20.0}, 16) is None  # neighbours: done
    assert next_batch({4: 30.0}, 16) == 2  # nothing fits: halve
    assert next_batch({1: 30.0}, 16) is None


def _row(part, scope, **kw):
    base = {"part": part, "scope": scope, "skipped": None, "batch": 4, "peak_mem_gb": None, "tokens_per_s": None,
            "mfu": None, "flops_per_step": None, "step_s": None}
    return {**base, **kw}


def test_judge_marks_met_missed_and_not_measured():
    from medln.bench.proof_targets import judge, summary_lines

    result = {
        "device": "NVIDIA H100 80GB HBM3", "dry_run": False,
        "plan": {"llava_shape": "llava-7b", "qwen_shape": "qwen2-vl-2b", "batch": 4, "seq": 1024, "batch_limit_gb": 16.0},
        "parts_done": ["llava", "qwen", "batch"], "parts_skipped": {"fp16": "error: X"},
        "rows": [_row("llava", "ln", peak_mem_gb=9.0, tokens_per_s=1100.0),
                 _row("llava", "lora", peak_mem_gb=12.0, tokens_per_s=1000.0),
                 _row("batch", "ln", batch=8, peak_mem_gb=15.5), _row("batch", "ln", batch=12, peak_mem_gb=None,
                                                                      skipped="out of memory at batch 12 x 1024"),
                 _row("qwen", "ln", tokens_per_s=5000.0, mfu=0.35, flops_per_step=1e15, step_s=1.0),
                 _row("qwen", "full", tokens_per_s=4500.0)],
    }
    t = {x["id"]: x for x in judge(result)}
    assert t["llava-memory"]["status"] == "met" and t["llava-memory"]["measured"] == 0.75
    assert t["llava-speed"]["status"] == "met" and t["llava-speed"]["measured"] == 1.1
    assert t["llava-16gb"]["measured"] == 8 and "b12: out of memory" in t["llava-16gb"]["detail"]
    assert t["qwen-speed"]["status"] == "missed" and round(t["qwen-speed"]["measured"], 3) == 1.111
    assert t["qwen-mfu"]["status"] == "missed"
    assert t["fp16-loss"]["status"] == "not measured" and "error: X" in t["fp16-loss"]["detail"]
    assert t["demo"]["status"] == "not measured" and t["app"]["status"] == "not measured"
    assert not any(x.startswith("DRY RUN") for x in summary_lines({**result, "targets": list(t.values())}))


def test_pins_report(tmp_path):
    from importlib.metadata import version

    from medln.bench.proof_wheels import pins_report

    req = tmp_path / "requirements.txt"
    req.write_text(f"# comment\npytest=={version('pytest')}\npeft==0.0.1  # old\n"
                   "no-such-dist-here==1.0\n-r other.txt\n")
    report = pins_report(req)
    assert [r["name"] for r in report["rows"]] == ["pytest", "peft", "no-such-dist-here"]
    assert report["differ"] == [f"peft {version('peft')} (pinned 0.0.1)", "no-such-dist-here absent (pinned 1.0)"]


def test_slim_keeps_one_cuda_library_and_the_wheel_valid():
    from medln.bench.proof_wheels import _slim

    files = {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/libbitsandbytes_cuda130.so": b"a" * 100,
             "bitsandbytes/libbitsandbytes_cuda128.so": b"b" * 100, "bitsandbytes/libbitsandbytes_rocm72.so": b"c",
             "bitsandbytes/libbitsandbytes_cpu.so": b"d"}
    record = "".join(f"{n},sha256=x,{len(c)}\n" for n, c in files.items()) + "bitsandbytes-0.50.2.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, c in files.items():
            z.writestr(n, c)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    slim = zipfile.ZipFile(io.BytesIO(_slim(buf.getvalue(), "bitsandbytes-0.50.2-py3-none-any.whl", "130")))
    names = set(slim.namelist())
    assert names == {"bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cuda130.so",
                     "bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes-0.50.2.dist-info/RECORD"}
    assert all(i.compress_type == zipfile.ZIP_STORED for i in slim.infolist())
    kept = slim.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert "cuda128" not in kept and "rocm" not in kept and "cuda130" in kept
    assert all(line.count(",") == 2 for line in kept.splitlines())  # no blank row: pip's csv reader needs 3 fields
    assert slim.read("bitsandbytes/libbitsandbytes_cuda130.so") == b"a" * 100


def test_compare_answers_only_where_settings_agree(tmp_path):
    from medln.bench.proof_parts import compare_answers

    settings = {"backbone": "medln-tiny", "quant": "4bit", "steps": None, "eval_limit": None, "batch_size": None}
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"device": "cpu", "settings": settings, "answers": [
        {"id": "a", "base": "ct", "tuned": "axial"}, {"id": "b", "base": "no", "tuned": "yes"}]}))
    same = {"settings": settings, "answers": [{"id": "a", "base": "ct", "tuned": "axial"},
                                              {"id": "b", "base": "no", "tuned": "no"}]}
    vs = compare_answers(same, ref)
    assert [(r["base_match"], r["tuned_match"]) for r in vs["rows"]] == [(True, True), (True, False)]
    short = {**same, "settings": {**settings, "steps": 2}}  # a dry run: tuned answers are not comparable
    vs = compare_answers(short, ref)
    assert vs["tuned_comparable"] is False and [r["tuned_match"] for r in vs["rows"]] == [None, None]
    resolved = {**same, "settings": {**settings, "batch_size": 8}}  # "default" meant another batch then
    assert compare_answers(resolved, ref)["tuned_comparable"] is False
    other = {**same, "settings": {**settings, "quant": "none"}}
    assert all(r["base_match"] is None for r in compare_answers(other, ref)["rows"])
    assert "no reference file" in compare_answers(same, tmp_path / "missing.json")["error"]


def test_the_demo_records_what_default_resolved_to(monkeypatch):
    """`medln train` without --steps / --batch-size: the settings the answers are compared under
    are what the run's start record says it used, so a reference made under another default
    (batch 8 once, 32 now) is never taken for a like one, and the committed one matches today's."""
    from medln.bench import proof_parts
    from medln.bench.gpu_proof import Plan
    from medln.config import TrainConfig

    default = TrainConfig(backbone="medln-tiny")  # what `medln train --data sample` resolves to

    def fake_call(cmd, *, cwd, env, timeout):
        if "train" in cmd:
            lines = [{"event": "start", "steps": default.steps, "batch_size": default.batch_size,
                      "precision": "fp32", "trainable": 1},
                     {"event": "done", "steps_done": default.steps, "train_s": 1.0, "base": {}, "tuned": {}}]
            return subprocess.CompletedProcess(cmd, 0, "\n".join(map(json.dumps, lines)), "")
        return subprocess.CompletedProcess(cmd, 0, json.dumps({"answer": "x-ray"}), "")

    monkeypatch.setattr(proof_parts, "_call", fake_call)
    demo = proof_parts.run_demo(Plan(demo_questions=1), reference=None)
    assert (demo["settings"]["steps"], demo["settings"]["batch_size"]) == (default.steps, default.batch_size)
    vs = proof_parts.compare_answers(demo, REPO / "bench" / "results" / "demo-cpu-reference.json")
    assert vs["tuned_comparable"] is True  # else: remake it, bench/gpu_proof.sh --cpu-reference
    stale = {**demo, "settings": {**demo["settings"], "batch_size": None}}  # a reference from before the record
    assert proof_parts.compare_answers(stale, REPO / "bench" / "results" / "demo-cpu-reference.json")[
        "tuned_comparable"] is False
