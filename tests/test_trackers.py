"""Experiment trackers (medln.trackers): `--report-to` mirrors a run's records, offline.

tensorboard and trackio are real here (local files: event files in the run, trackio's SQLite
store in a temporary TRACKIO_DIR); mlflow and wandb must say how to install them when absent.
The records -> scalars mapping is checked on a recording tracker; a tracker that fails never
fails the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from medln.trackers import REPORT_TO, TRACKERS, Reporter, Tracker, TrackerError, get_tracker

from conftest import REPO


def train_args(tiny_model, dataset, out, *extra):
    return ["train", "--backbone", str(tiny_model("llava")), "--data", f"jsonl:{dataset}", "--steps", "2",
            "--batch-size", "2", "--eval-limit", "2", "--eval-batch-size", "2", "--ood-split", "", "--out", str(out),
            *extra]


def records_of(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_mirror_the_run(tiny_model, dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import run_cli

    out = tmp_path / "run"
    proc = run_cli(*train_args(tiny_model, dataset, out, "--report-to", "tensorboard", "--json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line)["event"] for line in proc.stdout.splitlines()][0] == "start"  # stdout stays JSON
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(out.iterdir())
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    steps = [r for r in records_of(out) if r["event"] == "step"]
    loss = [(e.step, round(e.value, 5)) for e in acc.Scalars("train/loss")]
    assert loss == [(r["step"], round(r["loss"], 5)) for r in steps]  # metrics.jsonl is the source
    assert [e.value for e in acc.Scalars("train/learning_rate")] == pytest.approx([r["lr"] for r in steps])
    tuned = json.loads((out / "eval.json").read_text())["tuned"]["test"]
    assert acc.Scalars("eval/tuned/test/overall")[0].value == pytest.approx(tuned["overall"])
    assert "eval/tuned/test/n" not in acc.Tags()["scalars"]  # counts are not scores
    assert "config/text_summary" in acc.Tags()["tensors"]  # the config, as text


@pytest.mark.slow  # two processes, trackio's import (~half a minute on a loaded 2-core machine)
def test_trackio_logs_to_its_local_store(tiny_model, dataset, tmp_path):
    pytest.importorskip("trackio")
    out, store = tmp_path / "run", tmp_path / "trackio"
    env = {**os.environ, "TRACKIO_DIR": str(store), "MEDLN_TRACKER_PROJECT": "medln-test", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "medln", *train_args(tiny_model, dataset, out, "--report-to", "trackio",
                                                                      "--json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(line.startswith("{") for line in proc.stdout.splitlines())  # trackio's words went to stderr
    read = ("import json; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps({'runs': S.get_runs('medln-test'), 'logs': S.get_logs('medln-test', 'run'), "
            "'config': S.get_run_config('medln-test', 'run')}, default=str))")
    back = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=120)
    assert back.returncode == 0, back.stderr[-2000:]
    stored = json.loads(back.stdout.splitlines()[-1])
    assert stored["runs"] == ["run"]
    steps = [r for r in records_of(out) if r["event"] == "step"]
    assert [(log["step"], log["train/loss"]) for log in stored["logs"] if "train/loss" in log] == [
        (r["step"], r["loss"]) for r in steps]
    assert any("eval/tuned/test/overall" in log for log in stored["logs"])
    assert stored["config"]["steps"] == 2 and stored["config"]["run"]["trainable"] > 0


@pytest.mark.parametrize("spec", TRACKERS, ids=[t.name for t in TRACKERS])
def test_a_missing_tracker_is_one_line_with_its_install_command(spec, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == spec.module else real(mod, *a))
    with pytest.raises(TrackerError) as e:
        get_tracker(spec.name)
    assert str(e.value).startswith(f"--report-to {spec.name} needs {spec.module}, which is not installed: pip install ")
    assert "\n" not in str(e.value) and "medln[trackers]" in str(e.value)
    with pytest.raises(TrackerError, match="unknown"):
        get_tracker("comet")
    assert get_tracker("none") is None and REPORT_TO[0] == "none"


def test_cli_refuses_a_missing_tracker_before_loading(tiny_model, dataset, tmp_path, monkeypatch):
    from conftest import assert_one_line_error, run_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == "wandb" else real(mod, *a))
    proc = run_cli(*train_args(tiny_model, dataset, tmp_path / "run", "--report-to", "wandb"))
    assert_one_line_error(proc, "pip install wandb")
    assert not (tmp_path / "run").exists()


class Recording(Tracker):
    def __init__(self, fail_at: int | None = None):
        self.logged, self.closed, self.fail_at = [], False, fail_at

    def log(self, values, step):
        if step == self.fail_at:
            raise OSError("disk full")
        self.logged.append((step, values))

    def close(self):
        self.closed = True


def test_records_become_scalars_and_a_failing_tracker_only_warns(monkeypatch, capsys):
    import medln.trackers as trackers

    tracker = Recording()
    spec = trackers.TrackerSpec("tensorboard", "json", "-", lambda *a: tracker)  # a module that imports
    monkeypatch.setattr(trackers, "TRACKERS", [spec])
    rep = Reporter("tensorboard", "/tmp/run", {"steps": 2})
    rep.follow({"event": "start", "backbone": "b"})
    rep.follow({"event": "step", "step": 1, "loss": 2.0, "lr": 0.1, "samples_per_s": 3.0, "peak_mem_gb": None})
    rep.follow({"event": "eval", "which": "tuned", "metrics": {"test": {"n": 4, "overall": 0.5, "bleu_4": None,
                                                                         "by_question_type": {"ABN": {}}}}})
    rep.close()
    assert tracker.logged == [(1, {"train/loss": 2.0, "train/learning_rate": 0.1, "train/samples_per_s": 3.0}),
                              (1, {"eval/tuned/test/overall": 0.5})]
    assert tracker.closed

    failing = Recording(fail_at=1)
    monkeypatch.setattr(trackers, "TRACKERS", [trackers.TrackerSpec("tensorboard", "json", "-", lambda *a: failing)])
    rep = Reporter("tensorboard", "/tmp/run", {})
    rep.follow({"event": "step", "step": 1, "loss": 2.0})
    rep.follow({"event": "step", "step": 2, "loss": 1.0})  # dropped after the failure: said once
    rep.close()
    err = capsys.readouterr().err
    assert err.count("warning: --report-to tensorboard: OSError: disk full") == 1 and not failing.closed
