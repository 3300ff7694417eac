"""Runs reload exactly as trained, through every path a user has (medln.runs.load_run).

For every scope x quant (none, and 4-bit where the scope allows it) a tiny LLaVA trains one
step; then ONE fresh process reloads every run twice — through the library
(`load_run`) and through the model cache the CLI and the app answer with (medln.models, medln.answers) —
and its outputs must equal the in-process tuned ones and differ from the base's. 4-bit runs
do so under each CPU path bitsandbytes may take (tests/bnb_cpu.py: forced, whatever this CPU
has; the test id names the kernel that ran, and the test checks it did), each path in its own
reloading process (issue 26: the AVX512-BF16 path's served answers drifted). Plus the
regressions of issue 9 as a user hits them: `ask` on a 4-bit attn run (it used to fail with
a size mismatch), `train --max-length 8`, `eval` writing into the current folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bnb_cpu
from conftest import REPO, run_cli
from medln.adapters import adapter_off
from medln.config import TrainConfig
from medln.prompts import encode_for_training
from medln.methods import SCOPES
from medln.train import prepare, train_run

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")

RUNS = [(s.name, q) for s in SCOPES for q in ("none", "4bit") if not (q == "4bit" and s.refuses_4bit)]
# (scope, quant, CPU 4-bit kernel): every 4-bit run under each path; unquantized runs have none
CASES = [(s, q, k) for s, q in RUNS for k in (bnb_cpu.KERNELS if q == "4bit" else (None,))]
TESTS = os.path.dirname(os.path.abspath(__file__))

RELOAD = r"""
import json, sys
sys.path.insert(0, sys.argv[4])
import bnb_cpu
bnb_cpu.force_from_env()  # before bitsandbytes builds any layer
import torch
from medln.adapters import adapter_off
from medln.data import load_samples
from medln.prompts import encode_for_training
from medln.runs import load_run
from medln.answers import require_run
from medln.models import ModelCache

runs, data, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
samples = load_samples(data, "train").samples[:3]
cache = ModelCache(max_models=2)

@torch.no_grad()
def logits(model, bb):
    model.eval()
    return model(**encode_for_training(bb, samples)).logits

def ran():
    out = dict(bnb_cpu.ran)
    bnb_cpu.ran.clear()
    return out

result = {}
for run in runs:
    ran()
    bb = load_run(run)  # the library path
    lib = logits(bb.model, bb)
    with adapter_off(bb.model):
        lib_base = logits(bb.model, bb)
    lib_ran = ran()
    info = require_run(run)  # the CLI / app path: the shared model cache
    if info.is_full:
        e = cache.entry(info.base)
        import dataclasses
        from medln.runs import attach_run
        full = cache.entry(info.base.__class__(str(info.adapter_dir), "full"),
                           load=lambda: dataclasses.replace(e.backbone, model=attach_run(e.backbone, run).eval()))
        with cache.hold(full):
            served = logits(full.model, full.backbone)
    else:
        e = cache.entry(info.base)
        with cache.hold(e):
            model, ctx = e.use(info.adapter_dir)
            served = logits(model, e.backbone)
    result[run] = {"library": lib, "library_base": lib_base, "served": served,
                   "ran": {"library": lib_ran, "served": ran()}}
    del bb
torch.save(result, out)
"""


@pytest.fixture(scope="module")
def trained(tiny_model, dataset, tmp_path_factory, train_samples):
    """Every case trained in this process: {case: (run dir, tuned logits, base logits, kernels
    that ran)}. A 4-bit run trains once (a training forward never packs) and is scored under
    each kernel: dequant first, since a packed layer cannot go back."""
    root = tmp_path_factory.mktemp("runs")
    path = tiny_model("llava")
    out = {}
    for scope, quant in RUNS:
        cfg = TrainConfig(backbone=str(path), scope=scope, quant=quant, data=f"jsonl:{dataset}", steps=1,
                          batch_size=2, warmup=0.0, lr=0.05 if norm_scope(scope) else 1e-2,
                          eval_split="", ood_split="")
        tunable = prepare(cfg, device="cpu")
        run_dir = root / f"{scope}-{quant}"
        records = list(train_run(cfg, run_dir, tunable=tunable))
        assert records[-1]["event"] == "done" and records[-1]["steps_done"] == 1
        batch = encode_for_training(tunable.backbone, train_samples[:3])
        model = tunable.model.eval()
        for kernel in bnb_cpu.KERNELS if quant == "4bit" else (None,):
            if kernel:
                bnb_cpu.use(model, kernel)
            bnb_cpu.ran.clear()
            with torch.no_grad():
                tuned = model(**batch).logits
                with adapter_off(model):
                    base = model(**batch).logits
            out[(scope, quant, kernel)] = (str(run_dir), tuned, base, dict(bnb_cpu.ran))
    return out


def norm_scope(scope: str) -> bool:
    """Norm scopes move the outputs visibly only at a high rate (docs/design.md, Traps)."""
    return next(s for s in SCOPES if s.name == scope).kind == "norm"


@pytest.fixture(scope="module")
def reloaded(trained, dataset, tmp_path_factory):
    """Fresh processes reload every run, one per CPU 4-bit kernel (the unquantized runs with
    the first): nothing of the training process carries over. {kernel: {run dir: outputs}}."""
    out = {}
    for kernel in bnb_cpu.KERNELS:
        path = tmp_path_factory.mktemp("reload") / "outputs.pt"
        runs = list(dict.fromkeys(v[0] for (_, q, k), v in trained.items() if k == kernel or
                                  (k is None and kernel == bnb_cpu.KERNELS[0])))
        proc = subprocess.run([sys.executable, "-c", RELOAD, json.dumps(runs), f"jsonl:{dataset}", str(path), TESTS],
                              cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO), bnb_cpu.ENV: kernel})
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[kernel] = torch.load(path)
    return out


def case_id(scope, quant, kernel) -> str:
    return f"{scope}-{quant}" + (f"-{bnb_cpu.label(kernel)}" if kernel else "")


@pytest.mark.slow  # every scope trained, then reloaded in fresh processes (one per 4-bit kernel): end to end
@pytest.mark.parametrize("scope,quant,kernel", CASES, ids=[case_id(*c) for c in CASES])
def test_run_reloads_as_trained(scope, quant, kernel, trained, reloaded, record_property):
    run_dir, tuned, base, ran = trained[(scope, quant, kernel)]
    got = reloaded[kernel or bnb_cpu.KERNELS[0]][run_dir]
    if kernel:  # the kernel forced is the one that ran: every 4-bit matmul of the trained, library and served models
        record_property("cpu_4bit_kernel", bnb_cpu.label(kernel))
        for where, counts in {"trained": ran, **got["ran"]}.items():
            assert set(counts) == {bnb_cpu.label(kernel)}, f"{where}: {counts}"
    if scope != "full":  # a full fine-tune has no adapter to switch off: its base is another model
        # prompt tuning prepends its virtual tokens' logits: compare the text positions
        assert not torch.allclose(tuned[:, -base.shape[1]:], base, atol=1e-4), \
            "training did not move the outputs: a vacuous check"
        torch.testing.assert_close(got["library_base"], base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["library"], tuned, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["served"], tuned, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # needs every scope trained (the fixture above) and the CLI in a fresh interpreter
def test_ask_on_a_4bit_attn_run_answers(trained, dataset, tmp_path):
    """Issue 9's crash: the CLI rebuilt the 4-bit base without the projections the run kept
    unquantized (size mismatch ... ln_tuning_layers). Now it answers as the run does."""
    from medln.data.images import load_image
    from medln.prompts import generate
    from medln.runs import load_run

    run_dir = trained[("attn", "4bit", bnb_cpu.KERNELS[0])][0]
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    assert saved["base"]["quant"] == "4bit" and saved["base"]["keep"]
    image = dataset.parent / "images" / "img00.png"
    question = "Is there a pleural effusion?"
    proc = run_cli("ask", "--adapter", run_dir, "--image", image, "--question", question, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["adapter"] == run_dir and "clinical" in out["disclaimer"]
    bb = load_run(run_dir)
    assert out["answer"] == generate(bb, bb.model, [load_image(image)], [question], max_new_tokens=16)[0]


def test_train_with_too_short_max_length_is_a_clean_error(tiny_model, dataset, tmp_path):
    """It used to end in a traceback (rc 1) and leave a half-written run folder."""
    out = tmp_path / "run"
    proc = run_cli("train", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--steps", 1,
                   "--max-length", 8, "--eval-split", "", "--ood-split", "", "--out", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "max_length" in proc.stderr and "tokens" in proc.stderr
    assert not out.exists()


def test_eval_without_predictions_writes_nothing_into_the_current_folder(tiny_model, dataset, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "medln", "eval", "--backbone", str(tiny_model("llava")),
                           "--data", f"jsonl:{dataset}", "--limit", "2", "--no-meteor", "--json"],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] >= 1
    assert list(cwd.iterdir()) == []


def test_a_failure_before_the_adapter_leaves_nothing_behind(tiny_model, dataset, tmp_path, monkeypatch):
    """A run that fails before its adapter is saved removes what it wrote, so the same --out
    works again (issue 10); the error reaches the caller as it was."""
    import medln.train as train

    def broken(*a, **k):
        yield {"event": "step", "step": 1, "loss": 1.0}
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train, "fit", broken)
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=2, batch_size=4,
                      eval_split="", ood_split="")
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(train_run(cfg, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
