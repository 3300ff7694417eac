"""The same `train` command under `accelerate launch` with 2 CPU processes (DDP over gloo).

accelerate's own `--cpu` flag goes to its single-process launcher (several CPU processes need
mpirun); `--multi_gpu` is the torchrun launcher, and medln's Accelerator runs on the CPU when
there is no CUDA, so the same command is data-parallel on GPUs or, here, on CPU processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

DDP_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tiny_model, dataset, out, scope: str, quant: str = "none"):
    return launch_medln("train", "--backbone", str(tiny_model("llava")), "--scope", scope, "--quant", quant,
                        "--data", f"jsonl:{dataset}", "--steps", "2", "--batch-size", "2", "--eval-split", "test",
                        "--eval-limit", "1", "--eval-batch-size", "1", "--ood-split", "", "--out", str(out), "--json")


def launch_medln(*args: str):
    """`accelerate launch` of `python -m medln ARGS` with 2 CPU processes."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "--num_cpu_threads_per_process", "1", "-m", "medln", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=DDP_TIMEOUT)


# ln: the peft LN-tuning wrapper under DDP; full: parameters without a gradient (LLaVA's
# vision layers after vision_feature_layer) need find_unused_parameters; ln in 4-bit: on an
# AVX512-BF16 CPU the main process's answers before training pack its 4-bit layers, and DDP
# copies them to the others (medln.cpu4bit.dequant_while_training).
@pytest.mark.slow  # two accelerate processes per scope (~30 s): CI runs it (.ci/run), `python -m pytest -q` does not
@pytest.mark.parametrize("scope,quant", [("ln", "none"), ("full", "none"), ("ln", "4bit")])
def test_train_under_accelerate_launch_two_cpu_processes(scope, quant, tiny_model, dataset, tmp_path):
    out = tmp_path / "run"
    proc = launch(tiny_model, dataset, out, scope, quant)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    # Logged once, by the main process only.
    events = [r["event"] for r in records]
    # "score" records (one per scored batch) and "eval" records come once each too: the base and the
    # tuned model score 1 item each here, so a second printing process would double them.
    assert [e for e in events if e not in ("eval", "score")] == ["start", "step", "step", "done"] and "eval" in events
    assert len([e for e in events if e == "score"]) == len({json.dumps(r, sort_keys=True) for r in records
                                                            if r["event"] == "score"})
    start, done = records[0], records[-1]
    assert start["num_processes"] == 2
    assert done["status"] == "completed" and done["steps_done"] == 2
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "eval.json", "adapter"} <= files <= {
        "config.json", "metrics.jsonl", "eval.json", "adapter", "inspect.json"}
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert [r for r in logged if r["event"] == "step"] == steps and len(steps) == 2
    assert json.loads((out / "config.json").read_text())["num_processes"] == 2
    saved = json.loads((out / "eval.json").read_text())
    assert saved["status"] == "completed" and saved["tuned"]["test"]["n"] == 1
    adapter = out / "adapter"
    assert (adapter / ("adapter_model.safetensors" if scope != "full" else "config.json")).is_file()


@pytest.mark.slow
def test_compare_and_eval_under_accelerate_launch_write_and_print_once(tiny_model, dataset, tmp_path):
    """compare --tune-lr (2 rate cells, one past the edge, then the test cell) with 2 processes: one progress
    line per record, one results.json, every row complete; the processes agreed on the rates
    (the other process read each cell's score back once the main one wrote it). Then eval of
    that run: one result, one predictions file."""
    out = tmp_path / "sweep"
    proc = launch_medln("compare", "--backbone", str(tiny_model("llava")), "--data", f"jsonl:{dataset}",
                        "--scopes", "ln", "--tune-lr", "--grid-points", "2", "--grid-cap", "3", "--steps", "1",
                        "--batch-size", "2", "--eval-limit", "1", "--eval-batch-size", "1", "--ood-split", "",
                        "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    for needle in ("compare ln on", "[ln] chosen lr", "[ln seed 0] completed in", "results: "):
        assert sum(needle in line for line in lines) == 1, (needle, proc.stdout[-3000:])
    assert sum("validation" in line and "[ln] lr" in line for line in lines) == 3  # one line per rate cell
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed" and [r["status"] for r in results["rows"]] == ["completed"]
    assert len(results["tuning"]["scopes"]["ln"]["grid"]) == 3  # the best of 2 is on an edge: one more rate
    assert json.loads((out / "runs" / "ln" / "seed0" / "config.json").read_text())["num_processes"] == 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "TABLE.md", "figures.html", "results.csv", "results.json", "runs", "sweep.json", "tune"]

    predictions = tmp_path / "predictions.jsonl"
    proc = launch_medln("eval", "--adapter", str(out / "runs" / "ln" / "seed0"), "--data", f"jsonl:{dataset}",
                        "--limit", "2", "--batch-size", "2", "--no-meteor", "--predictions", str(predictions), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["n"] == 2
    assert len(predictions.read_text().splitlines()) == 2
