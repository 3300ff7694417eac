"""medln.runs: the run folder contract never loses a file (`--out` must be new, empty, or a
MedLN run replaced on purpose; a run that fails before its adapter leaves nothing behind; a
failed save is one line), and an adapter must belong to its base before peft attaches it.
Reloading runs exactly as trained is test_runs.py."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import REPO, adapter_run, assert_one_line_error, copy_dataset, run_cli
from medln.config import TrainConfig
from medln.data.sample import DataError
from medln.runs import RunDir, RunError, check_adapter, check_out

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


# --------------------------------------------------------------------------- run folders


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

    folder = copy_dataset(dataset, tmp_path)
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


def test_cli_does_not_delete_a_foreign_adapter_folder(tiny_model, dataset, tmp_path):
    out = tmp_path / "mine"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "weights.bin").write_text("precious")
    proc = run_cli("train", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--steps", "1",
                   "--overwrite", "--out", out)
    assert_one_line_error(proc, "not a MedLN run folder")
    assert (out / "adapter" / "weights.bin").read_text() == "precious"


@pytest.mark.slow  # a training CLI in a fresh interpreter under a file-size limit: end to end
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
    assert_one_line_error(proc, f"could not save the adapter to {out / 'adapter'}", "File too large")
    assert not out.exists()  # nothing half-written blocks the next run into the same --out


# --------------------------------------------------------------------------- adapters


def test_an_adapter_of_another_model_is_refused_before_attaching(tiny_model, tmp_path):
    from medln.backbones import load_backbone
    from medln.runs import attach_run as load_run_model

    bb = load_backbone(str(tiny_model("llava")), device="cpu")
    own = adapter_run(tiny_model, "llava", tmp_path / "own")
    check_adapter(bb.model, own / "adapter", family="llava")
    smaller = adapter_run(tiny_model, "llava", tmp_path / "small", hidden_size=48, vision_hidden_size=48,
                           intermediate_size=96, vision_intermediate_size=96)
    with pytest.raises(RunError, match=r"has shape \[48\] in the adapter but this backbone needs \[64\]"):
        load_run_model(bb, smaller)
    blip = adapter_run(tiny_model, "blip", tmp_path / "blip")
    with pytest.raises(RunError, match="trained on a blip model; this backbone is llava"):
        load_run_model(bb, blip)
    (blip / "config.json").write_text(json.dumps({"config": {"scope": "ln"}}))  # no family recorded
    with pytest.raises(RunError, match="targets .* module\\(s\\) this backbone does not have"):
        load_run_model(bb, blip)
    (own / "adapter" / "adapter_config.json").write_text('{"peft_type": "LN_TUNING", "target_modules": 5}')
    with pytest.raises(RunError, match="field 'target_modules': must be a non-empty list"):
        load_run_model(bb, own)
    assert not any("ln_tuning" in name for name, _ in bb.model.named_modules())  # nothing was attached
