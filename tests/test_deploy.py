"""Where users deploy MedLN: the ZeroGPU call structure (a stand-in `spaces` module that, like
the real one, reads the Gradio request from gradio's context and pickles what crosses into its
GPU process), persistent /data storage, and the Hub token that `hf auth login` saved."""

from __future__ import annotations

import functools
import inspect
import pickle
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from medln import storage
from medln.config import TrainConfig


class FakeSpaces:
    """`spaces` on a ZeroGPU Space, as far as MedLN can tell: GPU(duration=...) wraps a
    function; a call looks up the visitor's request in gradio.context.LocalContext.request
    (spaces.zero.wrappers does), refuses to run without one, and pickles the arguments and
    every yielded value (the GPU runs in a forked worker process)."""

    def __init__(self):
        self.calls: list[dict] = []

    def GPU(self, task=None, *, duration=None, size=None):
        if task is None:
            return lambda fn: self._wrap(fn, duration)
        return self._wrap(task, duration)

    def _wrap(self, fn, duration):
        assert inspect.isgeneratorfunction(fn), "MedLN's GPU functions stream records"
        fake = self

        @functools.wraps(fn)
        def handler(*args, **kwargs):
            from gradio.context import LocalContext

            request = LocalContext.request.get(None)
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            fake.calls.append({"fn": fn.__name__, "request": request, "duration": seconds,
                               "thread": threading.current_thread().name})
            if request is None:
                raise RuntimeError("spaces.GPU called outside a Gradio request: it would use the anonymous quota")
            args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # into the GPU worker process
            for item in fn(*args, **kwargs):
                yield pickle.loads(pickle.dumps(item))  # and back

        return handler


@pytest.fixture
def fake_spaces(monkeypatch):
    fake = FakeSpaces()
    module = types.ModuleType("spaces")
    config = types.ModuleType("spaces.config")
    config.Config = types.SimpleNamespace(zero_gpu=True)
    module.GPU, module.config = fake.GPU, config
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setitem(sys.modules, "spaces.config", config)
    return fake


class in_request:
    """Stand in for Gradio running a handler: gradio's request context variable is set."""

    def __enter__(self):
        from gradio.context import LocalContext

        self.token = LocalContext.request.set(types.SimpleNamespace(headers={"x-ip-token": "visitor"}))

    def __exit__(self, *exc):
        from gradio.context import LocalContext

        LocalContext.request.reset(self.token)


# ------------------------------------------------------------------ ZeroGPU


def test_on_gpu_is_the_plain_function_off_zerogpu_and_spaces_gpu_on_it(fake_spaces, monkeypatch):
    from medln.ui.gpu import on_gpu, zerogpu

    @on_gpu(duration=lambda n: 10 * n)
    def count(n):
        yield from range(n)

    assert inspect.isgeneratorfunction(count)  # Gradio streams only generator functions
    with in_request():
        assert list(count(3)) == [0, 1, 2]
    assert fake_spaces.calls[-1]["duration"] == 30 and fake_spaces.calls[-1]["request"] is not None
    with pytest.raises(RuntimeError, match="outside a Gradio request"):
        list(count(1))  # what a worker thread would get
    monkeypatch.setattr(sys.modules["spaces.config"].Config, "zero_gpu", False)
    assert not zerogpu()
    calls = len(fake_spaces.calls)
    assert list(count(2)) == [0, 1] and len(fake_spaces.calls) == calls  # off ZeroGPU: not wrapped


def test_stop_flag_crosses_the_process_boundary(tmp_path):
    from medln.ui.gpu import StopFlag

    flag = StopFlag(tmp_path / ".run.stop")
    copy = pickle.loads(pickle.dumps(flag))  # what the GPU worker holds
    assert not copy.is_set()
    flag.set()
    assert copy.is_set() and flag.is_set()
    flag.clear_file()
    assert not copy.is_set() and flag.is_set()  # the local event stays set


def _ctx(tmp_path, backbone):
    from medln.ui.context import AppContext

    return AppContext.create(runs_root=tmp_path / "runs", default_backbone=str(backbone), eval_limit=2)


def _zipped(dataset: Path, out: Path) -> Path:
    """The small JSONL data set with its images, as a user uploads it."""
    import zipfile

    with zipfile.ZipFile(out, "w") as zf:
        for p in dataset.parent.rglob("*"):
            if p.is_file():
                zf.write(p, f"d/{p.relative_to(dataset.parent)}")
    return out


def test_zerogpu_finetune_runs_in_the_gradio_request(fake_spaces, tiny_model, dataset, tmp_path):
    """Through a served app and gradio_client: /finetune makes ONE GPU call, from the request
    handler (gradio's request context is set), sized by the job, and the job record polled by
    the page has every step."""
    from gradio_client import handle_file

    from medln.ui import build_app
    from medln.ui.finetune import gpu_seconds
    from medln.ui.gpu import max_gpu_seconds
    from appserver import client, launched

    demo = build_app(runs_root=tmp_path / "runs", default_backbone=str(tiny_model("llava")), eval_limit=2)
    assert demo.medln.jobs.inline  # ZeroGPU: no worker thread runs jobs
    with launched(demo):
        c = client(demo)
        job = c.predict(backbone=str(tiny_model("llava")), scope="ln", steps=2, batch_size=2, eval_limit=2,
                        dataset_file=handle_file(str(_zipped(dataset, tmp_path / "d.zip"))), api_name="/finetune")
        assert job["state"] == "done", job  # the call returns when the job has finished
        assert len(job["losses"]) == 2 and job["result"]["steps_done"] == 2
        assert c.predict(job["job_id"], api_name="/job")["state"] == "done"
    gpu = [c for c in fake_spaces.calls if c["fn"] == "train_records"]
    assert len(gpu) == 1 and gpu[0]["request"] is not None
    assert not gpu[0]["thread"].startswith("medln-job")
    assert 0 < gpu[0]["duration"] <= max_gpu_seconds()
    cfg = TrainConfig(steps=2, eval_limit=2, ood_split="").to_dict()  # an upload: its test split only
    assert gpu[0]["duration"] == gpu_seconds(cfg, "out")


def test_zerogpu_comparison_is_one_gpu_call_per_scope(fake_spaces, tiny_model, dataset, tmp_path):
    from medln.ui import compare as compare_tab

    ctx = _ctx(tmp_path, tiny_model("llava"))
    upload = _zipped(dataset, tmp_path / "d.zip")
    with in_request():
        job = compare_tab.start(ctx, "session-0001", str(tiny_model("llava")), ["ln", "ln-llm"], False, 2, 2,
                                "upload", str(upload), "", 1)
    assert job.state == "done", (job.state, job.error)
    assert [r["scope"] for r in job.rows] == ["ln", "ln-llm"] and all(r["steps_done"] == 2 for r in job.rows)
    gpu = [c for c in fake_spaces.calls if c["fn"] == "train_records"]
    assert len(gpu) == 2 and all(c["request"] is not None for c in gpu)
    assert (job.out / "results.json").is_file()  # the sweep's own files are written outside the GPU calls


def test_zerogpu_stop_keeps_the_adapter(fake_spaces, tiny_model, dataset, tmp_path):
    """Stop reaches the GPU process (which holds only a pickled copy of the flag): the run stops
    within a step, saves its adapter and is scored, as off ZeroGPU."""
    from medln.ui import finetune
    from medln.ui.uploads import DataChoice

    ctx = _ctx(tmp_path, tiny_model("llava"))
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=500, batch_size=2,
                      eval_split="", ood_split="")
    box = {}

    def request():
        with in_request():
            box["job"] = finetune.start_job(ctx, "session-0002", cfg, DataChoice(cfg.data, "", ""))

    t = threading.Thread(target=request)
    t.start()
    end = time.time() + 120
    while time.time() < end and (ctx.jobs.latest("session-0002") is None or ctx.jobs.latest("session-0002").step < 1):
        time.sleep(0.05)
    ctx.jobs.stop("session-0002")
    t.join(120)
    job = box["job"]
    assert job.state == "stopped" and job.result["status"] == "stopped" and job.step < 500
    assert (job.out / "adapter" / "adapter_config.json").is_file() and (job.out / "eval.json").is_file()
    assert not job.stop.path.exists()  # the flag file is cleaned up


# ------------------------------------------------------------------ storage


def test_persistent_volume_takes_runs_and_caches(tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    env = {"MEDLN_DATA_ROOT": str(volume), "SPACE_ID": "someone/medln"}
    assert storage.configure(env) == volume
    assert env["MEDLN_RUNS"] == str(volume / "medln" / "runs")
    assert env["HF_HOME"] == str(volume / ".huggingface") and storage.hf_cache(env) == volume / ".huggingface"
    assert env["MEDLN_CACHE"] == str(volume / "medln" / "cache")
    where = storage.resolve(env)
    assert where.persistent is True and "survive a restart" in where.where


def test_environment_overrides_the_volume(tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    env = {"MEDLN_DATA_ROOT": str(volume), "MEDLN_RUNS": str(tmp_path / "elsewhere"), "HF_HOME": str(tmp_path / "hf")}
    storage.configure(env)
    assert env["MEDLN_RUNS"] == str(tmp_path / "elsewhere") and env["HF_HOME"] == str(tmp_path / "hf")
    assert storage.resolve(env).persistent is False  # and the About tab says they may be lost


def test_without_a_volume_a_space_says_runs_are_lost(tmp_path):
    missing = {"MEDLN_DATA_ROOT": str(tmp_path / "absent")}
    assert storage.configure(missing) is None and "MEDLN_RUNS" not in missing
    assert storage.resolve(missing).persistent is None
    on_space = storage.resolve({**missing, "SPACE_ID": "someone/medln"})
    assert on_space.persistent is False and "restart wipes" in on_space.where


def test_app_settings_and_about_tab_use_the_volume(tmp_path, monkeypatch):
    from medln.ui.about import storage_md
    from medln.ui.settings import Settings

    volume = tmp_path / "data"
    volume.mkdir()
    for name in ("MEDLN_RUNS", "MEDLN_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDLN_DATA_ROOT", str(volume))
    s = Settings.from_env()
    assert s.runs_root == (volume / "medln" / "runs").resolve()
    text = storage_md(types.SimpleNamespace(settings=s))
    assert str(s.runs_root) in text and "survive a restart" in text and ".huggingface" in text


# ------------------------------------------------------------------ gated models: the Hub token


def test_token_saved_by_hf_auth_login_is_used_and_never_shown(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from medln.backbones import BACKBONES_BY_NAME, BackboneError, Resolved, check_access, hf_token

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    token_file = tmp_path / "token"
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(token_file))
    gated = Resolved("google/medgemma-4b-it", False, BACKBONES_BY_NAME["medgemma-4b"])
    with pytest.raises(BackboneError, match="hf auth login"):
        check_access(gated)
    assert hf_token() is None
    token_file.write_text("hf_savedByLogin123\n")  # what `hf auth login` writes
    assert hf_token() == "hf_savedByLogin123"
    assert check_access(gated)["token"] == "hf_savedByLogin123"
    monkeypatch.setenv("HF_TOKEN", "hf_fromEnv456")
    assert hf_token() == "hf_fromEnv456"  # the environment wins
