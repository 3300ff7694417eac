"""The comparison protocol: the image-blind baseline, spread over seeds, learning-rate tuning
on validation only, reference rows and the generated verdict.

One real sweep (tiny random LLaVA, ln x 2 seeds, a 2-point grid, 2 steps) checks
which split every evaluation used; the rest are pure functions on hand-made data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import medln.evaluate
from medln.baselines import fit_blind, score_blind
from medln.compare import CompareConfig, compare
from medln.config import ConfigError, TrainConfig
from medln.data.sample import Sample
from medln.make.tiny import build_tiny
from medln.compare.stats import difference, summarize, t975
from medln.compare.summary import summarize_rows, verdict
from medln.compare.tuning import Grid, best_rate, next_rate, tune_scope


def _q(i, question, answer, kind="OPEN", qtype="ORGAN", image="missing.png"):
    return Sample(id=f"s{i}", image=image, question=question, answer=answer, answer_type=kind, question_type=qtype)


# ---------------------------------------------------------------- blind baseline

def test_blind_baseline_uses_train_answers_and_never_an_image():
    train = [_q(0, "What organ is shown?", "liver"), _q(1, "What organ is shown?", "liver"),
             _q(2, "what organ is SHOWN", "lung"), _q(3, "Is there a mass?", "no", "CLOSED", "PRES"),
             _q(4, "Is there a nodule?", "yes", "CLOSED", "PRES"), _q(5, "Is there a nodule?", "yes", "CLOSED", "PRES"),
             Sample(id="r0", image="missing.png", answer="Normal chest.", task="report"),
             Sample(id="r1", image="missing.png", answer="Normal chest.", task="report"),
             Sample(id="r2", image="missing.png", answer="Large effusion.", task="report")]
    blind = fit_blind(train)  # the images do not exist: nothing may open them
    assert blind.answer(_q(9, "What organ is shown?", "lung")) == ("liver", "question")  # normalised question
    assert blind.answer(_q(9, "Which organ do you see?", "lung")) == ("liver", "type")  # unseen: its type's mode
    assert blind.answer(_q(9, "Any effusion?", "no", "CLOSED", "ABN")) == ("yes", "answer_type")
    assert blind.answer(Sample(id="t", image="x", answer="?", task="report")) == ("Normal chest.", "report")
    assert blind.n_train == 6 and blind.n_train_reports == 3
    test = [_q(10, "What organ is shown?", "liver"), _q(11, "What organ is shown?", "lung"),
            _q(12, "Is there a nodule?", "no", "CLOSED", "PRES"),
            Sample(id="r9", image="missing.png", answer="Normal chest.", task="report")]
    r = score_blind(blind, test)
    assert r["n"] == 3 and r["overall"] == pytest.approx(1 / 3) and r["seen_questions"] == 3
    assert r["rouge_l"] == pytest.approx(1.0)  # the one test report is the most frequent train report


def test_blind_baseline_is_fitted_on_the_training_data_only():
    """Changing a test answer never changes the blind answers; changing train does."""
    train = [_q(0, "What organ?", "liver"), _q(1, "What organ?", "liver"), _q(2, "What organ?", "lung")]
    a = fit_blind(train).predict([_q(5, "What organ?", "lung")])
    b = fit_blind(train + [_q(3, "What organ?", "lung")] * 2).predict([_q(5, "What organ?", "lung")])
    assert a == ["liver"] and b == ["lung"]


# ---------------------------------------------------------------- statistics

def test_summary_statistics_and_noise():
    s = summarize([0.70, 0.72, 0.74])
    assert s["mean"] == pytest.approx(0.72) and s["sd"] == pytest.approx(0.02) and s["n"] == 3
    half = t975(2) * 0.02 / 3 ** 0.5
    assert s["ci95"] == pytest.approx([0.72 - half, 0.72 + half])
    assert summarize([0.5])["sd"] is None and summarize([None]) is None
    close = difference(summarize([0.70, 0.73, 0.68]), summarize([0.72, 0.69, 0.74]))
    far = difference(summarize([0.50, 0.51, 0.49]), summarize([0.70, 0.71, 0.69]))
    assert close["within_noise"] and not far["within_noise"] and far["diff"] == pytest.approx(-0.2)
    assert difference(summarize([0.5]), summarize([0.7, 0.8])) is None  # no spread, no verdict


# ---------------------------------------------------------------- tuning

def _run_with_peak(peak: float, log: list):
    def run_one(lr):
        log.append(lr)
        yield {"event": "tune_point", "lr": lr}
        return -abs(np.log10(lr) - np.log10(peak))
    return run_one


def test_grid_is_the_same_size_for_every_scope_and_extends_past_an_edge():
    grid = Grid(points=3, cap=6)
    assert len(grid.initial(1e-4)) == len(grid.initial(0.3)) == 3
    inside, beyond = [], []
    rec = _drain(tune_scope(_run_with_peak(1e-3, inside), 1e-3, grid))
    assert rec["chosen"] == 1e-3 and len(inside) == 3 and not rec["capped"]
    rec = _drain(tune_scope(_run_with_peak(0.1, beyond), 1e-3, grid))
    assert beyond[:3] == grid.initial(1e-3) and beyond[3] > beyond[2]  # pushed past the upper edge
    assert len(beyond) == 6 and rec["capped"]  # stopped by the cap while still on the edge
    assert rec["grid"] == sorted(beyond) and rec["chosen"] == max(beyond)
    assert next_rate({0.95: 1.0, 0.3: 0.5}, grid) is None  # rates stay below 1
    assert best_rate({1e-3: 0.5, 1e-2: None, 1e-4: 0.5}) == 1e-4  # failures lose; ties go low


def test_a_grid_near_1_proposes_no_rate_the_config_refuses_and_a_failed_rate_says_why():
    from medln.compare.report import table_md
    from medln.compare.tuning import Tuning

    grid = Grid(points=3, cap=6)
    assert grid.initial(0.949) == [0.3, 0.949]  # 3.0 would be refused by TrainConfig (rates in (0, 1))
    with pytest.raises(ConfigError, match="lr: must be < 1.0"):
        TrainConfig(lr=3.0).validate()
    TrainConfig(lr=max(grid.initial(0.949))).validate()
    state = Tuning(0.01, grid)
    state.scores.update({0.00316: 0.4, 0.01: 0.5, 0.0316: None})
    state.failed[0.0316] = "loss is not finite at step 12"
    rec = state.record()
    assert rec["chosen"] == 0.01 and rec["failed"] == {"0.0316": "loss is not finite at step 12"}
    assert "failed" not in Tuning(0.01, grid).record()
    table = table_md({"summary": summarize_rows(_rows("ln", [0.5, 0.6], [0.6] * 2, 10, 0.1), ["ln"], "overall"),
                      "metric": "overall", "seeds": [0, 1], "tuning": {"grid": grid.describe(), "scopes": {"ln": rec}}})
    assert "0.0316: failed (loss is not finite at step 12)" in table and "0.01: 0.500" in table
    assert not rec["at_limit"] and "0.01 |" in table  # best inside the grid: no edge note
    near_1 = Tuning(0.949, grid)
    near_1.scores.update({0.3: 0.348, 0.949: 0.354})
    rec = near_1.record()
    assert rec["at_limit"] and not rec["capped"]  # best on the top edge, nothing past it allowed
    table = table_md({"summary": summarize_rows(_rows("ln", [0.5, 0.6], [0.6] * 2, 10, 0.1), ["ln"], "overall"),
                      "metric": "overall", "seeds": [0, 1], "tuning": {"grid": grid.describe(), "scopes": {"ln": rec}}})
    assert "0.949 (edge, the highest rate allowed)" in table
    # a record written before `at_limit` existed, whose grid still tried a rate the config refused
    old = {"grid": [0.3, 0.949, 3.0], "scores": {"0.3": 0.348, "0.949": 0.354, "3.0": None}, "chosen": 0.949,
           "capped": False, "failed": {"3.0": "lr: must be < 1.0"}}
    table = table_md({"summary": summarize_rows(_rows("ln", [0.5, 0.6], [0.6] * 2, 10, 0.1), ["ln"], "overall"),
                      "metric": "overall", "seeds": [0, 1], "tuning": {"grid": grid.describe(), "scopes": {"ln": old}}})
    assert "0.949 (edge, the highest rate allowed)" in table and "3: failed (lr: must be < 1.0)" in table


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# ---------------------------------------------------------------- verdict

def _rows(scope, values, ood, trainable, percent):
    return [{"scope": scope, "seed": i, "skipped": None, "lr": 0.01, "trainable": trainable, "percent": percent,
             "adapter_bytes": 1000, "tuned": {"n": 100, "overall": v}, "ood_tuned": {"n": 90, "overall": o},
             "retention": o / 0.8, "step_s": 0.1, "peak_mem_gb": 1.0} for i, (v, o) in enumerate(zip(values, ood))]


def test_verdict_says_what_the_numbers_say():
    rows = (_rows("ln", [0.70, 0.74, 0.66], [0.60, 0.62, 0.61], 4096, 0.09)
            + _rows("lora", [0.71, 0.72, 0.72], [0.70, 0.71, 0.69], 163840, 3.4)
            + _rows("ln-vision", [0.40, 0.41, 0.42], [0.75, 0.76, 0.74], 1792, 0.04))
    summary = summarize_rows(rows, ["ln", "lora", "ln-vision"], "overall")
    by = {e["scope"]: e for e in summary}
    assert by["lora"]["test_vs_best"]["is_best"] and by["ln"]["test_vs_best"]["within_noise"]
    assert by["ln-vision"]["test_vs_best"]["within_noise"] is False and by["ln-vision"]["ood_vs_best"]["is_best"]
    results = {"summary": summary, "metric": "overall", "seeds": [0, 1, 2], "steps": 200, "lr_source": "tuned",
               "references": {"blind": {"test": {"overall": 0.35}}, "base": {"test": {"overall": 0.2}}}}
    text = verdict(results)
    assert "best lora 0.717" in text and "ln (4,096 params" in text and "Below it: ln-vision" in text
    assert "0.350" in text and "lora (0.717 ± 0.006, +36.7 pts)" in text and "ln, with 4,096 trainable parameters" in text
    assert "within noise of the best on the target test and its retention is below the best" in text
    one = verdict({**results, "seeds": [0], "summary": summarize_rows([r for r in rows if r["seed"] == 0],
                                                                     ["ln", "lora", "ln-vision"], "overall")})
    assert "no spread" in one and "over seeds" not in one
    # one seed cannot say "below" the blind row, but says which side each scope fell on
    under = verdict({**results, "seeds": [0], "references": {"blind": {"test": {"overall": 0.45}}},
                     "summary": summarize_rows([r for r in rows if r["seed"] == 0], ["ln", "lora", "ln-vision"],
                                               "overall")})
    assert "UNDER it on one seed (noise unknown): ln-vision (0.400, -5.0 pts)" in under
    assert "over it on one seed (noise unknown): ln (0.700, +25.0 pts), lora (0.710, +26.0 pts)" in under
    assert "1 of 3 scopes scored under a model that never looks at the image on this one seed" in under


def test_verdict_compares_every_scope_with_the_blind_row_not_only_the_best():
    """Crafted: ln is within noise of the best (lora), yet its interval lies below the image-blind
    row; attn is above it; ia3 straddles it. The verdict must say all three, ln's "below" too."""
    rows = (_rows("lora", [0.46, 0.50, 0.42], [0.6] * 3, 163840, 3.4)
            + _rows("ln", [0.36, 0.37, 0.38], [0.6] * 3, 4096, 0.09)
            + _rows("attn", [0.45, 0.47, 0.46], [0.6] * 3, 500000, 9.0)
            + _rows("ia3", [0.40, 0.42, 0.44], [0.6] * 3, 2000, 0.05))
    held = {"n": 40, "overall": 0.39}
    for r in rows:
        r["tuned"]["by_phrasing"] = {"held-out": {**held, "overall": r["tuned"]["overall"] - 0.05}}
    refs = {"blind": {"test": {"n": 100, "overall": 0.417, "by_phrasing": {"held-out": held}}},
            "ceiling": {"test": {"n": 100, "overall": 0.83}}, "base": {"test": {"overall": 0.12}}}
    summary = summarize_rows(rows, ["lora", "ln", "attn", "ia3"], "overall", refs)
    by = {e["scope"]: e for e in summary}
    assert by["lora"]["test_vs_best"]["is_best"] and by["ln"]["test_vs_best"]["within_noise"]  # tied with the best...
    assert by["ln"]["test_vs_blind"]["side"] == "below"  # ...and below the blind row
    assert by["attn"]["test_vs_blind"]["side"] == "above" and by["ia3"]["test_vs_blind"]["side"] == "within noise"
    text = verdict({"summary": summary, "metric": "overall", "seeds": [0, 1, 2], "steps": 200, "lr_source": "tuned",
                    "references": refs})
    assert "ln (4,096 params, 0.09 %; BELOW the image-blind row)" in text  # flagged inside "within noise of it"
    assert "BELOW it (95 % interval below it): ln (0.370 ± 0.010, -4.7 pts)" in text
    assert "above it (95 % interval clear of it): attn" in text and "within noise of it: " in text and "ia3" in text
    assert "1 of 4 scopes score below a model that never looks at the image" in text
    assert "probe ceiling" in text and "0.830" in text and "-37.0 points from it" in text
    assert "On questions whose wording train never used (n = 40)" in text and "image-blind 0.390" in text
    assert "against the image-blind row it is BELOW it" in text  # the paper's-claim sentence about ln
    # TABLE.md says it per row, and splits by wording
    from medln.compare.report import table_md

    table = table_md({"summary": summary, "metric": "overall", "seeds": [0, 1, 2], "references": refs,
                      "verdict": text})
    ln_line = next(line for line in table.splitlines() if line.startswith("| ln |"))
    assert "-4.7 pts, **below**" in ln_line
    assert "held-out wording (n = 40)" in table and "| *image-blind baseline* | 0.390 |" in table
    plain = table_md({"summary": summarize_rows(_rows("ln", [0.5, 0.6], [0.6] * 2, 10, 0.1), ["ln"], "overall"),
                      "metric": "overall", "seeds": [0, 1]})
    assert "n/a: the records do not say" in plain


# ---------------------------------------------------------------- one real sweep

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """compare(ln) x seeds 0, 1 with --tune-lr on data without a validation split,
    recording which samples every evaluation scored and in which phase."""
    root = tmp_path_factory.mktemp("protocol-data")
    lines = []
    for i in range(14):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"i{i}.png")
    qa = [("Is there an effusion?", "no", "CLOSED"), ("What organ is shown?", "liver", "OPEN")]
    for split, first, n in (("train", 0, 10), ("test", 10, 2), ("ood", 12, 2)):
        for j in range(n):
            for k, (q, a, t) in enumerate(qa):
                lines.append({"id": f"{split}{j}-{k}", "split": split, "image": f"i{first + j}.png", "question": q,
                              "answer": a, "answer_type": t})
    (root / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    cfg = TrainConfig(backbone=str(build_tiny("llava", tmp_path_factory.mktemp("protocol-llava"))),
                      data=f"jsonl:{root / 'd.jsonl'}", ood_split="ood", steps=2, batch_size=2, eval_batch_size=8)
    out = tmp_path_factory.mktemp("protocol-out")
    phase, seen = ["tune"], []

    class Recording(medln.evaluate.Scoring):  # every scored split, through train or evaluate()
        def __init__(self, bb, model, samples, **kw):
            seen.append((phase[0], {s.id for s in samples}))
            super().__init__(bb, model, samples, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(medln.evaluate, "Scoring", Recording)
        records = []
        for record in compare(CompareConfig(**cfg.to_dict(), scopes="ln", out=str(out), seeds=2, tune_lr=True,
                                            grid_points=2, grid_cap=2)):
            if record.get("event") == "scope_start":
                phase[0] = "main"
            records.append(record)
    return {"out": out, "records": records, "seen": seen, "results": json.loads((out / "results.json").read_text())}


def test_tuning_reads_validation_only_and_validation_is_not_trained_on(sweep):
    res = sweep["results"]
    val = res["splits"]["validation"]
    assert val["source"] == "carved" and val["images"] == 1 and val["n"] == 2  # 10 % of 10 train images
    tuned_on = set().union(*(ids for phase, ids in sweep["seen"] if phase == "tune"))
    assert tuned_on and all(i.startswith("train") for i in tuned_on)  # never a test or ood item
    tested_on = set().union(*(ids for phase, ids in sweep["seen"] if phase == "main"))
    assert tested_on == {f"{s}{j}-{k}" for s in ("test", "ood") for j in range(2) for k in range(2)}
    starts = [r for r in sweep["records"] if r.get("event") in ("run_start",)]
    assert starts and all(r["n_train"] == 18 for r in starts)  # 20 train items less the 2 carved off
    assert res["splits"]["train"]["n"] == 18


def test_grid_and_choice_are_recorded_and_used(sweep):
    res = sweep["results"]
    assert res["lr_source"].startswith("tuned on validation") and res["tuning"]["grid"]["points"] == 2
    for scope in ("ln",):
        rec = res["tuning"]["scopes"][scope]
        assert len(rec["grid"]) == 2 and str(rec["chosen"]) in {str(lr) for lr in rec["grid"]}
        assert rec["split"] == "train slice" and set(rec["scores"]) == {str(lr) for lr in rec["grid"]}
        assert {r["lr"] for r in res["rows"] if r["scope"] == scope} == {rec["chosen"]}


def test_every_scope_and_seed_is_summarised_with_reference_rows(sweep):
    res = sweep["results"]
    assert sorted((r["scope"], r["seed"]) for r in res["rows"]) == [("ln", 0), ("ln", 1)]
    for e in res["summary"]:
        assert e["n_seeds"] == 2 and e["test"]["overall"]["n"] == 2 and e["n_ood"] == 4
        assert e["test"]["overall"]["ci95"] is not None or e["test"]["overall"]["sd"] == 0
    blind, base = res["references"]["blind"], res["references"]["base"]
    assert blind["test"]["n"] == 4 and blind["ood"]["n"] == 4 and blind["fitted_on"].startswith("train (18 questions")
    assert base["test"]["n"] == 4
    table = (sweep["out"] / "TABLE.md").read_text()
    assert "image-blind baseline" in table and "base model" in table and "chosen on validation" in table
    assert res["verdict"] and res["verdict"] in table
    threads = res["machine"]["threads"]  # a sweep under OMP_NUM_THREADS=1 says so beside its wall time
    assert threads >= 1 and f"({threads} thread{'s' * (threads > 1)} per run)" in table
    assert (sweep["out"] / "runs" / "ln" / "seed1" / "eval.json").exists()
    html = (sweep["out"] / "figures.html").read_text()
    assert "every seed" in html


def test_rates_chosen_by_an_earlier_sweep_are_reused(sweep, tmp_path, monkeypatch):
    """--lrs-from: no tuning runs, the earlier choice is used and recorded as reused."""
    earlier = str(sweep["out"] / "results.json")
    import medln.train

    seen = []

    def fake(cfg, out, **kw):
        seen.append((cfg.scope, cfg.lr, cfg.eval_split))
        yield {"event": "start", "backbone": "b", "trainable": 10, "total": 100, "percent": 10.0, "dead": 0, "notes": []}

    monkeypatch.setattr(medln.train, "train_run", fake)
    tuning = sweep["results"]["tuning"]
    cfg = TrainConfig(**{**json.loads((sweep["out"] / "runs" / "ln" / "seed0" / "config.json").read_text())["config"],
                         "lr": None, "seed": 3})
    records = list(compare(CompareConfig(**cfg.to_dict(), scopes="ln", out=str(tmp_path), lrs_from=earlier)))
    assert seen == [("ln", tuning["scopes"]["ln"]["chosen"], "test")]
    res = json.loads((tmp_path / "results.json").read_text())
    assert f"reused ({earlier})" in res["lr_source"] and res["tuning"]["scopes"]["ln"] == tuning["scopes"]["ln"]
    assert records[-1]["event"] == "done"


def test_tune_lr_with_an_earlier_sweep_tunes_only_the_missing_scopes(sweep, tmp_path, monkeypatch):
    """--tune-lr --lrs-from: the earlier choice for ln is kept (marked reused), bitfit is
    tuned on the same grid and validation items; the test split is not read while tuning."""
    import medln.train

    seen = []

    def fake(cfg, out, extra_eval=None, **kw):
        seen.append((cfg.scope, cfg.lr, cfg.eval_split))
        yield {"event": "start", "backbone": "b", "trainable": 10, "total": 100, "percent": 10.0, "dead": 0, "notes": []}
        if cfg.eval_split == "":  # a tuning run: its validation score grows with the rate
            score = {"n": 2, "overall": min(cfg.lr * 100, 1.0)}
            yield {"event": "done", "base": {"validation": {"n": 2, "overall": 0.0}}, "tuned": {"validation": score}}

    monkeypatch.setattr(medln.train, "train_run", fake)
    tuning = sweep["results"]["tuning"]
    earlier = str(sweep["out"] / "results.json")
    cfg = TrainConfig(**{**json.loads((sweep["out"] / "runs" / "ln" / "seed0" / "config.json").read_text())["config"],
                         "lr": None})
    grid = {"tune_lr": True, "grid_points": 2, "grid_cap": 2, "lrs_from": earlier}
    list(compare(CompareConfig(**cfg.to_dict(), scopes="ln,bitfit", out=str(tmp_path), **grid)))
    tuned_runs = [s for s in seen if s[2] == ""]
    assert tuned_runs and {s[0] for s in tuned_runs} == {"bitfit"}  # ln is not tuned again
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["tuning"]["scopes"]["ln"]["reused"] and not res["tuning"]["scopes"]["bitfit"].get("reused")
    assert "bitfit here" in res["lr_source"] and "(earlier sweep)" in (tmp_path / "TABLE.md").read_text()
    chosen = res["tuning"]["scopes"]["bitfit"]["chosen"]
    assert chosen == max(res["tuning"]["scopes"]["bitfit"]["grid"])  # the highest validation score
    assert ("bitfit", chosen, "test") in seen and ("ln", tuning["scopes"]["ln"]["chosen"], "test") in seen
    # Another grid, seed or validation set is not equal effort: refused, naming what differs.
    with pytest.raises(ConfigError, match="seed"):
        list(compare(CompareConfig(**{**cfg.to_dict(), "seed": 5}, scopes="bitfit", out=str(tmp_path / "other"),
                                   **grid)))


def test_an_earlier_sweep_with_another_budget_or_grid_is_refused(sweep):
    from medln.compare.tuning import reusable_tuning

    res = sweep["results"]
    config = dict(res["config"])  # the options as given (a folder path stays the path typed)
    assert reusable_tuning(res, config, "r.json")["reused_from"] == "r.json"
    # A scope whose tuning stopped before its grid was tried had less effort: with --tune-lr it is tuned again.
    partial = {**res, "tuning": {**res["tuning"], "scopes": {"ln": {**res["tuning"]["scopes"]["ln"], "grid": [0.1]}}}}
    assert reusable_tuning(partial, config, "r.json", Grid(points=2, cap=2))["scopes"] == {}
    assert reusable_tuning(partial, config, "r.json")["scopes"]  # plain --lrs-from takes what was chosen
    with pytest.raises(ConfigError, match="steps=2, this sweep has steps=200"):
        reusable_tuning(res, {**config, "steps": 200}, "r.json")
    with pytest.raises(ConfigError, match="grid"):
        reusable_tuning(res, config, "r.json", Grid(points=3, cap=4))
    with pytest.raises(ConfigError, match="no 'tuning' record"):
        reusable_tuning({**res, "tuning": None}, config, "r.json")


# ---------------------------------------------------------------- one headline rule

def test_one_headline_rule_for_scores_and_for_splits():
    """The metric a split is judged on is the same whether it is read from its scores or known
    from its items before anything is scored (medln.metrics.HEADLINE)."""
    from medln.metrics import HEADLINE, METRICS, headline_for, headline_metric

    assert HEADLINE[0] == "overall" and all(METRICS[m].higher_is_better for m in HEADLINE)
    vqa = {"n": 3, "overall": 0.5, "closed_accuracy": 1.0, "bleu_4": 0.1, "rouge_l": 0.3}
    report = {"n": 2, "n_report": 2, "bleu_4": 0.1, "rouge_l": 0.3, "cider": 0.2}
    assert headline_metric(vqa) == headline_for({"vqa", "report"}) == "overall"
    assert headline_metric(report) == headline_for({"report"}) == "rouge_l"
    assert headline_metric({"n": 0}) is None


def test_a_report_only_sweep_tunes_reports_and_prints_one_metric(tmp_path):
    """A report-only data set: the rates are chosen on ROUGE-L, the tuning record says so, and
    TABLE.md prints the base model's ROUGE-L beside the tuned ROUGE-L (not its BLEU-4)."""
    lines = []
    for i in range(12):
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(tmp_path / f"r{i}.png")
        lines.append({"id": f"r{i}", "split": "train" if i < 10 else "test", "image": f"r{i}.png",
                      "report": "The lungs are clear." if i % 2 else "Small left effusion."})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    base = {"n": 1, "n_report": 1, "bleu_4": 0.9, "rouge_l": 0.125}  # BLEU-4 far from ROUGE-L: a mix-up shows

    def fake(cfg, out, *, extra_eval=None, **kw):
        split = "validation" if cfg.eval_split == "" else cfg.eval_split
        tuned = {"n": 1, "n_report": 1, "bleu_4": 0.05, "rouge_l": min(cfg.lr, 1.0)}
        yield {"event": "start", "backbone": "b", "trainable": 10, "total": 100, "percent": 10.0, "dead": 0,
               "notes": []}
        yield {"event": "done", "status": "completed", "steps_done": 1, "train_s": 0.1, "trainable": 10,
               "total": 100, "percent": 10.0, "adapter_bytes": 40, "run": str(out), "base": {split: base},
               "tuned": {split: tuned}}

    cfg = TrainConfig(data=f"jsonl:{tmp_path / 'd.jsonl'}", ood_split="", steps=1)
    options = CompareConfig(**cfg.to_dict(), scopes="ln", out=str(tmp_path / "out"), tune_lr=True, grid_points=2,
                            grid_cap=2)
    records = list(compare(options, run_scope=fake))
    assert records[-1]["event"] == "done" and records[-1]["metric"] == "rouge_l"
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    rec = res["tuning"]["scopes"]["ln"]
    assert rec["metric"] == "rouge_l" and rec["base"]["rouge_l"] == 0.125
    assert rec["chosen"] == max(rec["grid"])  # the higher rate scored the higher ROUGE-L
    tuning_row = next(line for line in (tmp_path / "out" / "TABLE.md").read_text().splitlines()
                      if line.startswith("| ln |") and "0.125" in line)
    assert tuning_row.endswith("| 0.125 |") and "0.900" not in tuning_row  # the base's ROUGE-L, not its BLEU-4
