"""medln.progress: when bars show, the scoring callback drawn as a bar of answers, `train` and
`eval` with their bars (and without, under --quiet or --json), compare's bar of cells, text
printed above a bar, and the callback contract with medln.evaluate."""

from __future__ import annotations

import io
import json
import sys

import pytest

from conftest import run_cli
from medln import progress
from medln.progress import Bars, bars_wanted

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_when_bars_show():
    assert bars_wanted(stream=io.StringIO())  # text output: bars, even into a log file
    assert bars_wanted(as_json=True, stream=Terminal())  # JSON records on stdout, a person watching stderr
    assert not bars_wanted(as_json=True, stream=io.StringIO())  # a program reading the records
    assert not bars_wanted(quiet=True, stream=Terminal())
    assert not bars_wanted(as_json=True, stream=object())  # no isatty at all: not a terminal


def test_scoring_callback_draws_answers_out_of_n(capsys):
    callback = Bars(True).scoring("tuned test")
    for done in (16, 32, 40):
        callback(done, 40)
    err = capsys.readouterr().err
    assert "scoring tuned test" in err and "40/40" in err and ("answer/s" in err or "s/answer" in err)  # the rate
    assert Bars(False).scoring("tuned test") is None  # the scorer then reports to nobody


def test_text_printed_while_a_bar_runs_goes_above_it(monkeypatch):
    terminal, out = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", out)
    bars = Bars(True)
    bar = bars.bar(3, "training", "step")
    for line in bars.through(["first", "second"]):
        print(line, end="")  # a partial line waits for its end
        assert line not in out.getvalue()
        print()
        assert out.getvalue().endswith(f"{line}\n")
        bar.update()
    bar.close()
    assert out.getvalue() == "first\nsecond\n" and sys.stdout is out  # the redirection ended with the loop
    assert "training" in terminal.getvalue()


def test_evaluate_reports_after_each_batch(tiny_model, dataset):
    """The contract with medln.evaluate: progress(done, total) after each generated batch."""
    from medln.backbones import load_backbone
    from medln.data import load_samples
    from medln.evaluate import evaluate

    bb = load_backbone(str(tiny_model("llava")), device="cpu")
    samples = load_samples(f"jsonl:{dataset}", "test").samples  # 3 VQA items + 1 report
    calls = []
    evaluate(bb, bb.model, samples, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 2 and calls[-1] == (4, 4)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and {t for _, t in calls} == {4}


TRAIN = ["--data", "DATA", "--steps", 2, "--batch-size", 2, "--lr", 0.01, "--eval-split", "test", "--ood-split", ""]


def train_args(tiny_model, dataset, out):
    return ["train", "--backbone", tiny_model("llava"), *[f"jsonl:{dataset}" if a == "DATA" else a for a in TRAIN],
            "--out", out]


def test_train_shows_bars_for_training_and_scoring(tiny_model, dataset, tmp_path):
    proc = run_cli(*train_args(tiny_model, dataset, tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "training" in err and "2/2" in err and "loss=" in err
    for which in ("base", "tuned"):  # 4 answers of the test split, scored twice
        assert f"scoring {which} test" in err and "4/4" in err
    assert "run: " in proc.stdout and "scoring" not in proc.stdout  # bars never on stdout


def test_train_quiet_or_json_to_a_program_has_no_bars(tiny_model, dataset, tmp_path):
    quiet = run_cli(*train_args(tiny_model, dataset, tmp_path / "a"), "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "scoring" not in quiet.stderr and "training" not in quiet.stderr and "run: " in quiet.stdout
    records = run_cli(*train_args(tiny_model, dataset, tmp_path / "b"), "--json")  # stderr is no terminal here
    assert records.returncode == 0, records.stderr[-3000:]
    assert "scoring" not in records.stderr and "%|" not in records.stderr
    assert [json.loads(line)["event"] for line in records.stdout.splitlines()][-1] == "done"


def test_eval_shows_a_scoring_bar_and_one_metric_a_line(tiny_model, dataset):
    proc = run_cli("eval", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--no-meteor")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scoring base test" in proc.stderr and "4/4" in proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("VQA overall accuracy") and line.endswith("(n = 3)") for line in lines), lines
    assert any(line.startswith("report ROUGE-L") and line.endswith("(n = 1)") for line in lines), lines
    assert "{" not in proc.stdout  # no Python dict


def test_compare_counts_its_cells(monkeypatch):
    """The bar of scored runs: a per-seed cell counts 1, a scope that cannot run all its seeds."""
    import medln.compare.cli as cli

    def sweep(cfg, stop=None, command=None):
        yield {"event": "compare_start", "scopes": ["ln", "full"], "seeds": [0, 1]}
        for seed in (0, 1):
            yield {"event": "scope_start", "scope": "ln", "seed": seed, "index": seed, "of": 4}
            for done in (5, 10):  # a run's scoring, as train_run reports it (tagged by the sweep)
                yield {"event": "score", "scope": "ln", "seed": seed, "which": "tuned", "split": "test",
                       "done": done, "total": 10, "left": 10 - done}
            yield {"event": "scope_done", "scope": "ln", "seed": seed, "row": {}}
            if seed == 0:
                yield {"event": "scope_skipped", "scope": "full", "reason": "4-bit", "row": {}}

    monkeypatch.setattr(cli, "compare", sweep)
    monkeypatch.setattr(progress, "_interactive", lambda stream: True)  # JSON records, a person at stderr
    proc = run_cli("compare", "--scopes", "ln,full", "--seeds", 2, "--json", "--out", "/nonexistent-unused")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compare" in proc.stderr and "4/4" in proc.stderr and "cell" in proc.stderr
    assert "scoring [ln seed 1] tuned test" in proc.stderr and "10/10" in proc.stderr  # answers out of n
    assert len(proc.stdout.splitlines()) == 10  # the records, each a line of its own above the bars


@pytest.mark.slow  # two fresh interpreters loading a model: end to end
def test_the_libraries_bars_follow_the_same_rule(tiny_model, dataset):
    """transformers' "Loading weights" bar: shown with text output, gone with --json to a
    program (each a fresh interpreter: the libraries read the setting once)."""
    image = dataset.parent / "images" / "img00.png"
    args = ["ask", "--backbone", tiny_model("llava"), "--image", image, "--question", "What organ is shown?"]
    text = run_cli(*args, isolated=True)
    records = run_cli(*args, "--json", isolated=True)
    assert text.returncode == 0 and records.returncode == 0, (text.stderr[-2000:], records.stderr[-2000:])
    assert "Loading weights" in text.stderr
    assert "Loading weights" not in records.stderr and json.loads(records.stdout)["answer"] is not None


def test_score_records_draw_the_same_bars(capsys):
    on = Bars(True).score_records()
    for which, split in (("base", "test"), ("tuned", "test")):
        for done in (8, 16):
            on({"event": "score", "which": which, "split": split, "done": done, "total": 16})
    err = capsys.readouterr().err
    assert "scoring base test" in err and "scoring tuned test" in err and "16/16" in err
    on({"event": "score", "which": "base", "split": "cached", "done": 16, "total": 16, "cached": True})
    assert "cached" not in capsys.readouterr().err  # read from the cache at once: no bar
    off = Bars(False).score_records()
    off({"event": "score", "which": "base", "split": "test", "done": 1, "total": 2})
    assert capsys.readouterr().err == ""
