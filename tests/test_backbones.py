"""medln.backbones: loading in 4-bit on a CPU keeps the layers bitsandbytes' CPU kernel cannot
pack unquantized, and says so; offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE alone)
sends no request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


def test_4bit_on_a_cpu_keeps_the_layers_its_kernel_cannot_pack(tmp_path):
    """bitsandbytes' AVX512-BF16 CPU path repacks each Linear4bit at the first no-grad
    forward and asserts 'N must be divisible by block_n' (hidden size 48). This machine may
    lack that instruction set, so the repacking itself (pure torch) is run on every 4-bit
    layer: none may fail, and the layers kept unquantized are said in a note."""
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from medln.backbones import load_backbone
    from medln.make.tiny import build_tiny

    path = build_tiny("llava", tmp_path / "m", hidden_size=48, intermediate_size=96)  # vision stays 64 / 128
    bb = load_backbone(str(path), quant="4bit", device="cpu")
    quantized = [m for m in bb.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    kept = [n for n, m in bb.model.named_modules() if type(m) is torch.nn.Linear and n != "lm_head"]
    assert quantized and kept
    for layer in quantized:
        _convert_weight_packed_for_cpu(layer.weight.data.clone(), __import__("copy").deepcopy(layer.weight.quant_state))
    assert "kept unquantized" in bb.notes[0] and "divisible by 32" in bb.notes[0]


class Counting(BaseHTTPRequestHandler):
    """A stand-in Hub that answers 404 to everything and counts what reached it."""

    seen: list[str] = []

    def log_message(self, *args):
        pass

    def _answer(self):
        Counting.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer


def medln_with(env_extra: dict, *args, tmp_path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python -m medln ARGS` with no offline variable of its own but `env_extra`, a fresh Hub
    cache and HF_ENDPOINT at the counting stand-in; returns the process and the requests."""
    Counting.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HOME=str(tmp_path / "hf"), NO_PROXY="127.0.0.1",
               HF_TOKEN="", **env_extra)
    try:
        proc = subprocess.run([sys.executable, "-m", "medln", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    return proc, list(Counting.seen)


@pytest.mark.slow  # a fresh interpreter per case, with a stand-in hub: end to end
@pytest.mark.parametrize("variable", ["TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE"])
def test_either_offline_variable_alone_sends_no_request(variable, tmp_path):
    proc, seen = medln_with({variable: "1"}, "params", "--backbone", "someone/some-vlm", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert seen == []
    assert proc.stderr.startswith("error: cannot load someone/some-vlm: offline mode is set (HF_HUB_OFFLINE or "
                                  "TRANSFORMERS_OFFLINE) and the model is not in the local cache"), proc.stderr[-3000:]
    data, seen = medln_with({variable: "1"}, "eval", "--data", "hf:someone/some-set", tmp_path=tmp_path)
    assert data.returncode == 2 and seen == [], data.stderr[-3000:]
    assert "hf:someone/some-set: offline mode is set" in data.stderr


@pytest.mark.slow  # a fresh interpreter, with a stand-in hub: end to end
def test_without_offline_mode_medln_asks_the_hub(tmp_path):
    """The control: the same command online reaches the stand-in (so the test above can fail)."""
    proc, seen = medln_with({}, "params", "--backbone", "someone/some-vlm", tmp_path=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert seen and seen[0].startswith("HEAD /")  # MedLN's probe first


def test_concurrent_builds_keep_every_dtype(monkeypatch):
    """Issue 25: the app's 1-step fine-tune failed with "mat1 and mat2 must have the same dtype,
    Float and Half" when a request counted parameters (a meta model of medln-tiny, whose
    config says float16) while the job loaded its model: transformers sets the process's
    default dtype around every build. meta_model no longer sets it; loads hold BUILD_LOCK."""
    import threading

    import torch

    from medln.backbones import load_backbone, load_config, meta_model

    _, config, family = load_config("medln-tiny")
    assert str(config.dtype).endswith("float16")  # the condition: a half-precision config
    set_to = []
    real_set = torch.set_default_dtype
    monkeypatch.setattr(torch, "set_default_dtype", lambda d: (set_to.append(d), real_set(d)))
    meta_model(config, family)
    assert set_to == [] and torch.get_default_dtype() == torch.float32
    assert str(config.dtype).endswith("float16")  # the shared config is not rewritten

    stop = threading.Event()

    def count_forever():
        while not stop.is_set():
            meta_model(config, family)

    thread = threading.Thread(target=count_forever)
    thread.start()
    try:
        for _ in range(3):
            model = load_backbone("medln-tiny", device="cpu").model
            assert {p.dtype for p in model.parameters()} == {torch.float32}
    finally:
        stop.set()
        thread.join()
    assert torch.get_default_dtype() == torch.float32
