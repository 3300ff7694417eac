"""`medln merge` under bad input (issue 25): --out is checked before anything loads, the
merged model is built in a fresh scratch folder (removed on every exit path) and renamed
into place whole, and nothing the user owns is moved, overwritten or deleted."""

from __future__ import annotations

import json
import os

import pytest

from conftest import adapter_run, assert_one_line_error, copy_run, run_cli, tree

pytestmark = [pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")]


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".merging" in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("case", ["a file", "under a file", "inside the run", "inside the adapter", "not empty",
                                  "a symlink", "inside the base model"])
def test_a_bad_out_is_refused_before_loading(case, finished_run, tiny_model, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    os.symlink(tmp_path / "full", tmp_path / "link")
    out, needle = {
        "a file": (tmp_path / "a-file", "a-file is a file, not a folder"),
        "under a file": (tmp_path / "a-file" / "m", "a-file is a file, not a folder"),
        "inside the run": (run / "merged", "is inside the run"),
        "inside the adapter": (run / "adapter" / "m", "is inside the run"),
        "not empty": (tmp_path / "full", "exists and is not empty"),
        "a symlink": (tmp_path / "link", "is a symbolic link"),
        "inside the base model": (tiny_model("llava") / "merged", "is inside the base model"),
    }[case]
    before, run_before = tree(tmp_path / "full"), tree(run)
    assert_one_line_error(run_cli("merge", run, "--out", out), needle)
    assert (tmp_path / "a-file").read_text() == "mine" and tree(tmp_path / "full") == before
    assert tree(run) == run_before and not (tiny_model("llava") / "merged").exists()
    assert not leftovers(tmp_path) and not leftovers(run)


def test_a_folder_named_like_the_old_scratch_space_is_left_alone(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    mine = tmp_path / ".merged.tmp"  # the fixed name merge used to take over
    mine.mkdir()
    (mine / "thesis.txt").write_text("mine")
    proc = run_cli("merge", run, "--out", tmp_path / "merged", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (mine / "thesis.txt").read_text() == "mine"
    assert not (tmp_path / "merged" / "thesis.txt").exists()
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert leftovers(tmp_path) == [".merged.tmp"]  # the user's folder, and no scratch of merge's
    mode = (tmp_path / "merged").stat().st_mode & 0o777
    probe = tmp_path / "probe"
    probe.mkdir()
    assert mode == probe.stat().st_mode & 0o777  # a new folder's mode, not mkdtemp's 0700


def test_a_failure_mid_merge_leaves_no_scratch_and_no_out(tiny_model, tmp_path):
    # An adapter of a smaller model in a run that claims the bundled-size base: refused when
    # attached, after the scratch folder exists.
    small = adapter_run(tiny_model, "llava", tmp_path / "small", hidden_size=48, vision_hidden_size=48,
                        intermediate_size=96, vision_intermediate_size=96)
    out = tmp_path / "new" / "deeper" / "merged"
    assert_one_line_error(run_cli("merge", small, "--out", out), "in the adapter but this backbone needs")
    assert not (tmp_path / "new").exists()  # the parents it made are gone again
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("case", ["foreign peft type", "crafted header", "prompt"])
def test_a_crafted_adapter_is_refused_in_one_line(case, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    adapter_cfg = run / "adapter" / "adapter_config.json"
    config = json.loads(adapter_cfg.read_text())
    if case == "foreign peft type":
        config["peft_type"] = "OFT"
        needle = "field 'peft_type': 'OFT' is not a MedLN adapter type"
    elif case == "crafted header":
        (run / "adapter" / "adapter_model.safetensors").write_bytes((2**63).to_bytes(8, "little") + b"{}")
        needle = "not a safetensors file (its header claims 9,223,372,036,854,775,808 bytes"
    else:
        config.update(peft_type="PROMPT_TUNING", num_virtual_tokens=4)
        needle = "nothing to merge"
    adapter_cfg.write_text(json.dumps(config))
    assert_one_line_error(run_cli("merge", run, "--out", tmp_path / "merged"), needle)
    assert not (tmp_path / "merged").exists() and not leftovers(tmp_path)
