"""The app: handlers as plain functions (parameter counts, config building, upload checks,
error messages, jobs, the model cache), then the app launched in-process and driven over
HTTP with gradio_client: a short fine-tune end to end, /ask and /report, Stop, session
isolation, and failures that come back as one clear message.
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from medln import DISCLAIMER  # noqa: E402
from appserver import client as client_of, launched, poll  # noqa: E402
from medln.config import ConfigError  # noqa: E402
from medln.data.sample import DataError  # noqa: E402
from medln.ui import finetune as ft  # noqa: E402
from medln.ui import views  # noqa: E402
from medln.ui.errors import UserError, user_message  # noqa: E402
from medln.ui.jobs import JobManager  # noqa: E402
from medln.models import ModelCache  # noqa: E402
from medln.ui.settings import api_session, check_session, new_session_id  # noqa: E402
from medln.ui.uploads import (  # noqa: E402
    DataChoice,
    check_image_upload,
    check_size,
    prepare_dataset,
    safe_extract,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "assets" / "sample" / "images" / "real-chest_xray_pa.png"
MB = 2**20


# ------------------------------------------------------------------ parameter counts


def test_param_view_counts_every_scope_before_loading(tiny_model):
    rows, summary, note, ok = ft.param_view(str(tiny_model("llava")), "ln", False)
    scopes = [r[0].removeprefix("▶ ") for r in rows]
    assert scopes == ["ln", "ln-vision", "ln-llm", "attn", "ffn", "lora", "full", "ia3", "bitfit", "prompt", "ln-lora"]
    assert rows[0][0] == "▶ ln"  # the chosen scope is marked
    assert rows[scopes.index("full")][2] == "100 %"
    assert "trains" in summary and "%" in summary and "no gradient" in summary  # LLaVA's dead vision norms
    assert ok and "precision" in note


def test_param_view_explains_full_under_4bit(tiny_model):
    rows, summary, note, ok = ft.param_view(str(tiny_model("llava")), "full", True)
    assert not ok  # Start is disabled, and the reason is on the page
    assert "cannot run" in note and "4-bit" in note
    full = next(r for r in rows if r[0].endswith("full"))
    assert full[3].startswith("cannot run")
    attn = next(r for r in rows if r[0].endswith("attn"))
    assert "unquantized" in attn[3]


def test_param_view_unknown_backbone_is_a_message():
    rows, summary, _, ok = ft.param_view("no-such-model", "ln", False)
    assert rows == [] and not ok
    assert "unknown backbone 'no-such-model'" in summary and "Traceback" not in summary


# ------------------------------------------------------------------ config building


def test_build_config_maps_widgets_to_train_config():
    data = DataChoice("jsonl:/x/data.jsonl", "test", "")
    cfg = ft.build_config(ft.config_fields(" medln-tiny ", "lora", True, 12.0, None, 4.0, 16, 3), data)
    assert (cfg.backbone, cfg.scope, cfg.quant, cfg.steps, cfg.batch_size) == ("medln-tiny", "lora", "4bit", 12, 4)
    assert cfg.lr is None  # an empty field: the scope's own default, saved as "default", not a number
    assert cfg.effective_lr == ft.scope_info("lora", "medln-tiny")[0]  # ... the rate the run then takes
    assert (cfg.data, cfg.eval_split, cfg.ood_split, cfg.eval_limit, cfg.seed) == ("jsonl:/x/data.jsonl", "test", "", 16, 3)
    assert ft.build_config(ft.config_fields("medln-tiny", "ln", False, 5, 0.01, 2, 0, 0), data).lr == 0.01
    assert ft.build_config(ft.config_fields("medln-tiny", "ln", False, 5, " ", 2, 0, 0), data).lr is None
    assert ft.build_config(ft.config_fields("medln-tiny", "ln", False, 5, "0.02", 2, 0, 0), data).lr == 0.02
    with pytest.raises(ConfigError, match="lr: must be a number, got 'fast'"):  # the field named, not a crash
        ft.build_config(ft.config_fields("medln-tiny", "ln", False, 5, "fast", 2, 0, 0), data)
    # /finetune without a batch: the backbone's own
    empty = ft.build_config(ft.config_fields("medln-tiny", "ln", False, 5, None, None, 0, 0), data)
    assert empty.batch_size == ft.default_batch("medln-tiny")
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):  # TrainConfig.from_dict's refusal
        ft.build_config({**ft.config_fields("medln-tiny", "ln", False, 5, None, 2, 0, 0), "bogus": 1}, data)


def test_the_batch_field_follows_the_backbone_unless_typed(monkeypatch):
    from medln.backbones import BACKBONES_BY_NAME
    from medln.ui.form import followed_batch

    monkeypatch.setitem(BACKBONES_BY_NAME, "medln-tiny", dataclasses.replace(BACKBONES_BY_NAME["medln-tiny"], batch_size=32))
    assert followed_batch("llava-med-v1.5-7b", 32, "medln-tiny") == 8  # still tiny's default: follows
    assert followed_batch("medln-tiny", 8, "llava-med-v1.5-7b") == 32
    assert followed_batch("llava-med-v1.5-7b", 4, "medln-tiny") is None  # typed by the user: kept
    assert followed_batch("owner/model", None, "medln-tiny") == 8  # an emptied field gets the default


def test_build_config_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        ft.build_config(ft.config_fields("medln-tiny", "full", True, 0, 2.0, 0, 0, 0), DataChoice("sample"))
    msg = user_message(e.value)
    for needle in ("4-bit", "steps", "batch_size", "lr"):
        assert needle in msg
    with pytest.raises(UserError, match="choose a backbone"):
        ft.build_config(ft.config_fields("  ", "ln", False, 5, None, 2, 0, 0), DataChoice("sample"))


def test_scope_defaults_come_from_the_registry():
    from medln.backbones import BACKBONES_BY_NAME
    from medln.methods import get_scope

    lr, desc = ft.scope_info("ln", "some/hub-model")  # no measured rates: the scope's own
    assert lr == get_scope("ln").default_lr and "LayerNorm" in desc
    assert ft.scope_info("lora", "some/hub-model")[0] < lr  # LN-tuning needs the higher rate
    # the bundled backbone carries rates chosen on its validation split (docs/compare-medln-tiny)
    assert ft.scope_info("ln", "medln-tiny")[0] == BACKBONES_BY_NAME["medln-tiny"].lrs["ln"]


# ------------------------------------------------------------------ uploads


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("bad", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "a\\..\\evil.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, bad):
    archive = _zip(tmp_path / "slip.zip", {"ok/data.jsonl": b"{}\n", bad: b"pwned"})
    dest = tmp_path / "uploads" / "x"
    with pytest.raises(UserError, match="unsafe entry"):
        safe_extract(archive, dest, max_bytes=MB)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_zip_symlink_is_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"data.jsonl": b"{}\n"}, symlink="images/link.png")
    with pytest.raises(UserError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out", max_bytes=MB)


def test_zip_expansion_is_capped(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * (3 * MB))  # compresses to a few KB
    assert archive.stat().st_size < 100_000
    with pytest.raises(UserError, match="expands to"):
        safe_extract(archive, tmp_path / "out", max_bytes=MB)
    assert not (tmp_path / "out").exists()


def test_not_a_zip_is_a_message(tmp_path):
    fake = tmp_path / "data.zip"
    fake.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        safe_extract(fake, tmp_path / "out", max_bytes=MB)


def test_oversized_upload_is_refused(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * (2 * MB + 1))
    with pytest.raises(UserError, match=r"too large: 2\.0 MB \(the limit is 2 MB\)"):
        check_size(big, 2 * MB, "the dataset upload")
    with pytest.raises(UserError, match="too large"):
        prepare_dataset("upload", big, "", tmp_path / "uploads", max_upload_bytes=2 * MB, max_unzip_bytes=MB)


def test_zip_dataset_is_detected_and_validated(tmp_path, dataset):
    members = {f"mydata/{p.relative_to(dataset.parent)}": p.read_bytes()
               for p in dataset.parent.rglob("*") if p.is_file()}
    archive = _zip(tmp_path / "mydata.zip", members)
    choice = prepare_dataset("upload", archive, "", tmp_path / "uploads", max_upload_bytes=10 * MB,
                             max_unzip_bytes=10 * MB)
    assert choice.spec.startswith("jsonl:") and choice.spec.endswith("mydata/data.jsonl")
    assert choice.eval_split == "test"
    assert any("12 training records" in n for n in choice.notes)


def test_malformed_dataset_names_the_line_not_the_server_path(tmp_path, dataset):
    lines = dataset.read_text().splitlines()
    lines[2] = '{"image": "images/img00.png", "question": "q?"'  # truncated JSON
    members = {"d/data.jsonl": "\n".join(lines).encode()}
    members.update({f"d/images/{p.name}": p.read_bytes() for p in (dataset.parent / "images").iterdir()})
    archive = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(UserError) as e:
        prepare_dataset("upload", archive, "", tmp_path / "uploads", max_upload_bytes=10 * MB, max_unzip_bytes=10 * MB)
    msg = str(e.value)
    assert msg.startswith("bad.zip: d/data.jsonl:3: malformed JSON")
    assert str(tmp_path) not in msg


def test_lone_jsonl_without_images_says_to_upload_a_zip(tmp_path, dataset):
    lone = tmp_path / "mine.jsonl"
    lone.write_text(dataset.read_text())
    with pytest.raises(UserError, match="upload a zip holding the JSONL"):
        prepare_dataset("upload", lone, "", tmp_path / "uploads", max_upload_bytes=MB, max_unzip_bytes=MB)


def test_dataset_choices(tmp_path):
    assert prepare_dataset("sample", None, "", tmp_path, max_upload_bytes=1, max_unzip_bytes=1).ood_split == "source-test"
    assert prepare_dataset("hub", None, " hf:org/set ", tmp_path, max_upload_bytes=1, max_unzip_bytes=1).spec == "hf:org/set"
    for source, upload, hub, msg in [("hub", None, "", "dataset id"), ("upload", None, "", "choose a dataset"),
                                     ("upload", tmp_path / "x.csv", "", "unsupported dataset file")]:
        with pytest.raises(UserError, match=msg):
            prepare_dataset(source, upload, hub, tmp_path, max_upload_bytes=MB, max_unzip_bytes=MB)


def test_image_upload_checks(tmp_path):
    assert check_image_upload(EXAMPLE, MB) == EXAMPLE
    exe = tmp_path / "x.exe"
    exe.write_bytes(b"MZ")
    with pytest.raises(UserError, match="unsupported image file"):
        check_image_upload(exe, MB)
    with pytest.raises(UserError, match="choose an image"):
        check_image_upload(None, MB)
    with pytest.raises(UserError, match="too large"):
        check_image_upload(EXAMPLE, 100)


# ------------------------------------------------------------------ messages, sessions, views


def test_user_message_never_shows_a_traceback(caplog):
    assert user_message(DataError("data.jsonl:3: field 'image' is missing")) == "data.jsonl:3: field 'image' is missing"
    assert "out of memory" in user_message(MemoryError())
    try:
        import torch

        assert "4-bit" in user_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    except (ImportError, AttributeError):
        pass
    with caplog.at_level("ERROR", logger="medln.ui"):
        msg = user_message(KeyError("secret internals"), doing="training")
    assert msg.startswith("training: unexpected error (KeyError)") and "logged on the server" in msg
    assert "secret internals" not in msg and "Traceback" not in msg
    assert "secret internals" in caplog.text  # the details go to the log


def test_session_ids_are_folder_safe():
    sid = new_session_id()
    assert check_session(sid) == sid
    for bad in ("", "../../etc", "a/b", "x" * 200, None):
        with pytest.raises(ValueError):
            check_session(bad)
    assert check_session(api_session("abc/../def-123")) == "api-abcdef-123"


def test_views_render_job_states():
    snap = {"state": "training", "steps": 10, "step": 4, "loss": 1.5, "eta_s": 75, "elapsed_s": 30,
            "title": "ln <b>", "phase": "training", "error": None, "notes": []}
    page = views.status_html(snap)
    assert "width:40.0%" in page and "ETA 1:15" in page and "ln &lt;b&gt;" in page
    failed = views.status_html({**snap, "state": "failed", "error": "cannot load x: <offline>"})
    assert "medln-failed" in failed and "&lt;offline&gt;" in failed
    rows = views.metric_rows({"base": {"test": {"overall": 0.25, "rouge_l": None}},
                              "tuned": {"test": {"overall": 0.5, "rouge_l": 0.1}}})
    assert rows[0] == ["test", "all", "VQA overall accuracy", "–", "0.250", "0.500", "+0.250", "–", "–"]
    assert rows[1] == ["test", "all", "report ROUGE-L", "–", "–", "0.100", "–", "–", "–"]


# ------------------------------------------------------------------ jobs and cache


def _fake_run(steps: int, delay: float = 0.01):
    def run(job):
        yield {"event": "start", "scope": "ln", "notes": ["a note"]}
        for i in range(1, steps + 1):
            if job.stop.is_set():
                yield {"event": "stopped", "step": i - 1}
                yield {"event": "done", "status": "stopped", "steps_done": i - 1}
                return
            time.sleep(delay)
            yield {"event": "step", "step": i, "loss": 1.0 / i, "step_s": delay}
        yield {"event": "done", "status": "completed", "steps_done": steps}
    return run


def _wait(job, timeout=10.0):
    end = time.time() + timeout
    while job.active and time.time() < end:
        time.sleep(0.02)
    return job


def test_job_runs_in_the_background_and_records_progress(tmp_path):
    jobs = JobManager(max_pending=2)
    job = _wait(jobs.submit("s1", "finetune", "t", tmp_path / "r", 5, _fake_run(5)))
    snap = job.snapshot()
    assert snap["state"] == "done" and snap["step"] == 5 and len(snap["losses"]) == 5 and snap["notes"] == ["a note"]
    assert jobs.latest("s1") is job and jobs.latest("other") is None
    json.dumps(snap)  # what /job returns must be JSON


def test_stop_ends_a_job_within_a_step(tmp_path):
    jobs = JobManager(max_pending=2)
    job = jobs.submit("s1", "finetune", "t", tmp_path / "r", 10_000, _fake_run(10_000, delay=0.01))
    while job.step < 2:
        time.sleep(0.01)
    jobs.stop("s1")
    _wait(job)
    assert job.state == "stopped" and job.result["status"] == "stopped" and job.step < 10_000


def test_one_job_per_session_and_a_bounded_queue(tmp_path):
    jobs = JobManager(max_pending=1)
    gate = threading.Event()

    def blocked(job):
        gate.wait(10)
        yield {"event": "done", "status": "completed"}

    first = jobs.submit("a", "finetune", "t", tmp_path / "1", 1, blocked)
    with pytest.raises(UserError, match="still running"):
        jobs.submit("a", "finetune", "t", tmp_path / "2", 1, blocked)
    while first.state == "queued":
        time.sleep(0.01)
    waiting = jobs.submit("b", "finetune", "t", tmp_path / "3", 1, blocked)  # waits for the worker
    assert jobs.position(waiting) == 1
    with pytest.raises(UserError, match="server is busy"):
        jobs.submit("c", "finetune", "t", tmp_path / "4", 1, blocked)
    jobs.stop("b")  # a queued job is cancelled at once
    assert waiting.state == "cancelled"
    gate.set()
    assert _wait(first).state == "done"


def test_failures_become_the_job_error(tmp_path):
    def broken(job):
        yield {"event": "start", "notes": []}
        raise DataError("data.jsonl:7: field 'answer' is empty")

    jobs = JobManager()
    job = _wait(jobs.submit("s", "finetune", "t", tmp_path / "r", 3, broken))
    assert job.state == "failed" and job.error == "training: data.jsonl:7: field 'answer' is empty"


def test_model_cache_is_bounded_and_shared():
    from types import SimpleNamespace

    import torch

    loads = []

    def loader(backbone, quant, keep_full_precision):
        loads.append(backbone)
        return SimpleNamespace(model=torch.nn.Linear(4, 4), processor=None)

    cache = ModelCache(max_models=2, loader=loader)
    a = cache.entry("a")
    assert cache.entry("a") is a and loads == ["a"]  # one copy per (backbone, quant)
    cache.entry("b")
    with cache.hold(cache.entry("a")):  # "a" becomes most recent and is in use
        cache.entry("c")
    assert sorted(k[0] for k in cache.keys()) == ["a", "c"]  # "b", least recently used, went
    cache.entry("b")
    assert len(cache) == 2 and loads == ["a", "b", "c", "b"]


# ------------------------------------------------------------------ the app over HTTP


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """The app on a free port, on a tiny random LLaVA, its runs in a temporary folder."""
    from medln.ui import build_app

    demo = build_app(runs_root=tmp_path_factory.mktemp("ui-runs"), default_backbone=str(tiny_model("llava")),
                     eval_limit=4)
    with launched(demo, max_file_size=5 * MB):
        yield demo


@pytest.fixture(scope="module")
def finished(served, tiny_model):
    """A 3-step fine-tune through the API, polled to the end."""
    client = client_of(served)
    t0 = time.time()
    job = client.predict(backbone=str(tiny_model("llava")), scope="ln", steps=3, batch_size=4, eval_limit=4,
                         api_name="/finetune")
    assert job["state"] in ("queued", "loading") and job["run_id"]
    done = poll(client, job["job_id"])
    done["wall_s"] = time.time() - t0
    return client, done


def test_param_counts_endpoint(served):
    client = client_of(served)
    rows = client.predict(api_name="/param_counts")
    assert [r["scope"] for r in rows][:3] == ["ln", "ln-vision", "ln-llm"]
    assert rows[0]["trainable"] > 0 and 0 < rows[0]["percent"] < 1
    full = next(r for r in client.predict(quant="4bit", api_name="/param_counts") if r["scope"] == "full")
    assert "skipped" in full  # full under 4-bit


def test_finetune_end_to_end_then_ask_returns_two_answers(finished):
    client, job = finished
    assert job["state"] == "done", job["error"]
    assert job["step"] == 3 and [p["step"] for p in job["losses"]] == [1, 2, 3]
    result = job["result"]
    assert set(result["base"]) == set(result["tuned"]) == {"test", "source-test"}
    assert result["status"] == "completed" and result["adapter_bytes"] > 0
    runs = client.predict(api_name="/runs")
    assert runs[0]["run_id"] == job["run_id"] and runs[0]["scope"] == "ln"

    from gradio_client import handle_file

    t0 = time.time()
    base, tuned, notice = client.predict(handle_file(str(EXAMPLE)), "What imaging modality is this?", job["run_id"],
                                         api_name="/ask")
    assert isinstance(base, str) and isinstance(tuned, str) and base and tuned
    assert notice == DISCLAIMER  # a random tiny model, not the bundled demo: no phantom warning, the disclaimer always
    base_r, tuned_r, notice_r = client.predict(handle_file(str(EXAMPLE)), job["run_id"], api_name="/report")
    assert base_r and tuned_r and notice_r == DISCLAIMER
    print(f"\nfine-tune round trip {job['wall_s']:.1f} s; ask + report {time.time() - t0:.1f} s")
    # without a run: the base answers, the tuned column stays empty
    only_base, empty, _ = client.predict(handle_file(str(EXAMPLE)), "Is there an effusion?", "", api_name="/ask")
    assert only_base and empty == ""


def test_the_adapter_zip_holds_the_run(finished, served):
    _, job = finished
    from medln.ui.downloads import adapter_zip

    run = next(served.medln.settings.runs_root.glob(f"*/runs/{job['run_id']}"))
    names = zipfile.ZipFile(adapter_zip(run)).namelist()
    assert f"{job['run_id']}/adapter/adapter_config.json" in names and f"{job['run_id']}/eval.json" in names


def test_runs_of_other_scopes_share_one_base_copy(finished, served):
    """ln, lora and a second ln run answer in turn from ONE cached base model: adapters with
    the same modules are switched with set_adapter, others re-wrap the same weights."""
    from gradio_client import handle_file

    client, first = finished
    run_ids = [first["run_id"]]
    for scope in ("lora", "ln"):
        job = client.predict(scope=scope, steps=2, batch_size=2, eval_limit=2, api_name="/finetune")
        assert poll(client, job["job_id"])["state"] == "done"
        run_ids.append(job["run_id"])
    image = handle_file(str(EXAMPLE))
    answers = {}
    for run_id in run_ids + run_ids[:1]:
        base, tuned, _ = client.predict(image, "Is there an effusion?", run_id, api_name="/ask")
        assert base and tuned
        answers.setdefault("base", set()).add(base)
    assert len(answers["base"]) == 1  # the base answer never changes: adapters are off for it
    assert len(served.medln.cache) == 1  # one copy of the base weights


def test_dicom_upload_is_decoded_for_asking(served, tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    from medln.ui.ask import prepare_image

    dcm = Path(pydicom_data.get_testdata_file("CT_small.dcm"))
    png = prepare_image(served.medln, new_session_id(), dcm)
    assert png.suffix == ".png" and png.stat().st_size > 0
    with pytest.raises(DataError, match="unreadable DICOM"):
        bad = tmp_path / "bad.dcm"
        bad.write_bytes(b"\0" * 128 + b"DICM" + b"junk")
        prepare_image(served.medln, new_session_id(), bad)


def test_runs_are_private_to_their_session(finished, served):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, job = finished
    stranger = client_of(served)
    assert stranger.predict(api_name="/runs") == []
    with pytest.raises(AppError, match="not a finished run of this session"):
        stranger.predict(handle_file(str(EXAMPLE)), "q?", job["run_id"], api_name="/ask")


def test_stop_keeps_what_was_trained(served, tiny_model):
    client = client_of(served)
    job = client.predict(backbone=str(tiny_model("llava")), steps=5000, batch_size=2, eval_limit=2,
                         api_name="/finetune")
    end = time.time() + 120
    while client.predict(job["job_id"], api_name="/job")["step"] < 1 and time.time() < end:
        time.sleep(0.2)
    t0 = time.time()
    client.predict(job["job_id"], api_name="/stop")
    done = poll(client, job["job_id"])
    assert done["state"] == "stopped" and 1 <= done["result"]["steps_done"] < 5000
    assert done["result"]["adapter_bytes"] > 0 and time.time() - t0 < 60
    assert client.predict(api_name="/runs")[0]["run_id"] == job["run_id"]  # a stopped run can be asked


@pytest.mark.parametrize("kwargs, message", [
    ({"backbone": "no-such-model"}, "backbone: 'no-such-model' is not accepted here: a registry name"),
    ({"backbone": "../../../../etc"}, "is not accepted here.*this server takes no local folders"),
    ({"backbone": "x" * 100_000}, "backbone: at most 1,024 characters, got 100,000"),
    ({"backbone": "someone/not-downloaded"}, "not reachable|cannot"),
    ({"backbone": "medgemma-4b"}, "gated.*HF_TOKEN"),
    ({"scope": "full", "quant": "4bit"}, "4-bit weights cannot be trained"),
    ({"data": "vqa-rad:/nowhere"}, "data must be 'sample'"),
    ({"steps": 0}, "steps: must be >= 1"),
])
def test_finetune_failures_are_messages(served, kwargs, message):
    from gradio_client.exceptions import AppError

    client = client_of(served)
    try:
        job = client.predict(**{"steps": 2, **kwargs}, api_name="/finetune")
    except AppError as e:
        assert "Traceback" not in str(e)
        assert __import__("re").search(message, str(e)), str(e)
        return
    job = poll(client, job["job_id"])  # an error found only while loading ends the job with it
    assert job["state"] == "failed" and __import__("re").search(message, job["error"]), job["error"]


def test_bad_image_and_question_are_messages(served, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = client_of(served)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(AppError, match="unreadable image"):
        client.predict(handle_file(str(broken)), "q?", "", api_name="/ask")
    with pytest.raises(AppError, match="type a question"):
        client.predict(handle_file(str(EXAMPLE)), "  ", "", api_name="/ask")
    with pytest.raises(AppError, match="not an uploaded file"):
        client.predict("/etc/passwd", "q?", "", api_name="/ask")


def test_uploaded_dataset_trains(served, dataset, tmp_path):
    from gradio_client import handle_file

    members = {f"d/{p.relative_to(dataset.parent)}": p.read_bytes() for p in dataset.parent.rglob("*") if p.is_file()}
    archive = _zip(tmp_path / "mine.zip", members)
    client = client_of(served)
    job = client.predict(steps=2, batch_size=2, eval_limit=3, dataset_file=handle_file(str(archive)),
                         api_name="/finetune")
    done = poll(client, job["job_id"])
    assert done["state"] == "done", done["error"]
    assert set(done["result"]["tuned"]) == {"test"}


def test_page_is_served_with_the_disclaimer(served):
    import httpx

    from medln import DISCLAIMER

    r = httpx.get(served.local_url, timeout=30)
    assert r.status_code == 200
    config = httpx.get(served.local_url.rstrip("/") + "/config", timeout=30).json()
    texts = json.dumps(config)
    assert DISCLAIMER in texts


def test_only_the_ui_package_imports_gradio():
    # gradio_client (a small HTTP client the GPU proof drives the app with) is a separate
    # package; only gradio itself, the server and its widgets, stays inside medln/ui.
    imports_gradio = re.compile(r"^\s*(import|from)\s+gradio(\s|\.|$)")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "medln").rglob("*.py")
                 if "ui" not in p.relative_to(REPO / "medln").parts[:1]
                 and any(imports_gradio.match(line)
                         for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []


def test_poll_sends_only_what_changed(served, tmp_path):
    """An open page costs its job little: a tick with nothing new sends nothing, a new loss
    point sends the status and the figure, a record without one (scoring's batches) no figure."""
    import threading

    import gradio as gr

    ctx, skip = served.medln, gr.skip()
    gates = [threading.Event(), threading.Event(), threading.Event()]

    def run(job):
        yield {"event": "start", "scope": "ln", "notes": []}
        yield {"event": "step", "step": 1, "loss": 1.0, "step_s": 0.1}
        gates[0].wait(60)
        yield {"event": "step", "step": 2, "loss": 0.5, "step_s": 0.1}
        gates[1].wait(60)
        yield {"event": "phase", "phase": "still training"}
        gates[2].wait(60)

    def until(cond):
        end = time.time() + 60
        while not cond() and time.time() < end:
            time.sleep(0.02)

    job = ctx.jobs.submit("poll-only-changes", "finetune", "t", tmp_path / "run", 5, run)
    until(lambda: job.step == 1)
    first = ctx.finetune.poll.fn("poll-only-changes", None)
    assert first[1] is not None and first[1] != skip and first[6] != skip  # figure and buttons drawn
    key = first[9]
    assert all(out == skip for out in ctx.finetune.poll.fn("poll-only-changes", key))  # nothing new
    gates[0].set()
    until(lambda: job.step == 2)
    second = ctx.finetune.poll.fn("poll-only-changes", key)
    assert isinstance(second[0], str) and second[1] != skip  # status and the new point
    assert all(out == skip for out in second[2:9])  # tables, download, buttons, notice: unchanged
    gates[1].set()
    until(lambda: job.phase == "still training")
    third = ctx.finetune.poll.fn("poll-only-changes", second[9])
    assert isinstance(third[0], str) and third[1] == skip  # no new loss point: no figure
    gates[2].set()
    until(lambda: not job.active)


def test_compare_tab_keeps_the_local_executor(monkeypatch):
    """The app's sweep runs each scope as a call in its own process: options that ask for Ray,
    a resume or a tracker (possible through the API's dict) still run locally, as a new sweep."""
    import medln.compare
    from medln.compare.options import CompareConfig
    from medln.ui.compare import compare_records

    seen = []

    def fake_compare(cfg, **kw):
        seen.append(cfg)
        return iter(())

    monkeypatch.setattr(medln.compare, "compare", fake_compare)
    options = CompareConfig(scopes="ln", out="x", executor="ray", ray_address="10.0.0.1:6379", resume=True,
                            report_to="tensorboard").to_dict()
    assert list(compare_records(options)) == []
    assert (seen[0].executor, seen[0].ray_address, seen[0].resume, seen[0].report_to) == ("local", "", False, "none")


def test_compare_tab_counts_every_scope_and_seed(monkeypatch):
    """With seeds, the app's sweep reports runs (scope x seed) and steps across all of them."""
    import medln.compare
    from medln.compare.options import CompareConfig
    from medln.ui.compare import compare_records

    def fake_compare(cfg, **kw):
        yield {"event": "scope_start", "scope": "lora", "seed": 1, "index": 3, "of": 4}
        yield {"event": "run_start"}
        yield {"event": "step", "step": 2}

    monkeypatch.setattr(medln.compare, "compare", fake_compare)
    options = CompareConfig(scopes="ln,lora", out="x", steps=2, seeds=2).to_dict()
    phase, training, step, scoring = list(compare_records(options))
    assert training["phase"] == "run 4/4 · lora · seed 1: training"
    assert step["global_step"] == 8 and scoring["state"] == "evaluating"
