"""The app under hostile and careless use (issue 10), in-process on 127.0.0.1 and driven with
gradio_client: the API takes the config's bounds, memory per job, uploads that point
outside their folder, errors without server paths, foreign adapters, no file served by
path, quiet refusals, and a bounded load test (20 concurrent /ask while a job trains)."""

from __future__ import annotations

import json
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from medln.config import ConfigError, bounds  # noqa: E402
from medln.ui.settings import api_session  # noqa: E402
from appserver import client as client_of, launched, poll  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")
EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "sample" / "images" / "real-chest_xray_pa.png"
QUEUE_SIZE = 8


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    from medln.ui import build_app

    demo = build_app(runs_root=tmp_path_factory.mktemp("ui-runs"), default_backbone=str(tiny_model("llava")),
                     eval_limit=2, queue_size=QUEUE_SIZE)
    with launched(demo):
        yield demo


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _dataset_zip(dataset, tmp_path, edit=None, extra: dict | None = None) -> Path:
    lines = [json.loads(line) for line in dataset.read_text().splitlines()]
    if edit:
        edit(lines)
    members = {"d/data.jsonl": "".join(json.dumps(line) + "\n" for line in lines).encode()}
    members.update({f"d/images/{p.name}": p.read_bytes() for p in (dataset.parent / "images").iterdir()})
    members.update(extra or {})
    return _zip(tmp_path / "upload.zip", members)


@pytest.fixture(scope="module")
def trained(served, tiny_model):
    """A client with one finished 2-step fine-tune."""
    client = client_of(served)
    job = client.predict(scope="ln", steps=2, batch_size=2, eval_limit=2, api_name="/finetune")
    done = poll(client, job["job_id"])
    assert done["state"] == "done", done["error"]
    return client, done


# --------------------------------------------------------------------------- 1. bounds and memory


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 1_000_000}, "batch_size: must be <= 512, got 1000000"),
    ({"steps": 1_000_000_000}, "steps: must be <= 100000, got 1000000000"),
    ({"steps": 2.5}, "steps: must be a whole number, got 2.5"),
    ({"eval_limit": -1}, "eval_limit: must be >= 0"),
    ({"lr": 5.0}, "lr: must be < 1.0"),
])
def test_the_api_takes_the_bounds_the_ui_has(served, kwargs, message):
    from gradio_client.exceptions import AppError

    client = client_of(served)
    with pytest.raises(AppError) as e:
        client.predict(**{"steps": 2, **kwargs}, api_name="/finetune")
    assert message in str(e.value) and "Traceback" not in str(e.value)
    assert served.medln.jobs.latest(api_session(client.session_hash)) is None  # nothing started


def test_the_form_takes_the_same_ranges_and_names_the_field():
    # The widgets carry no Gradio minimum/maximum (its message would not name the field): the
    # form's handler builds a TrainConfig, whose validate() applies the config's own bounds.
    from medln.ui import finetune as ft
    from medln.ui.uploads import DataChoice

    for field, pos in (("steps", 3), ("batch_size", 5), ("eval_limit", 6), ("seed", 7)):
        b = bounds(field)
        widgets = ["medln-tiny", "ln", True, 10, None, 2, 0, 0]  # config_fields' order: the form's widgets
        widgets[pos] = b["max"] + 1
        with pytest.raises(ConfigError, match=rf"{field}: must be <= {b['max']}"):
            ft.build_config(ft.config_fields(*widgets), DataChoice("sample"))


def test_a_job_that_cannot_fit_the_memory_fails_alone_and_the_app_serves_on(served, monkeypatch):
    from medln.memory import ENV_CAP

    monkeypatch.setenv(ENV_CAP, "0.000001")  # a deployment's cap far below one sample's activations
    client = client_of(served)
    job = poll(client, client.predict(steps=2, batch_size=2, api_name="/finetune")["job_id"])
    assert job["state"] == "failed" and "not enough memory to train: one sample needs" in job["error"]
    assert str(served.medln.settings.runs_root) not in job["error"]
    monkeypatch.delenv(ENV_CAP)
    assert client.predict(api_name="/param_counts")[0]["scope"] == "ln"  # still serving


# --------------------------------------------------------------------------- 2 and 6. uploads


@pytest.mark.parametrize("image", ["/etc/hostname", "../../../../../../etc/hostname", "images/../../outside.png"])
def test_an_upload_cannot_read_server_files(served, dataset, tmp_path, image):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    def point_outside(lines):
        lines[0]["image"] = image

    archive = _dataset_zip(dataset, tmp_path, point_outside)
    with pytest.raises(AppError) as e:
        client_of(served).predict(steps=2, dataset_file=handle_file(str(archive)), api_name="/finetune")
    msg = str(e.value)
    assert "d/data.jsonl:1: field 'image': image path" in msg and "leads outside the dataset folder" in msg, msg
    assert str(served.medln.settings.runs_root) not in msg and "uploads/" not in msg


def test_an_unreadable_image_at_training_time_is_named_without_server_paths(served, dataset, tmp_path):
    from gradio_client import handle_file

    def break_one(lines):
        lines[3]["image"] = "images/broken.png"

    archive = _dataset_zip(dataset, tmp_path, break_one, {"d/images/broken.png": b"\x89PNG\r\n\x1a\n not an image"})
    client = client_of(served)
    job = poll(client, client.predict(steps=2, batch_size=2, eval_limit=2, dataset_file=handle_file(str(archive)),
                                       api_name="/finetune")["job_id"])
    assert job["state"] == "failed"
    assert "data.jsonl:4 (record tr3), image images/broken.png: unreadable image" in job["error"], job["error"]
    session = api_session(client.session_hash)
    assert str(served.medln.settings.runs_root) not in job["error"] and session not in job["error"]


# --------------------------------------------------------------------------- 4. adapters


def test_a_foreign_adapter_is_refused_not_answered_as_tuned(served, trained, tiny_model):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from medln.config import TrainConfig
    from medln.train import prepare

    client, _ = trained
    runs = served.medln.settings.session_dir(api_session(client.session_hash)) / "runs"
    foreign = runs / "blip-run"
    prepare(TrainConfig(backbone=str(tiny_model("blip"))), device="cpu").model.save_pretrained(foreign / "adapter")
    (foreign / "config.json").write_text(json.dumps({"config": {"scope": "ln", "backbone": str(tiny_model("llava"))},
                                                     "family": "blip"}))
    (foreign / "eval.json").write_text('{"status": "completed", "steps_done": 1}')
    with pytest.raises(AppError, match="trained on a blip model; this backbone is llava"):
        client.predict(handle_file(str(EXAMPLE)), "Is it?", "blip-run", api_name="/ask")


# --------------------------------------------------------------------------- 7. files by URL


def test_session_files_are_not_served_by_path_only_as_download_copies(served, trained):
    import httpx

    client, job = trained
    run = served.medln.settings.session_dir(api_session(client.session_hash)) / "runs" / job["run_id"]
    base = served.local_url.rstrip("/") + "/gradio_api/file="
    for path in (run / "config.json", run / "adapter" / "adapter_config.json"):
        assert httpx.get(base + str(path), timeout=30).status_code == 403, path
    on_poll = served.medln.finetune.poll.fn
    download = on_poll(api_session(client.session_hash), None)[4]
    copy = Path(download["value"])
    assert download["visible"] and run not in copy.parents and served.medln.settings.runs_root not in copy.parents
    r = httpx.get(base + str(copy), timeout=30)
    assert r.status_code == 200
    copy.write_bytes(r.content)
    assert f"{job['run_id']}/adapter/adapter_config.json" in zipfile.ZipFile(copy).namelist()
    assert Path(on_poll(api_session(client.session_hash), None)[4]["value"]) != copy  # one copy per download


# --------------------------------------------------------------------------- 8. quiet refusals


def test_ordinary_refusals_leave_no_traceback_in_the_server_log(served, capfd):
    from gradio_client.exceptions import AppError

    client = client_of(served)
    capfd.readouterr()
    with pytest.raises(AppError, match="no job in this session yet"):
        client.predict(api_name="/job")
    with pytest.raises(AppError, match="nothing to stop in this session"):
        client.predict(api_name="/stop")
    time.sleep(0.5)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-2000:]


# --------------------------------------------------------------------------- load


def test_twenty_concurrent_asks_while_a_job_trains(served, tiny_model):
    """Bounded: 20 /ask calls at once on 127.0.0.1 while a short fine-tune runs in the job
    worker. Every call is answered or refused with "queue is full"; the job finishes."""
    trainer = client_of(served)
    job = trainer.predict(steps=15, batch_size=2, eval_limit=1, api_name="/finetune")
    end = time.time() + 120
    while trainer.predict(job["job_id"], api_name="/job")["state"] != "training" and time.time() < end:
        time.sleep(0.2)
    from gradio_client import Client

    # One client for all 20 (one session), a generous read timeout (calls wait in the queue
    # behind training on a loaded CPU), and a bundled image passed by its path (no 20 uploads).
    asker = Client(served.local_url, verbose=False, download_files=False, httpx_kwargs={"timeout": 300})
    image = str(EXAMPLE)

    def ask(i: int) -> str:
        try:
            base, tuned, _ = asker.predict(image, f"Is there an effusion? ({i})", "", api_name="/ask")
        except Exception as e:  # QueueError for a full queue; anything else fails the test below
            return f"refused: {e}"
        assert isinstance(base, str) and base and tuned == ""
        return "answered"

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(ask, range(20), timeout=180))
    wall = time.time() - t0
    refused = [o for o in outcomes if o != "answered"]
    assert all(re.search("queue is full", o, re.IGNORECASE) for o in refused), refused
    done = poll(trainer, job["job_id"])
    assert done["state"] == "done" and done["step"] == 15, done["error"]
    print(f"\nload: {len(outcomes) - len(refused)} answered, {len(refused)} refused (queue is full) in {wall:.1f} s; "
          f"the job trained {done['step']} steps meanwhile")


# --------------------------------------------------------------------------- hostile fields (issue 25)


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def test_hostile_fields_are_named_not_echoed(served, tmp_path):
    """Huge ids and backbones, server paths, decompression bombs and thin strips: each one
    short message naming the field; the app answers afterwards."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = client_of(served)
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (tmp_path / "strip.png").write_bytes(_png_claiming(65_000, 1))
    cases = [
        (lambda: client.predict(handle_file(str(EXAMPLE)), "Is it?", "r" * 100_000, api_name="/ask"),
         "is not a finished run of this session"),
        (lambda: client.predict("j" * 100_000, api_name="/job"), "in this session"),
        (lambda: client.predict(backbone="x" * 100_000, api_name="/param_counts"),
         "backbone: at most 1,024 characters, got 100,000"),
        (lambda: client.predict(backbone="../../../../etc", api_name="/param_counts"), "is not accepted here"),
        (lambda: client.predict(handle_file(str(tmp_path / "bomb.png")), "Is it?", "", api_name="/ask"),
         "image too large"),
        (lambda: client.predict(handle_file(str(tmp_path / "strip.png")), "Is it?", "", api_name="/ask"),
         "too thin"),
    ]
    for call, needle in cases:
        with pytest.raises(AppError) as e:
            call()
        assert needle in str(e.value) and len(str(e.value)) < 600 and "Traceback" not in str(e.value), str(e.value)
        assert "config.json" not in str(e.value)
    base, _, notice = client.predict(handle_file(str(EXAMPLE)), "Is it?", "", api_name="/ask")
    assert base and "not for clinical use" in notice.lower()
