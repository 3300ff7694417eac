"""A sweep that outlives its process (medln.compare.folder, .executors, .jobs, .rates):
resume keeps the finished cells untouched and reruns the others, --cell jobs and --collect,
the Ray executor, and the refusals (other options, a folder that is not a sweep).

The sweeps train the tiny random LLaVA for one step on the conftest data set (ln, lora), so
each cell costs a second or two; the Ray and kill tests start processes and are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import medln.train
from medln.compare import CompareConfig, collect, compare, run_one
from medln.compare.executors import RAY_MISSING, open_executor
from medln.compare.folder import SWEEP_FILE, finished
from medln.compare.jobs import cell_list, pick
from medln.config import ConfigError

from conftest import REPO


@pytest.fixture(scope="module")
def budget(tiny_model, dataset):
    return dict(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=1, batch_size=2, eval_limit=2,
                eval_batch_size=2, ood_split="")


def options(budget, out, **kw) -> CompareConfig:
    return CompareConfig(**{**budget, "scopes": "ln,lora", "out": str(out), **kw})


def snapshot(folder) -> dict:
    """Every file under `folder` with its mtime (ns) and bytes: "untouched" means equal."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_keeps_finished_cells_untouched_and_reruns_the_rest(budget, tmp_path):
    out = tmp_path / "sweep"
    first = list(compare(options(budget, out, report_to="tensorboard")))
    rows = {r["scope"]: r for r in first[-1]["rows"]}
    assert [r["status"] for r in rows.values()] == ["completed", "completed"]
    assert json.loads((out / SWEEP_FILE).read_text())["cells"] == ["runs/ln/seed0", "runs/lora/seed0"]
    for scope in ("ln", "lora"):  # --report-to tensorboard: every cell's run has its event files
        assert list((out / "runs" / scope / "seed0" / "tensorboard").glob("events.out.tfevents.*"))
    # The second cell as a killed process leaves it: a run folder without eval.json.
    (out / "runs" / "lora" / "seed0" / "eval.json").unlink()
    kept = snapshot(out / "runs" / "ln" / "seed0")

    records = list(compare(options(budget, out, resume=True)))
    assert snapshot(out / "runs" / "ln" / "seed0") == kept  # same files, bytes and mtimes
    assert [(r["scope"], r["how"]) for r in records if r.get("event") == "scope_done"] == [("ln", "reused"),
                                                                                             ("lora", "ran")]
    assert [r["scope"] for r in records if r.get("event") == "run_start"] == ["lora"]  # ln did not run again
    again = {r["scope"]: r for r in records[-1]["rows"]}
    assert again["lora"]["status"] == "completed" and finished(out / "runs" / "lora" / "seed0")
    # The row read back from the folder is the row the sweep made live (its wall time is the run's own).
    assert {k: v for k, v in again["ln"].items() if k != "wall_s"} == {k: v for k, v in rows["ln"].items()
                                                                      if k != "wall_s"}
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed" and results["missing"] == [] and len(results["rows"]) == 2

    # Resuming with other options is refused, naming the field; a new sweep into it is refused.
    with pytest.raises(ConfigError, match="--steps 1, this command 2"):
        next(compare(options(budget, out, resume=True, steps=2)))
    with pytest.raises(FileExistsError, match="--resume"):
        next(compare(options(budget, out)))
    assert snapshot(out / "runs" / "ln" / "seed0") == kept


def test_cell_jobs_then_collect_lists_the_missing_cells(budget, tmp_path, monkeypatch):
    out = tmp_path / "array"
    opts = options(budget, out, seeds=2)
    assert cell_list(opts) == ["runs/ln/seed0", "runs/lora/seed0", "runs/ln/seed1", "runs/lora/seed1"]
    assert pick(cell_list(opts), "lora/seed1") == 3
    with pytest.raises(ConfigError, match="0 to 3"):
        pick(cell_list(opts), "4")
    records = list(run_one(opts, "2"))  # task 2 of a job array: ln, seed 1
    assert records[-1]["cell"] == "runs/ln/seed1" and records[-1]["rows"][0]["status"] == "completed"
    assert not (out / "results.json").exists()  # a job writes its cell only; collect writes the files
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["ln"]

    def must_not_run(*a, **kw):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(medln.train, "train_run", must_not_run)
    again = list(run_one(opts, "ln/seed1"))  # a requeued job: its cell finished, nothing runs
    assert [r["how"] for r in again if r.get("event") == "scope_done"] == ["reused"]

    done = list(collect(out))[-1]  # collect never trains (train_run would raise)
    missing = ["runs/ln/seed0", "runs/lora/seed0", "runs/lora/seed1"]
    assert done["missing"] == missing
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "partial" and results["missing"] == missing
    assert [(r["scope"], r["seed"], r["status"]) for r in results["rows"]] == [
        ("ln", 0, "missing"), ("lora", 0, "missing"), ("ln", 1, "completed"), ("lora", 1, "missing")]
    table = (out / "TABLE.md").read_text()
    assert "Missing cells (3 of 4)" in table and "runs/lora/seed1" in table
    assert (out / "figures.html").exists() and (out / "results.csv").exists()
    with pytest.raises(ConfigError, match="not found"):
        next(collect(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="--tune-lr"):
        next(run_one(options(budget, out, tune_lr=True), "0"))


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError) as e:
        open_executor("ray")
    assert str(e.value) == RAY_MISSING and "pip install 'medln[ray]'" in RAY_MISSING


@pytest.mark.slow
def test_ray_executor_runs_every_cell_as_a_task(budget, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    records = list(compare(options(budget, out, seeds=2, executor="ray", ray_cpus=1)))
    done = records[-1]
    assert [(r["scope"], r["seed"], r["status"]) for r in done["rows"]] == [
        ("ln", 0, "completed"), ("lora", 0, "completed"), ("ln", 1, "completed"), ("lora", 1, "completed")]
    assert sum(r.get("event") == "scope_start" for r in records) == 4  # submitted
    assert not any(r.get("event") == "step" for r in records)  # the runs' records stay in the tasks
    assert all(finished(out / "runs" / s / f"seed{k}") for s in ("ln", "lora") for k in (0, 1))
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed"
    assert "threads" not in res["machine"]  # the driver's threads say nothing of the Ray cells'
    import ray

    assert not ray.is_initialized()  # the local Ray stopped with the command


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_its_finished_cell(budget, tmp_path):
    """A real `medln compare` process killed (SIGKILL) once its first cell finished."""
    out = tmp_path / "killed"
    args = ["--backbone", budget["backbone"], "--data", budget["data"], "--scopes", "ln,lora", "--steps", "1",
            "--batch-size", "2", "--eval-limit", "2", "--eval-batch-size", "2", "--ood-split", "", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "medln", "compare", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 240
        while not finished(out / "runs" / "ln" / "seed0") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert finished(out / "runs" / "ln" / "seed0"), "the first cell never finished"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = snapshot(out / "runs" / "ln" / "seed0")
    resumed = subprocess.run([sys.executable, "-m", "medln", "compare", *args, "--resume"], cwd=REPO,
                             capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[ln seed 0] completed" in resumed.stdout and "kept as it was" in resumed.stdout
    assert "[ln seed 0] lr=" not in resumed.stdout  # its run did not start again
    assert snapshot(out / "runs" / "ln" / "seed0") == kept
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["scope"], r["status"]) for r in rows] == [("ln", "completed"), ("lora", "completed")]


@pytest.mark.slow
def test_ctrl_c_with_ray_cancels_the_pending_cells_and_keeps_the_finished_ones(budget, tmp_path):
    """A real `medln compare --executor ray` process, interrupted as a terminal's Ctrl-C does
    (SIGINT to its whole process group) once its first cell finished: it exits 0 with the files
    written, the finished cells kept as completed rows, every other cell cancelled, and no
    cancelled cell finishing afterwards (its task was killed)."""
    pytest.importorskip("ray")
    out = tmp_path / "ray-stopped"
    cells = [out / "runs" / s / f"seed{k}" for k in range(3) for s in ("ln", "lora")]
    args = ["--backbone", budget["backbone"], "--data", budget["data"], "--scopes", "ln,lora", "--seeds", "3",
            "--steps", "1", "--batch-size", "2", "--eval-limit", "2", "--eval-batch-size", "2", "--ood-split", "",
            "--executor", "ray", "--ray-cpus", "1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "medln", "compare", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 300
        while not any(finished(c) for c in cells) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert any(finished(c) for c in cells), "no cell finished"
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopping: the finished cells are kept" in stderr
    kept = {c: snapshot(c) for c in cells if finished(c)}
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "stopped"
    status = {f"runs/{r['scope']}/seed{r['seed']}": r["status"] for r in results["rows"]}
    completed = {name for name, s in status.items() if s == "completed"}
    assert completed == {str(c.relative_to(out)) for c in kept}, (status, stdout[-2000:])  # finished = completed rows
    cancelled = [r for r in results["rows"] if r["status"] != "completed"]
    assert cancelled and all(r["skipped"] == "cancelled (stopped) before it finished" for r in cancelled), cancelled
    assert (out / "TABLE.md").exists() and (out / "figures.html").exists()
    time.sleep(3)  # a task that outlived the command would finish its cell now
    assert {c for c in cells if finished(c)} == set(kept)
    assert all(snapshot(c) == kept[c] for c in kept)
