"""What a user reads in the app, as plain functions: n beside every metric (greyed when
small), the paper's claims beside what a run measured, time estimates and the shared queue,
messages in the page's words, the reloaded form, the warning on images the demo model does
not know, and the loss curve's smoothed line. No server, no model loading."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from medln.ui import eta, views  # noqa: E402
from medln.ui import finetune as ft  # noqa: E402
from medln.ui.errors import hide_paths, web_words  # noqa: E402
from medln.ui.jobs import Job, JobManager  # noqa: E402
from medln.ui.uploads import DataChoice  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
_RECORD = json.loads((REPO / "docs" / "compare-medln-tiny" / "results.json").read_text())
COMMITTED, COMMITTED_BATCH = _RECORD["rows"], _RECORD["config"]["batch_size"]


# ------------------------------------------------------------------ numbers with their n


def _result(n_report: int):
    m = {"n": 50, "n_closed": 18, "n_open": 32, "overall": 0.4, "closed_accuracy": 0.5, "open_recall": 0.3,
         "n_report": n_report, "bleu_4": 1.0, "cider": 0.0}
    return {"base": {"test": m}, "tuned": {"test": {**m, "overall": 0.6}}}


def test_metric_table_shows_n_and_greys_rows_on_few_items():
    page = views.metric_table_html(_result(4))
    rows = page.split("<tr")[2:]  # after the header
    assert len(rows) == 5
    overall = next(r for r in rows if "VQA overall" in r)
    assert "<td>50</td>" in overall and "medln-few" not in overall
    for name in ("closed (yes/no)", "BLEU-4", "CIDEr"):
        row = next(r for r in rows if name in r)
        assert "medln-few" in row, name  # 18 closed items, 4 reports: greyed with their n
    assert "fewer than 20" in page
    assert "medln-few" not in next(r for r in views.metric_table_html(_result(25)).split("<tr") if "BLEU-4" in r)


def test_default_evaluation_scores_the_whole_fixed_split_with_enough_closed_questions():
    """The bundled scored splits are the fixed scored set (docs/experiment.md): the app's
    default limit takes all of each (VQA only: reports are pretraining-only since v3)."""
    from medln.data import load_samples
    from medln.evaluate import subsample
    from medln.ui.settings import Settings

    limit = Settings().eval_limit
    for split in ("test", "source-test"):
        every = load_samples("sample", split).samples
        picked = subsample(every, limit)
        assert picked == every
        assert sum(s.task == "vqa" and s.answer_type == "CLOSED" for s in picked) >= views.MIN_N, split


def test_compare_table_has_n_per_metric():
    from medln.ui.compare import TABLE_HEADERS, table_html, table_rows

    rows = table_rows(COMMITTED)
    n_col, ood_col = TABLE_HEADERS.index("n"), TABLE_HEADERS.index("n (ood)")
    ran = [r for r, c in zip(rows, COMMITTED) if not c.get("skipped")]
    assert all(isinstance(r[n_col], int) and r[n_col] > 0 for r in ran)
    assert all(isinstance(r[ood_col], int) for r in ran)
    few = dict(COMMITTED[0], tuned={**COMMITTED[0]["tuned"], "n": 3})
    assert "medln-few" in table_html([few]) and "medln-few" not in table_html(COMMITTED[:1])
    assert "--quant" not in table_html(COMMITTED)  # the skipped reason in the page's words


# ------------------------------------------------------------------ claims vs measurement


def _row(scope, overall, retention, trainable=1000):
    return {"scope": scope, "metric": "overall", "trainable": trainable, "percent": 0.1, "retention": retention,
            "tuned": {"overall": overall, "n": 761}}


def test_claims_are_shown_beside_what_was_measured_never_as_fact():
    measured = views.measured_claims(COMMITTED)
    # the committed comparison, whatever it measured: the verdict follows ln's rank
    kept = [r for r in COMMITTED if r.get("retention") is not None]
    ln_best = max(kept, key=lambda r: r["retention"])["scope"] == "ln"
    assert "ln ranks" in measured["retention"]
    assert ("supports the claim" if ln_best else "does not support") in measured["retention"]
    supports = views.measured_claims([_row("ln", 0.80, 0.99, 10), _row("lora", 0.70, 0.90)])
    assert "supports the claim" in supports["retention"] and "supports the claim" in supports["accuracy"]
    close = views.measured_claims([_row("ln", 0.700, 0.9, 10), _row("lora", 0.705, 0.95)])
    assert "within two standard errors" in close["accuracy"]
    page = views.claims_html(COMMITTED)
    assert "The paper claims" in page and "measured" in page and ("support" in page)
    assert "Nothing yet" in views.claims_html([])


def test_about_learning_rates_are_the_fine_tune_tabs():
    from medln.methods import SCOPES
    from medln.ui import about

    for backbone in ("medln-tiny", "some/hub-model"):
        table = about.scopes_md(backbone)
        for s in SCOPES:
            line = next(line for line in table.splitlines() if line.startswith(f"| `{s.name}` |"))
            assert f"| {ft.scope_info(s.name, backbone)[0]:g}" in line, (backbone, line)
        assert "--quant" not in table
    bullet = next(line for line in about.WHAT.splitlines() if "Little to forget" in line)
    assert "claim" in bullet  # stated as the paper's claim, not as a fact


# ------------------------------------------------------------------ time estimates and the queue


def test_speed_book_records_and_estimates(tmp_path):
    book = eta.SpeedBook(tmp_path / "speed.json")
    assert book.lookup("my/model", "ln", "4bit", 8) is None  # never seen: no made-up figure
    book.record("my/model", "ln", "4bit", 8, step_s=0.5, item_s=0.02, load_s=3.0)
    again = eta.SpeedBook(tmp_path / "speed.json")  # persisted
    sp = again.lookup("my/model", "ln", "4bit", 8)
    assert (sp.step_s, sp.item_s, sp.load_s) == (0.5, 0.02, 3.0) and "this server" in sp.source
    assert "0 min ago at load " in sp.source  # when it was measured, and how busy the machine was
    scaled = again.lookup("my/model", "ln", "4bit", 4)
    assert scaled.step_s == pytest.approx(0.25) and "scaled" in scaled.source
    est = eta.estimate(sp, 100, 400)
    assert est.train_s == pytest.approx(50) and est.score_s == pytest.approx(8) and est.total_s == pytest.approx(61)
    html = views.estimate_html(est, n_items=400)
    assert "~1:01" in html and "scoring 0:08" in html and "this server" in html


def test_an_untimed_scope_is_the_record_scaled_by_this_servers_own_speed(tmp_path, monkeypatch):
    """A scope this server has not run yet: the committed step time, times how much faster or
    slower this server ran a scope the record also timed."""
    monkeypatch.setattr(eta, "cpu_threads", lambda: _RECORD["machine"]["threads"])  # no thread scaling here
    book = eta.SpeedBook(tmp_path / "speed.json")
    ln, lora = (next(r for r in COMMITTED if r["scope"] == s) for s in ("ln", "lora"))
    b = COMMITTED_BATCH
    book.record("medln-tiny", "ln", "none", b, step_s=ln["step_s"] / 2, item_s=0.01, load_s=3.0)
    sp = book.lookup("medln-tiny", "lora", "none", b)
    assert sp.step_s == pytest.approx(lora["step_s"] / 2) and sp.load_s == 3.0
    assert "scaled by 0.50" in sp.source and "ln step time" in sp.source


def test_bundled_model_falls_back_to_the_committed_speed(tmp_path, monkeypatch):
    monkeypatch.setattr(eta, "cpu_threads", lambda: _RECORD["machine"]["threads"])
    book = eta.SpeedBook(tmp_path / "none.json")
    sp = book.lookup("medln-tiny", "ln", "4bit", COMMITTED_BATCH)
    row = next(r for r in COMMITTED if r["scope"] == "ln")
    assert sp.step_s == pytest.approx(row["step_s"]) and sp.item_s and "docs/compare-medln-tiny" in sp.source
    # another batch: the recorded step time scaled by the examples a step sees
    assert book.lookup("medln-tiny", "ln", "4bit", COMMITTED_BATCH * 2).step_s == pytest.approx(2 * row["step_s"])
    from medln.data import load_samples

    sizes = {split: len(load_samples("sample", split).samples) for split in ("test", "source-test")}
    assert eta.scored_items("sample", ["test", "source-test"], 100) == 400  # limit below both sizes
    assert eta.scored_items("sample", ["test", "source-test"], 1000) == 2 * sum(sizes.values())
    n_test = sizes["test"]
    assert eta.scored_items("sample", ["test", ""], 0) == 2 * n_test
    assert eta.scored_items("jsonl:x", ["test"], 0) is None


def test_the_committed_speed_says_how_many_threads_it_was_recorded_on(tmp_path, monkeypatch):
    from medln.machine import machine_info

    record = dict(_RECORD, machine={**_RECORD["machine"], "cpus": 2, "threads": 1})
    (tmp_path / "results.json").write_text(json.dumps(record))
    monkeypatch.setattr(eta, "COMMITTED", tmp_path / "results.json")
    assert "recorded on 1 thread of a 2-core CPU" in eta.committed("medln-tiny", "ln", "none", 8).source
    row = next(r for r in record["rows"] if r["scope"] == "ln")
    monkeypatch.setattr(eta, "cpu_threads", lambda: 2)  # a lone job here trains on both threads
    sp = eta.committed("medln-tiny", "ln", "none", COMMITTED_BATCH)
    assert sp.step_s == pytest.approx(row["step_s"] / 2) and "scaled to 2 threads here" in sp.source
    monkeypatch.setattr(eta, "cpu_threads", lambda: 64)  # never scaled past the record's own 2 cores
    assert eta.committed("medln-tiny", "ln", "none", COMMITTED_BATCH).step_s == pytest.approx(row["step_s"] / 2)
    monkeypatch.setattr(eta, "cpu_threads", lambda: None)  # a GPU server: the CPU record as it is
    assert eta.committed("medln-tiny", "ln", "none", COMMITTED_BATCH).step_s == pytest.approx(row["step_s"])
    record["machine"]["threads"] = 2
    (tmp_path / "results.json").write_text(json.dumps(record))
    assert "recorded on a 2-core CPU" in eta.committed("medln-tiny", "ln", "none", 8).source
    monkeypatch.setattr(eta, "cpu_threads", lambda: 1)  # fewer threads here than the record had: slower
    assert eta.committed("medln-tiny", "ln", "none", COMMITTED_BATCH).step_s == pytest.approx(row["step_s"] * 2)
    del record["machine"]["threads"]  # a record from before the field: as recorded, never guessed
    (tmp_path / "results.json").write_text(json.dumps(record))
    assert eta.committed("medln-tiny", "ln", "none", COMMITTED_BATCH).step_s == pytest.approx(row["step_s"])
    assert machine_info()["threads"] >= 1  # what a new comparison records


def _steps(n, step_s=0.01, gate=None):
    def run(job):
        yield {"event": "start", "scope": "ln", "notes": []}
        for i in range(1, n + 1):
            if gate is not None:
                gate.wait(10)
            time.sleep(step_s)
            yield {"event": "step", "step": i, "loss": 1.0 / i, "step_s": step_s}
        time.sleep(0.05)  # "scoring"
        yield {"event": "done", "status": "completed", "steps_done": n, "base": {"test": {"n": 10}},
               "tuned": {"test": {"n": 10}}}
    return run


def test_eta_covers_scoring_and_the_queue_shows_the_wait(tmp_path):
    book = eta.SpeedBook(tmp_path / "speed.json")
    jobs = JobManager(max_pending=4, speed=book)
    gate = threading.Event()
    est = eta.Estimate(train_s=10.0, score_s=5.0, load_s=0.0, source="test")
    first = jobs.submit("a", "finetune", "t", tmp_path / "1", 10, _steps(10, gate=gate), estimate=est,
                        config={"backbone": "m", "scope": "ln", "quant": "4bit", "batch_size": 8})
    second = jobs.submit("b", "finetune", "t", tmp_path / "2", 10, _steps(10), estimate=est,
                         config={"backbone": "m", "scope": "ln", "quant": "4bit", "batch_size": 8})
    while first.state == "queued":
        time.sleep(0.01)
    pos, wait = jobs.queue_info(second)
    assert pos == 1 and wait is not None and wait >= 14.0  # the running job's training + scoring
    page = views.status_html(second.snapshot(), pos, wait_s=wait)
    assert "place 1 in the queue" in page and "to wait" in page and "One training worker serves every user" in page
    gate.set()
    while first.active or second.active:
        time.sleep(0.01)
    assert first.state == second.state == "done"
    training = {"state": "training", "steps": 10, "step": 4, "loss": 0.5, "eta_s": 11, "eta_covers_scoring": True,
                "elapsed_s": 3, "title": "x", "phase": "training", "error": None, "notes": []}
    assert "(training + scoring)" in views.status_html(training)
    assert book.lookup("m", "ln", "4bit", 8).item_s  # the finished job recorded its speed


def test_eta_while_training_adds_the_scoring_estimate(tmp_path):
    job = Job("j", "s", "finetune", "t", tmp_path, 10, lambda j: iter(()),
              estimate=eta.Estimate(train_s=10.0, score_s=5.0, load_s=0.0, source="x"))
    job.state, job.step = "training", 4
    job.records = [{"event": "step", "step": i, "loss": 1.0, "step_s": 1.0} for i in range(1, 5)]
    assert job.eta_s() == pytest.approx(6 * 1.0 + 5.0)
    job.state, job.step, job.last_step_at = "evaluating", 10, time.time() - 2
    assert job.eta_s() == pytest.approx(3.0, abs=0.5)


def test_eta_while_scoring_comes_from_the_jobs_own_answers(tmp_path):
    from medln.ui.jobs import apply_record

    job = Job("j", "s", "finetune", "t", tmp_path, 10, lambda j: iter(()),
              estimate=eta.Estimate(train_s=10.0, score_s=500.0, load_s=0.0, source="x"))  # a bad guess
    job.state, job.step, job.last_step_at = "training", 10, time.time() - 8
    apply_record(job, {"event": "score", "which": "base", "split": "test", "done": 40, "total": 40, "left": 160,
                       "cached": True})  # read from the cache: no generation time learned
    assert job.eta_s() == pytest.approx(500.0 - 8, abs=1)  # still the estimate
    apply_record(job, {"event": "score", "which": "tuned", "split": "test", "done": 20, "total": 40, "left": 140,
                       "cached": False})  # 20 answers in ~8 s: 0.4 s each
    assert job.state == "evaluating" and "scoring tuned test: 20 of 40" in job.phase
    assert job.eta_s() == pytest.approx(140 * 0.4, rel=0.05) and job.eta_covers_scoring()


def test_a_comparisons_phase_keeps_naming_its_scope_through_the_steps(tmp_path):
    from medln.ui.jobs import apply_record

    job = Job("j", "s", "compare", "t", tmp_path, 8, lambda j: iter(()))
    apply_record(job, {"event": "phase", "state": "training", "phase": "scope 1/2 · ln: training"})
    apply_record(job, {"event": "step", "step": 1, "global_step": 1, "loss": 1.0, "step_s": 1.0})
    assert job.state == "training" and job.phase == "scope 1/2 · ln: training"
    finetune = Job("f", "s", "finetune", "t", tmp_path, 1, lambda j: iter(()))
    finetune.state = "loading"
    apply_record(finetune, {"event": "step", "step": 1, "loss": 1.0, "step_s": 1.0})
    assert finetune.state == "evaluating" and "scoring" in finetune.phase


def test_finished_job_records_seconds_per_generated_answer(tmp_path):
    book = eta.SpeedBook(tmp_path / "speed.json")
    job = Job("j", "s", "finetune", "t", tmp_path, 2, lambda j: iter(()),
              config={"backbone": "m", "scope": "ln", "quant": "none", "batch_size": 8})
    job.records = [{"event": "step", "step": i, "step_s": 1.0} for i in (1, 2)]
    job.result = {"status": "completed", "eval_s": 30.0, "base_cached": ["test"],
                  "base": {"test": {"n": 100}}, "tuned": {"test": {"n": 100}}}
    eta.record_job(book, job)
    assert book.lookup("m", "ln", "none", 8).item_s == pytest.approx(0.3)  # 100 generated in 30 s; 100 were cached


# ------------------------------------------------------------------ page words, form, titles


def test_messages_use_the_pages_words_and_hide_server_folders():
    msg = web_words("invalid config:\n  steps: must be >= 1, got 0\n  scope 'full' with quant '4bit': "
                    "4-bit weights cannot be trained; use --quant none")
    assert "Steps:" in msg and "--quant" not in msg and "untick 4-bit" in msg
    hidden = hide_paths("hf:x: not in the local cache (/root/.cache/huggingface/datasets); see https://hf.co/a/b")
    assert "/root" not in hidden and "…/datasets" in hidden and "https://hf.co/a/b" in hidden


def test_out_of_range_fields_are_named_with_every_other_problem():
    from medln.config import ConfigError

    with pytest.raises(ConfigError) as e:
        ft.build_config(ft.config_fields("medln-tiny", "full", True, 0, 2.0, 0, -1, 0), DataChoice("sample"))
    text = web_words(str(e.value))  # as the page shows it
    for label in ("Steps:", "Batch size:", "Samples scored per split:", "Learning rate:", "4-bit"):
        assert label in text, label
    assert "--quant" not in text
    assert web_words("invalid config: steps: must be >= 1, got 0") == "invalid config: Steps: must be >= 1, got 0"
    note, ok = ft.quant_note("full", True)
    assert not ok and "--quant" not in note and "Untick 4-bit" in note


def test_fine_tune_defaults_to_4bit_and_a_reload_refills_the_form():
    assert ft.UI_QUANT_DEFAULT is True
    cfg = ft.build_config(ft.config_fields("medln-tiny", "lora", True, 33, None, 4, 120, 7),
                          DataChoice("sample", "test", "source-test"))
    values = ft.form_values(cfg.to_dict())
    assert values[:8] == ("medln-tiny", "lora", True, 33, "", 4, 120, 7)  # lr: the empty field it came from
    assert ft.form_values({**cfg.to_dict(), "lr": 0.02})[4] == "0.02"  # a rate typed in comes back as typed
    assert values[8] == cfg.to_dict().get("precision", "auto")  # issue 14's precision widget is refilled too


# ------------------------------------------------------------------ the demo model's warning


def test_ask_warns_beside_both_answers_on_images_the_demo_model_does_not_know(tmp_path):
    from medln.ui import ask
    from medln.ui.context import AppContext

    ctx = AppContext.create(runs_root=tmp_path, default_backbone="medln-tiny")
    images = REPO / "assets" / "sample" / "images"
    warning = ask.domain_warning(ctx, None, images / "real-chest_xray_pa.png", None)
    assert "not one of the synthetic phantoms" in warning and "phantoms" in warning and "llava-med" in warning
    assert ask.domain_warning(ctx, None, images / "scanner-test-0006.png", None) == ""
    other = AppContext.create(runs_root=tmp_path, default_backbone="some/real-model")
    assert ask.domain_warning(other, None, images / "real-chest_xray_pa.png", None) == ""


def test_the_api_answers_carry_the_same_warning_and_the_disclaimer(tmp_path):
    """/ask and /report are answer surfaces too: the bundled demo model on a real radiograph
    returns the page's warning with its answers; on one of its phantoms, only the disclaimer."""
    from gradio_client import handle_file

    from medln import DISCLAIMER
    from medln.ui import build_app
    from appserver import client, launched

    with launched(build_app(runs_root=tmp_path, default_backbone="medln-tiny", eval_limit=2)) as demo:
        c = client(demo)
        images = REPO / "assets" / "sample" / "images"
        base, tuned, notice = c.predict(handle_file(str(images / "real-chest_xray_pa.png")),
                                        "What imaging modality is this?", "", api_name="/ask")
        assert base and tuned == "" and "not one of the synthetic phantoms" in notice and notice.endswith(DISCLAIMER)
        base, _, notice = c.predict(handle_file(str(images / "scanner-test-0006.png")), "", api_name="/report")
        assert base and notice == DISCLAIMER


# ------------------------------------------------------------------ plots


def test_loss_curve_has_a_smoothed_line_over_the_raw_points():
    from medln import plots

    records = [{"event": "step", "step": i, "loss": 1.0 + (0.5 if i % 2 else -0.5), "scope": "ln"} for i in range(1, 41)]
    fig = plots.loss_curve_fig(records)
    modes = sorted(t.mode for t in fig.data)
    assert modes == ["lines", "markers"]
    line = next(t for t in fig.data if t.mode == "lines")
    raw = next(t for t in fig.data if t.mode == "markers")
    spread = lambda ys: max(ys) - min(ys)  # noqa: E731
    assert spread(line.y[10:]) < 0.5 * spread(raw.y[10:])  # smoothed
    assert plots.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0


def _label_clashes(pts, names, spots, y_range) -> list:
    """Pairs of label boxes that meet on some plot area, by point_labels' own geometry
    (log x, 7 px characters, 14 px lines, 8 px markers), computed here independently."""
    import math

    from medln import point_labels

    xs = [math.log10(x) for x, _ in pts]
    out = []
    for w, h in point_labels.AREAS:
        boxes = []
        for (x, (_, y)), name, spot in zip(zip(xs, pts), names, spots):
            cx = (x - min(xs)) / (max(xs) - min(xs)) * w
            cy = (y - y_range[0]) / (y_range[1] - y_range[0]) * h
            dx, dy = point_labels.SPOTS[spot]
            hw = len(name) * 3.5
            cx, cy = cx + dx * (hw + 8), cy + dy * (7 + 8)
            boxes.append((cx - hw, cy - 7, cx + hw, cy + 7))
        out += [(names[i], names[j], w) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                if min(boxes[i][2], boxes[j][2]) > max(boxes[i][0], boxes[j][0])
                and min(boxes[i][3], boxes[j][3]) > max(boxes[i][1], boxes[j][1])]
    return out


def test_near_points_get_their_labels_on_different_sides():
    from medln import plots, point_labels

    pos = point_labels.label_positions([(4096, 0.719), (2304, 0.668), (1792, 0.285), (163840, 0.711), (1e6, 0.725)],
                                       ["ln", "ln-llm", "ln-vision", "lora", "attn"])
    assert len(pos) == 5 and set(pos) <= set(point_labels.SPOTS)
    # two scopes at (almost) the same point: their labels go to different sides
    twin = point_labels.label_positions([(4096, 0.700), (4100, 0.701), (1e6, 0.9), (10, 0.1)], ["ln", "ln-llm", "a", "b"])
    assert twin[0] != twin[1]
    # a tight cluster that the greedy passes leave tangled (v3.1 findings, seed 0: ln and prompt
    # at near-equal size and score): the search finds spots where no two label boxes meet
    pts = [(2688, 0.318), (1792, 0.347), (896, 0.347), (196608, 0.398), (442368, 0.472), (61440, 0.477),
           (1574016, 0.54), (1920, 0.318), (3328, 0.278), (2560, 0.324), (64128, 0.426)]
    names = ["ln", "ln-vision", "ln-llm", "attn", "ffn", "lora", "full", "ia3", "bitfit", "prompt", "ln-lora"]
    spots = point_labels.label_positions(pts, names, y_range=(0.278, 0.665))
    assert not _label_clashes(pts, names, spots, (0.278, 0.665))
    fig = plots.cost_fig(COMMITTED)
    titles = [a.text for a in fig.layout.annotations]
    assert all(len(t) <= 10 for t in titles)  # short subplot titles: they cannot run into each other


# ------------------------------------------------------------------ reference rows beside every tuned score


def _with_refs(phrasing: bool = True):
    def m(overall, seen, held):
        out = {"n": 50, "n_closed": 20, "n_open": 30, "overall": overall}
        return {**out, "by_phrasing": {"seen": {"n": 30, "overall": seen}, "held-out": {"n": 20, "overall": held}}} \
            if phrasing else out

    return {"base": {"test": m(0.1, 0.1, 0.1)}, "tuned": {"test": m(0.5, 0.6, 0.35)},
            "blind": {"test": m(0.42, 0.46, 0.36)}, "ceiling": {"test": m(0.8, 0.8, 0.8)},
            "references": {"blind": "most frequent train answer", "fitted_on": "9 questions, 0 reports",
                           "ceiling": "ridge classifiers on the frozen vision features"}}


def test_fine_tune_table_has_the_blind_row_and_the_ceiling_per_phrasing():
    rows = views.metric_rows(_with_refs())
    h = views.METRIC_HEADERS
    held = next(r for r in rows if r[h.index("wording")] == "held-out")
    assert held[h.index("n")] == 20 and held[h.index("tuned")] == "0.350"
    assert held[h.index("image-blind")] == "0.360" and held[h.index("probe ceiling")] == "0.800"
    page = views.metric_table_html(_with_refs())
    assert "image-blind" in page and "ridge classifiers" in page and "<td>held-out</td>" in page
    plain = views.metric_table_html(_with_refs(phrasing=False))
    assert "n/a (the records do not say" in plain and "<td>held-out</td>" not in plain


def test_compare_table_and_plot_carry_the_blind_row():
    from medln import plots
    from medln.ui.compare import TABLE_HEADERS, table_rows

    refs = _with_refs()
    row = {"scope": "ln", "metric": "overall", "trainable": 4096, "percent": 0.09, "base": refs["base"]["test"],
           "tuned": refs["tuned"]["test"], "blind": refs["blind"]["test"], "ceiling": refs["ceiling"]["test"],
           "references": refs["references"], "adapter_bytes": 1000}
    cells = table_rows([row])
    assert cells[0][TABLE_HEADERS.index("vs image-blind")] == "+8.0 pts"
    assert cells[0][TABLE_HEADERS.index("seen / held-out wording")] == "0.600 (n 30) / 0.350 (n 20)"
    assert [c[0] for c in cells[1:]] == ["image-blind (question only)", "probe ceiling (frozen vision)"]
    assert all(len(c) == len(TABLE_HEADERS) for c in cells)
    fig = plots.metric_vs_params_fig([row])
    texts = [a.text for a in fig.layout.annotations]
    assert "image-blind 0.420" in texts and "base 0.100" in texts and "probe ceiling 0.800" in texts
    ys = sorted(round(s.y0, 3) for s in fig.layout.shapes)
    assert ys == [0.1, 0.42, 0.8]


def test_about_gives_each_committed_verdict_beside_the_claim(tmp_path):
    from medln.ui import about

    summary = [{"scope": "ln", "skipped": None, "trainable": 10, "percent": 0.1, "n_test": 50,
                "test": {"overall": {"mean": 0.3, "sd": 0.01, "n": 3, "ci95": [0.28, 0.32], "values": [0.3] * 3}},
                "ood": {}, "test_vs_best": {"is_best": True, "within_noise": True}}]
    for name in ("compare-scanner", "compare-findings"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"summary": summary, "metric": "overall", "seeds": [0, 1, 2], "steps": 200, "data": f"sample:{name}",
             "eval_split": "test", "rows": [], "references": {"blind": {"test": {"overall": 0.4}}},
             "config": {"batch_size": 32}}))
    found = about.committed_comparisons(tmp_path)
    assert [p.parent.name for p in found] == ["compare-findings", "compare-scanner"]
    page = about.measured_html(found)
    assert page.count("BELOW it") == 4  # per verdict: the list of scopes, and ln beside the claim
    assert "The paper claims" in page and "compare-scanner" in page and "compare-findings" in page
    assert page.count("200 steps per scope of batch 32") == 2  # the budget each verdict rests on
    assert "claims" in about.measured_html([])  # nothing committed: the claim with "nothing yet", never alone


def test_ask_examples_show_their_reference_answers():
    from medln.data.bundled import ASSETS, example_images
    from medln.data.examples import reference_answers, reference_md

    path = example_images()[0][0]
    refs = reference_answers(path)
    assert refs and all(r["answer"] for r in refs)
    first = json.loads(next(line for f in sorted(ASSETS.glob("*.jsonl"))
                            for line in f.read_text().splitlines()
                            if (ASSETS / json.loads(line)["image"]).resolve() == Path(path).resolve()))
    assert first["answer"] in reference_md(path) and first["question"] in reference_md(path)
    assert reference_md(ASSETS.parent / "nothing.png") == ""
