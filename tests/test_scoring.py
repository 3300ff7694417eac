"""medln.scoring: report scores with METEOR (the reference jar, or None with the reason), and
prediction files joined to references on id (a strict join: a file, line and id for every
problem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medln import scoring
from medln.data.sample import DataError
from medln.metrics import score_vqa
from medln.scoring import score_files, score_report


def test_score_report_empty_and_bad_input():
    got = score_report([], [])
    assert got["n"] == 0
    assert all(got[k] is None for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider"))
    with pytest.raises(ValueError, match="at least one reference"):
        score_report(["a"], [[]], with_meteor=False)
    with pytest.raises(ValueError, match="1 predictions for 2"):
        score_report(["a"], ["a", "b"], with_meteor=False)


def test_meteor_is_none_with_a_reason_without_java_or_jar(monkeypatch):
    monkeypatch.setattr(scoring.shutil, "which", lambda name: None)
    monkeypatch.setattr(scoring, "_meteor_jar", lambda: scoring.Path("meteor-1.5.jar"))
    got = score_report(["a b"], ["a b"])
    assert got["meteor"] is None and "Java" in got["meteor_note"]
    monkeypatch.setattr(scoring, "_meteor_jar", lambda: None)
    assert "pycocoevalcap" in score_report(["a b"], ["a b"])["meteor_note"]


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_score_files_vqa_matches_score_vqa(tmp_path):
    refs = _write(tmp_path / "refs.jsonl", [
        {"id": 1, "answer": "yes", "answer_type": "CLOSED", "question_type": "PRES"},
        {"id": "q2", "answer": 2, "answer_type": "OPEN"},   # integer answer
        "",                                                  # blank lines are skipped
    ])
    preds = _write(tmp_path / "preds.jsonl", [
        {"id": "q2", "answer": "two"},                       # "answer" accepted, any order
        {"id": "1", "prediction": "Yes."},                   # 1 and "1" join
    ])
    got = score_files("vqa", preds, refs)
    assert got == score_vqa(["Yes.", "two"], [{"answer": "yes", "answer_type": "CLOSED", "question_type": "PRES"},
                                              {"answer": "2", "answer_type": "OPEN"}])
    assert got["overall"] == 1.0 and "n_unmatched" not in got   # strict join: no partial results


def test_score_files_report(tmp_path):
    refs = _write(tmp_path / "refs.jsonl", [{"id": "a", "report": "the cat is on the mat"},
                                            {"id": "b", "report": ["x y", "x y z"]}])
    preds = _write(tmp_path / "preds.jsonl", [{"id": "a", "prediction": "the cat sat on the mat"},
                                              {"id": "b", "prediction": "x y"}])
    got = score_files("report", preds, refs, with_meteor=False)
    assert got == score_report(["the cat sat on the mat", "x y"], ["the cat is on the mat", ["x y", "x y z"]],
                               with_meteor=False)


@pytest.mark.parametrize("pred_rows, ref_rows, bad_file, pieces", [
    # malformed JSON on line 3 of the predictions
    ([{"id": 1, "prediction": "a"}, {"id": 2, "prediction": "b"}, '{"id": 3, "prediction": '],
     [{"id": 1, "answer": "a"}], "preds", ["line 3", "not valid JSON"]),
    # a reference with no prediction: named by the references file, its line and id
    ([{"id": "q1", "prediction": "a"}],
     [{"id": "q1", "answer": "a"}, {"id": "q3", "answer": "b"}], "refs", ["line 2", "'q3'", "preds.jsonl"]),
    # a prediction with no reference
    ([{"id": "q1", "prediction": "a"}, {"id": "q9", "prediction": "b"}],
     [{"id": "q1", "answer": "a"}], "preds", ["line 2", "'q9'", "refs.jsonl"]),
    # duplicate id
    ([{"id": "q1", "prediction": "a"}], [{"id": "q1", "answer": "a"}, {"id": "q1", "answer": "b"}],
     "refs", ["line 2", "duplicate id 'q1'", "line 1"]),
    # missing text field / missing id / not an object / bad answer_type
    ([{"id": "q1", "text": "a"}], [{"id": "q1", "answer": "a"}], "preds", ["line 1", "'prediction'"]),
    ([{"prediction": "a"}], [{"id": "q1", "answer": "a"}], "preds", ["line 1", "'id'"]),
    ([[1, 2]], [{"id": "q1", "answer": "a"}], "preds", ["line 1", "JSON object"]),
    ([{"id": "q1", "prediction": "a"}], [{"id": "q1", "answer": "a", "answer_type": "BOTH"}],
     "refs", ["line 1", "answer_type"]),
])
def test_score_files_errors(tmp_path, pred_rows, ref_rows, bad_file, pieces):
    preds = _write(tmp_path / "preds.jsonl", pred_rows)
    refs = _write(tmp_path / "refs.jsonl", ref_rows)
    with pytest.raises(DataError) as err:
        score_files("vqa", preds, refs)
    message = str(err.value)
    assert message.startswith(str(tmp_path / f"{bad_file}.jsonl"))
    for piece in pieces:
        assert piece in message


def test_score_files_rejects_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="task"):
        score_files("caption", tmp_path / "p.jsonl", tmp_path / "r.jsonl")


def test_score_accepts_report_predictions_keyed_report_and_eval_counts_report_items(tmp_path):
    from medln.evaluate import score
    from medln.data.sample import Sample
    from medln.scoring import score_files

    ref, pred = tmp_path / "ref.jsonl", tmp_path / "pred.jsonl"
    ref.write_text('{"id": 1, "report": "no acute findings."}\n{"id": 2, "report": "mild cardiomegaly."}\n')
    pred.write_text('{"id": 1, "report": "no acute findings."}\n{"id": 2, "report": "normal heart."}\n')
    got = score_files("report", pred, ref, with_meteor=False)
    assert got["n"] == 2 and 0 < got["bleu_1"] < 1
    reports = [Sample(id=str(i), image=Path("x.png"), answer="no acute findings.", task="report") for i in range(3)]
    result = score(reports, ["no acute findings."] * 3)
    assert result["n"] == 3 == result["n_report"]


def test_score_command_prints_one_metric_a_line_with_its_n(tmp_path):
    from conftest import run_cli

    ref, pred = tmp_path / "ref.jsonl", tmp_path / "pred.jsonl"
    ref.write_text('{"id": 1, "report": "no acute findings."}\n{"id": 2, "report": "mild cardiomegaly."}\n')
    pred.write_text('{"id": 1, "report": "no acute findings."}\n{"id": 2, "report": "normal heart."}\n')
    out = run_cli("score", "--task", "report", "--predictions", pred, "--references", ref)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("report BLEU-4") and line.endswith("(n = 2)") for line in lines), out.stdout
    assert "None" not in out.stdout and "{" not in out.stdout  # no Python dict or None printed
    old = run_cli("score", "--task", "report", "--pred", pred, "--ref", ref, "--json")  # the old names, hidden
    assert old.returncode == 0 and json.loads(old.stdout)["n"] == 2
