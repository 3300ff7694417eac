"""The GPU proof's end-to-end parts (medln.bench.gpu_proof): the fp16 training path against
bf16's, the bundled demo through the CLI, and the app through gradio_client. Each returns a
plain dict for the result file; none judges (medln.bench.proof_targets does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# medln train's demo settings that the answers depend on (the rest are train's defaults)
DEMO_BACKBONE, DEMO_QUANT = "medln-tiny", "4bit"


def run_precision(plan) -> dict:
    """medln-tiny, scope ln, 4-bit, on the sample: the same seed and batches trained in bf16
    and in fp16 (the T4 path: fp16 autocast, loss scaled by torch.amp.GradScaler), in this
    process through medln.train (no evaluation: only the losses are compared)."""
    import torch

    from ..config import TrainConfig
    from ..precision import grad_scaler, resolve_precision
    from ..train import train_run

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fp16 = resolve_precision("fp16", device=device)
    out = {"backbone": DEMO_BACKBONE, "scope": "ln", "quant": DEMO_QUANT, "data": "sample", "seed": 0,
           "steps": plan.precision_steps, "batch_size": plan.precision_batch, "device": device,
           "fp16_scaler": type(grad_scaler(fp16, device)).__name__ + (" (enabled)" if fp16.name == "fp16" else ""),
           "runs": {}}
    with tempfile.TemporaryDirectory(prefix="medln-proof-") as tmp:
        for name in ("bf16", "fp16"):
            cfg = TrainConfig(scope="ln", quant=DEMO_QUANT, data="sample", steps=plan.precision_steps, precision=name,
                              batch_size=plan.precision_batch, eval_split="", ood_split="", seed=0)
            t0, start, steps = time.perf_counter(), None, []
            for record in train_run(cfg, Path(tmp) / name):
                if record["event"] == "start":
                    start = record
                elif record["event"] == "step":
                    steps.append(record)
            out["runs"][name] = {"precision": start["precision"] if start else None,
                                 "losses": [r["loss"] for r in steps],
                                 "peak_mem_gb": steps[-1]["peak_mem_gb"] if steps else None,
                                 "wall_s": round(time.perf_counter() - t0, 2)}
            print(f"  fp16: {name} losses {out['runs'][name]['losses']}", flush=True)
    return out


def medln_command() -> list[str]:
    """The installed console script, as a user runs it (the module where none is on PATH)."""
    exe = shutil.which("medln")
    return [exe] if exe else [sys.executable, "-m", "medln"]


def _env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **extra}


def _call(cmd: list[str], *, cwd, env, timeout: float | None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{' '.join(cmd[-8:])} exited {proc.returncode}: {tail[0]}")
    return proc


def demo_questions(n: int) -> list[dict]:
    """n questions of the sample's default target's test split (what `--data sample` scores),
    evenly spaced over the file (it is ordered by study), as (id, image path, question): the
    same on every machine."""
    from ..data.bundled import ASSETS, SPLIT_FILES

    rows = [json.loads(line) for line in (ASSETS / SPLIT_FILES["test"]).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("question")]
    picked = [rows[i * len(rows) // n] for i in range(n)]
    return [{"id": r["id"], "image": str(ASSETS / r["image"]), "image_rel": r["image"], "question": r["question"]}
            for r in picked]


def demo_settings(plan) -> dict:
    return {"backbone": DEMO_BACKBONE, "quant": DEMO_QUANT, "steps": plan.demo_steps,
            "eval_limit": plan.demo_eval_limit,
            "batch_size": plan.demo_batch}


def run_demo(plan, *, reference: Path | None, env_extra: dict | None = None, timeout: float | None = 420) -> dict:
    """`medln train --data sample --quant 4bit` (the demo as a user types it), then `medln ask`
    without and with the run's adapter for each question, each a fresh process."""
    env = _env(**(env_extra or {}))
    cmd = medln_command()
    out: dict = {"command": cmd, "settings": demo_settings(plan), "answers": []}
    with tempfile.TemporaryDirectory(prefix="medln-demo-") as tmp:
        run_dir = Path(tmp) / "run"
        train = [*cmd, "train", "--data", "sample", "--quant", DEMO_QUANT, "--out", str(run_dir), "--json"]
        if plan.demo_steps is not None:
            train += ["--steps", str(plan.demo_steps)]
        if plan.demo_eval_limit is not None:
            train += ["--eval-limit", str(plan.demo_eval_limit)]
        if plan.demo_batch is not None:
            train += ["--batch-size", str(plan.demo_batch)]
        t0 = time.perf_counter()
        records = [json.loads(line) for line in _call(train, cwd=tmp, env=env, timeout=timeout).stdout.splitlines()
                   if line.startswith("{")]
        out["train_wall_s"] = round(time.perf_counter() - t0, 2)
        start = next(r for r in records if r.get("event") == "start")
        done = next(r for r in records if r.get("event") == "done")
        # what "default" resolved to (a backbone's batch can change): answers compare only like for like
        out["settings"].update(steps=start.get("steps"), batch_size=start.get("batch_size"))
        out["train"] = {"precision": start["precision"], "trainable": start["trainable"],
                        "steps_done": done["steps_done"],
                        "train_s": done["train_s"], "base": done["base"], "tuned": done["tuned"],
                        "peak_mem_gb": max((r.get("peak_mem_gb") or 0 for r in records if r.get("event") == "step"),
                                           default=None)}
        t0 = time.perf_counter()
        for q in demo_questions(plan.demo_questions):
            ask = [*cmd, "ask", "--image", q["image"], "--question", q["question"], "--json"]
            base = json.loads(_call([*ask, "--quant", DEMO_QUANT], cwd=tmp, env=env, timeout=120).stdout)
            tuned = json.loads(_call([*ask, "--adapter", str(run_dir)], cwd=tmp, env=env, timeout=120).stdout)
            out["answers"].append({"id": q["id"], "image": q["image_rel"], "question": q["question"],
                                   "base": base["answer"], "tuned": tuned["answer"]})
        out["ask_wall_s"] = round(time.perf_counter() - t0, 2)
    out["wall_s"] = round(out["train_wall_s"] + out["ask_wall_s"], 2)
    if reference is not None:
        out["vs_reference"] = compare_answers(out, reference)
    return out


def compare_answers(demo: dict, reference: Path) -> dict:
    """The demo's answers against the committed CPU run's, by question id. Base answers are
    comparable whenever backbone and quant agree; tuned ones only when the training settings
    agree too (a dry run trains 2 steps: its tuned answers are not compared)."""
    if not reference.exists():
        return {"reference": str(reference), "error": "no reference file: run bench/gpu_proof.sh --cpu-reference"}
    ref = json.loads(reference.read_text())
    ref_by_id = {a["id"]: a for a in ref["answers"]}
    ours, theirs = demo["settings"], ref["settings"]
    same_base = all(ours[k] == theirs[k] for k in ("backbone", "quant"))
    same_tuned = same_base and ours == theirs
    rows = []
    for a in demo["answers"]:
        r = ref_by_id.get(a["id"])
        rows.append({"id": a["id"],
                     "base_match": (a["base"] == r["base"]) if r and same_base else None,
                     "tuned_match": (a["tuned"] == r["tuned"]) if r and same_tuned else None,
                     "reference_base": r["base"] if r else None, "reference_tuned": r["tuned"] if r else None})
    return {"reference": reference.name, "reference_device": ref.get("device"), "base_comparable": same_base,
            "tuned_comparable": same_tuned, "rows": rows}


def write_reference(plan, out: Path) -> None:
    """The demo on the CPU (CUDA hidden from the subprocesses), as the GPU run will do it:
    the greedy answers its comparison needs. Committed as bench/results/demo-cpu-reference.json."""
    demo = run_demo(plan, reference=None, env_extra={"CUDA_VISIBLE_DEVICES": ""}, timeout=None)  # as long as it takes
    from .command import environment

    ref = {"device": "cpu", "what": "CPU reference for the GPU proof's demo part: the greedy answers of the bundled "
           "demo (medln train --data sample --quant 4bit, then medln ask base and tuned), made by "
           "bench/gpu_proof.sh --cpu-reference", "env": environment(), **demo}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {out}: {len(demo['answers'])} questions, train {demo['train_wall_s']} s, "
          f"ask {demo['ask_wall_s']} s", flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, timeout: float) -> None:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not serve {url} within {timeout:.0f} s")


def run_app(plan, *, root: Path, timeout: float = 300) -> dict:
    """`python app.py` as a Space starts it (its own process, the default backbone), then one
    /finetune polled to the end and one /ask with the new run, through gradio_client."""
    from ..ui import client as app_client  # the gradio_client side lives with the UI

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    q = demo_questions(1)[0]
    out: dict = {"finetune": {"steps": plan.app_steps, "quant": DEMO_QUANT, "eval_limit": plan.app_eval_limit,
                              "batch_size": plan.app_batch}}
    with tempfile.TemporaryDirectory(prefix="medln-app-") as tmp:
        env = _env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), MEDLN_RUNS=str(Path(tmp) / "runs"),
                   MEDLN_CACHE=str(Path(tmp) / "cache"))
        log = open(Path(tmp) / "app.log", "w")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(root / "app.py")], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, proc, timeout)
            out["launch_s"] = round(time.perf_counter() - t0, 2)
            client = app_client.connect(url)
            job, wall_s = app_client.finetune(client, steps=plan.app_steps, quant=DEMO_QUANT,
                                              eval_limit=plan.app_eval_limit, batch_size=plan.app_batch, timeout=timeout)
            out["finetune"].update(state=job["state"], error=job.get("error"), step=job.get("step"),
                                   precision=(job.get("start") or {}).get("precision"), wall_s=wall_s)
            base, tuned, notice, wall_s = app_client.ask(client, q["image"], q["question"], job["run_id"])
            out["ask"] = {"id": q["id"], "question": q["question"], "base": base, "tuned": tuned, "notice": notice,
                          "wall_s": wall_s}
        except Exception as e:  # noqa: BLE001 - recorded with the app's own log: the target is then missed
            log.flush()
            out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            out["log_tail"] = (Path(tmp) / "app.log").read_text()[-3000:]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    print(f"  app: finetune {out['finetune']}, ask {out.get('ask')}, error {out.get('error')}", flush=True)
    return out
