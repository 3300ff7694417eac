"""Hostile and careless input to the core and the CLI (issue 10): one range per config field,
memory per job, dataset containment, run folders that never lose a file, adapters that must
belong to their base, one-line CLI errors (exit 2) and the 4-bit CPU packing rule.
The app's side of the same holes is in test_app_reliability.py."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from medln.config import ConfigError, TrainConfig, bounds
from medln.data import load_samples
from medln.data.sample import DataError
from medln.runs import RunDir, RunError, check_adapter, check_out

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


def assert_user_error(proc, *needles: str):
    """Exit 2 and ONE line on stderr that starts with `error:` and names the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _copy_dataset(dataset, tmp_path) -> Path:
    import shutil

    shutil.copytree(dataset.parent, tmp_path / "data")
    return tmp_path / "data"


# --------------------------------------------------------------------------- 1. bounds, memory, OOM


def test_every_numeric_field_has_one_range_that_validate_enforces():
    bounded = [f for f in dataclasses.fields(TrainConfig) if "min" in f.metadata]
    assert {"steps", "batch_size", "lr", "seed", "max_length", "lora_r", "eval_limit"} <= {f.name for f in bounded}
    for f in bounded:
        b = bounds(f.name)
        over = b["max"] * 10 if isinstance(b["max"], int) else b["max"] + 1
        with pytest.raises(ConfigError, match=rf"{f.name}: must be <=? ?{b['max']}"):
            TrainConfig(**{f.name: over}).validate()
        under = b["min"] - 1
        with pytest.raises(ConfigError, match=rf"{f.name}: must be >=? ?{b['min']}"):
            TrainConfig(**{f.name: under}).validate()
    # what /finetune received before: the whole dataset in one batch, a worker held forever
    with pytest.raises(ConfigError, match="batch_size: must be <= 512"):
        TrainConfig(batch_size=1_000_000).validate()
    with pytest.raises(ConfigError, match="steps: must be <= 100000"):
        TrainConfig(steps=1_000_000_000).validate()
    for bad in ("12", 1.5, True, float("nan")):
        with pytest.raises(ConfigError, match="steps: must be a whole number"):
            TrainConfig(steps=bad).validate()


@pytest.fixture(scope="module")
def llava_tunable(tiny_model, dataset):
    from medln.train import prepare

    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", batch_size=8, eval_split="",
                      ood_split="")
    return cfg, prepare(cfg, device="cpu"), load_samples(cfg.data, "train").samples


def test_a_batch_too_big_for_the_memory_is_lowered_and_one_that_never_fits_is_refused(llava_tunable, monkeypatch):
    from accelerate import Accelerator

    from medln import memory
    from medln.prompts import encode_for_training
    from medln.train import fit_memory

    cfg, tunable, samples = llava_tunable
    acc = Accelerator(cpu=True)
    monkeypatch.delenv(memory.ENV_CAP, raising=False)
    assert fit_memory(cfg, tunable, samples, acc) == (cfg, None)  # the tiny model fits this machine

    probe = memory.probe_batch(samples, lambda b: encode_for_training(tunable.backbone, b, cfg.max_length))
    est = memory.estimate(tunable.model, probe, trainable=tunable.selection.trainable, grad_checkpointing=False,
                          act_bytes=4)
    assert est.seq_len == probe["input_ids"].shape[1] and est.vision_tokens > 0
    assert est.need(8) - est.need(4) == 4 * est.per_sample > 0
    lighter = memory.estimate(tunable.model, probe, trainable=0, grad_checkpointing=True, act_bytes=4)
    assert lighter.per_sample < est.per_sample  # checkpointing keeps only layer inputs

    monkeypatch.setenv(memory.ENV_CAP, str(est.need(3) / memory.BUDGET_FRACTION / 1e9))
    planned, note = fit_memory(cfg, tunable, samples, acc)
    assert planned.batch_size <= 3 and planned.batch_size * planned.grad_accum >= cfg.batch_size
    assert acc.gradient_accumulation_steps == planned.grad_accum
    assert "lowered to micro-batches" in note and "MEDLN_JOB_MEMORY_GB" in note
    monkeypatch.setenv(memory.ENV_CAP, str(est.need(1) / 2 / 1e9))
    with pytest.raises(ConfigError, match="not enough memory to train: one sample needs .*--grad-checkpointing"):
        fit_memory(cfg, tunable, samples, acc)


def test_out_of_memory_in_a_job_fails_that_job_frees_it_and_the_worker_serves_on(tmp_path):
    import torch

    from medln.ui.jobs import JobManager

    held = {}

    def greedy(job):
        big = torch.empty(50_000_000, dtype=torch.uint8)  # what a step had allocated
        held["ref"] = weakref.ref(big)
        yield {"event": "start", "notes": []}
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def fine(job):
        yield {"event": "done", "status": "completed", "steps_done": 1}

    jobs = JobManager()
    failed = jobs.submit("s", "finetune", "t", tmp_path / "a", 1, greedy)
    while failed.active:
        time.sleep(0.02)
    assert failed.state == "failed" and "out of memory" in failed.error and "batch size" in failed.error
    assert held["ref"]() is None  # the failed job's tensors are gone before the next job
    nxt = jobs.submit("s", "finetune", "t", tmp_path / "b", 1, fine)
    while nxt.active:
        time.sleep(0.02)
    assert nxt.state == "done"


# --------------------------------------------------------------------------- 2. dataset containment


def _jsonl(folder: Path, image: str) -> Path:
    path = folder / "probe.jsonl"
    path.write_text(json.dumps({"image": image, "question": "q?", "answer": "a"}) + "\n")
    return path


def test_jsonl_images_must_resolve_inside_the_dataset_folder(dataset, tmp_path):
    folder = _copy_dataset(dataset, tmp_path)
    outside = tmp_path / "secret.png"
    outside.write_bytes((folder / "images" / "img00.png").read_bytes())  # a real image, outside
    (folder / "images" / "link.png").symlink_to(outside)
    for image in (str(outside), "/etc/no-such-file", "../secret.png", "images/../../secret.png", "images/link.png"):
        with pytest.raises(DataError) as e:
            load_samples(f"jsonl:{_jsonl(folder, image)}", "train")
        msg = str(e.value)
        assert "leads outside the dataset folder" in msg and f"{image!r}" in msg, msg
        assert "not found" not in msg  # the same answer whether or not the file exists
    assert load_samples(f"jsonl:{_jsonl(folder, 'images/img00.png')}", "train").samples  # inside: fine


def test_folder_loaders_refuse_links_out_of_their_image_folder(tmp_path):
    from medln.data.loaded import BadField, image_file

    images = tmp_path / "imgs"
    images.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (images / "ok.jpg").write_bytes(b"x")
    (images / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert image_file(images, "ok.jpg", "img_name") == (images / "ok.jpg").resolve()
    for name in ("link.jpg", "../secret.jpg", str(tmp_path / "secret.jpg")):
        with pytest.raises(BadField, match="leads outside the image folder"):
            image_file(images, name, "img_name")


# --------------------------------------------------------------------------- 3. run folders


def test_out_never_replaces_what_medln_did_not_write(tmp_path):
    foreign = tmp_path / "mine"
    (foreign / "adapter").mkdir(parents=True)
    (foreign / "adapter" / "weights.bin").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(RunError, match="not a MedLN run folder .*adapter/"):
            check_out(foreign, overwrite=overwrite)
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")
    check_out(tmp_path / "new" / "run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        check_out(tmp_path / "file" / "run")


def test_an_unfinished_run_is_replaced_only_with_overwrite_and_only_its_own_files(tiny_model, dataset, tmp_path):
    from medln.train import train_run

    out = tmp_path / "run"
    RunDir.create(out, {"config": {"scope": "ln"}}).log({"step": 1, "loss": 1.0})  # a run that crashed
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="already holds an unfinished run .*--overwrite"):
        check_out(out)
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{dataset}", steps=1, batch_size=2,
                      eval_split="", ood_split="")
    done = list(train_run(cfg, out, overwrite=True))[-1]
    assert done["status"] == "completed" and RunDir(out).complete
    assert (out / "notes.txt").read_text() == "mine" and len(RunDir(out).metrics()) == 1
    with pytest.raises(RunError, match="already holds a finished run"):
        check_out(out)


def test_a_run_that_fails_before_its_adapter_leaves_nothing_behind(tiny_model, dataset, tmp_path):
    from medln.train import train_run

    folder = _copy_dataset(dataset, tmp_path)
    bad = folder / "bad.jsonl"
    lines = [json.loads(line) for line in dataset.read_text().splitlines()][:2]
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    lines[1]["image"] = "images/broken.png"
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cfg = TrainConfig(backbone=str(tiny_model("llava")), data=f"jsonl:{bad}", steps=1, batch_size=2,
                      eval_split="", ood_split="", max_length=256)
    with pytest.raises(DataError) as e:
        list(train_run(cfg, tmp_path / "run"))
    # 6: the file and line, the record and the image as the dataset names it
    assert f"{bad}:2 (record tr1), image images/broken.png: unreadable image" in str(e.value)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 4. adapters


def _adapter_run(tiny_model, family: str, folder: Path, **sizes) -> Path:
    """A run folder holding an untrained adapter of `family` (peft's own files)."""
    from medln.make.tiny import build_tiny
    from medln.train import prepare

    path = build_tiny(family, folder / "model", **sizes) if sizes else tiny_model(family)
    tunable = prepare(TrainConfig(backbone=str(path)), device="cpu")
    tunable.model.save_pretrained(folder / "run" / "adapter")
    # A finished run whose config names the bundled-size tiny model as its base: for a run of
    # the smaller model that is a foreign adapter dropped into a run folder.
    claimed = str(tiny_model(family))
    (folder / "run" / "config.json").write_text(json.dumps({"config": {"scope": "ln", "backbone": claimed},
                                                            "family": family}))
    (folder / "run" / "eval.json").write_text("{}")
    return folder / "run"


def test_an_adapter_of_another_model_is_refused_before_attaching(tiny_model, tmp_path):
    from medln.backbones import load_backbone
    from medln.runs import attach_run as load_run_model

    bb = load_backbone(str(tiny_model("llava")), device="cpu")
    own = _adapter_run(tiny_model, "llava", tmp_path / "own")
    check_adapter(bb.model, own / "adapter", family="llava")
    smaller = _adapter_run(tiny_model, "llava", tmp_path / "small", hidden_size=48, vision_hidden_size=48,
                           intermediate_size=96, vision_intermediate_size=96)
    with pytest.raises(RunError, match=r"has shape \[48\] in the adapter but this backbone needs \[64\]"):
        load_run_model(bb, smaller)
    blip = _adapter_run(tiny_model, "blip", tmp_path / "blip")
    with pytest.raises(RunError, match="trained on a blip model; this backbone is llava"):
        load_run_model(bb, blip)
    (blip / "config.json").write_text(json.dumps({"config": {"scope": "ln"}}))  # no family recorded
    with pytest.raises(RunError, match="targets .* module\\(s\\) this backbone does not have"):
        load_run_model(bb, blip)
    (own / "adapter" / "adapter_config.json").write_text('{"peft_type": "LN_TUNING", "target_modules": 5}')
    with pytest.raises(RunError, match="'target_modules' must be a list"):
        load_run_model(bb, own)
    assert not any("ln_tuning" in name for name, _ in bb.model.named_modules())  # nothing was attached


# --------------------------------------------------------------------------- 5. the CLI: one line, exit 2


@pytest.fixture(scope="module")
def cli_inputs(tiny_model, dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "latin1.jsonl").write_bytes(b'{"image": "images/img00.png", "question": "caf\xe9?", "answer": "a"}\n')
    (root / "unknown").mkdir()
    (root / "unknown" / "config.json").write_text('{"model_type": "florence9"}')
    (root / "remote").mkdir()
    (root / "remote" / "config.json").write_text(
        '{"model_type": "custom_vlm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}')
    (root / "a-file").write_text("x")
    garbage = _adapter_run(tiny_model, "llava", root / "garbage")
    (garbage / "adapter" / "adapter_config.json").write_text("not json")
    small = _adapter_run(tiny_model, "llava", root / "small", hidden_size=48, vision_hidden_size=48,
                         intermediate_size=96, vision_intermediate_size=96)
    return root, garbage, small


@pytest.mark.parametrize("case", ["non-utf8", "unknown-model-type", "remote-code", "seed", "max-length",
                                  "garbage-adapter", "other-shapes", "out-under-file", "lora-r", "long-question"])
def test_cli_refusals_are_one_line(case, cli_inputs, tiny_model, dataset):
    root, garbage, small = cli_inputs
    llava, data = tiny_model("llava"), f"jsonl:{dataset}"
    image = dataset.parent / "images" / "img00.png"
    quick = ("--steps", "1", "--batch-size", "2", "--eval-split", "", "--ood-split", "")
    args, needles = {
        "non-utf8": (("train", "--backbone", llava, "--data", f"jsonl:{root / 'latin1.jsonl'}", "--out", root / "o1"),
                     ["latin1.jsonl:1: not UTF-8 text (byte 0xe9"]),
        "unknown-model-type": (("params", "--backbone", root / "unknown"), ["unsupported model_type 'florence9'"]),
        "remote-code": (("train", "--backbone", root / "remote", "--data", data, *quick, "--out", root / "o2"),
                        ["needs custom code", "--trust-remote-code"]),
        "seed": (("train", "--backbone", llava, "--seed", "-1"), ["seed: must be >= 0, got -1"]),
        "max-length": (("train", "--backbone", llava, "--data", data, "--max-length", "8", *quick, "--out", root / "o3"),
                       ["exceed max_length=8", "raise --max-length", "image images/"]),
        "garbage-adapter": (("ask", "--backbone", llava, "--adapter", garbage, "--image", image, "--question", "q?"),
                            ["adapter_config.json: unreadable adapter config"]),
        "other-shapes": (("ask", "--backbone", llava, "--adapter", small, "--image", image, "--question", "q?"),
                         ["in the adapter but this backbone needs"]),
        "out-under-file": (("train", "--backbone", llava, "--data", data, "--out", root / "a-file" / "run"),
                           ["a-file is a file, not a folder"]),
        "lora-r": (("params", "--backbone", llava, "--lora-r", "0"), ["lora_r: must be >= 1"]),
        "long-question": (("ask", "--backbone", llava, "--image", image, "--question", "x" * 501),
                          ["question is too long (501 characters; the limit is 500)"]),
    }[case]
    line = assert_user_error(run_cli(*args), *needles)
    print(f"\n{case}: {line}")


def test_cli_does_not_delete_a_foreign_adapter_folder(tiny_model, dataset, tmp_path):
    out = tmp_path / "mine"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "weights.bin").write_text("precious")
    proc = run_cli("train", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--steps", "1",
                   "--overwrite", "--out", out)
    assert_user_error(proc, "not a MedLN run folder")
    assert (out / "adapter" / "weights.bin").read_text() == "precious"


def test_a_failed_adapter_save_is_one_line_and_leaves_no_folder(tiny_model, dataset, tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) is below the size of a full
    checkpoint, so saving fails inside safetensors, as on a full disk."""
    out = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # Python ignores SIGXFSZ: writes fail EFBIG

    proc = subprocess.run([sys.executable, "-m", "medln", "train", "--backbone", str(tiny_model("llava")),
                           "--scope", "full", "--data", f"jsonl:{dataset}", "--steps", "1", "--batch-size", "2",
                           "--eval-split", "", "--ood-split", "", "--out", str(out)],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert_user_error(proc, f"could not save the adapter to {out / 'adapter'}", "File too large")
    assert not out.exists()  # nothing half-written blocks the next run into the same --out


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


# --------------------------------------------------------------------------- 8. smaller ones


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
