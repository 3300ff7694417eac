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


def launch(tiny_model, dataset, out, scope: str):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "--num_cpu_threads_per_process", "1",
           "-m", "medln", "train", "--backbone", str(tiny_model("llava")), "--scope", scope,
           "--data", f"jsonl:{dataset}", "--steps", "2", "--batch-size", "2", "--eval-split", "test",
           "--eval-limit", "1", "--eval-batch-size", "1", "--ood-split", "", "--out", str(out), "--json"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=DDP_TIMEOUT)


# ln: the peft LN-tuning wrapper under DDP; full: parameters without a gradient (LLaVA's
# vision layers after vision_feature_layer) need find_unused_parameters.
@pytest.mark.slow  # two accelerate processes per scope (~30 s): CI runs it (.ci/run), `python -m pytest -q` does not
@pytest.mark.parametrize("scope", ["ln", "full"])
def test_train_under_accelerate_launch_two_cpu_processes(scope, tiny_model, dataset, tmp_path):
    out = tmp_path / "run"
    proc = launch(tiny_model, dataset, out, scope)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    # Logged once, by the main process only.
    events = [r["event"] for r in records]
    assert [e for e in events if e != "eval"] == ["start", "step", "step", "done"] and "eval" in events
    start, done = records[0], records[-1]
    assert start["num_processes"] == 2
    assert done["status"] == "completed" and done["steps_done"] == 2
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "eval.json", "adapter"} <= files <= {
        "config.json", "metrics.jsonl", "eval.json", "adapter", "inspect.json"}
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == records[1:3]
    assert json.loads((out / "config.json").read_text())["num_processes"] == 2
    saved = json.loads((out / "eval.json").read_text())
    assert saved["status"] == "completed" and saved["tuned"]["test"]["n"] == 1
    adapter = out / "adapter"
    assert (adapter / ("adapter_model.safetensors" if scope != "full" else "config.json")).is_file()
