"""`medln push` under bad input (issue 25): a bad run folder, repository id or branch, or an
adapter/ that holds links out of the run, is one line and exit 2 before anything is sent; the
run folder is only read; the staging folder is a fresh temporary one, gone after every exit."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_run, run_cli, tree
from hubserver import stand_in_hub

# Every case runs the CLI in a fresh interpreter against a stand-in hub server: end to end,
# so CI runs them (-m slow) and the default command does not (issue 22: a 4-minute suite).
pytestmark = [pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning"), pytest.mark.slow]
TOKEN = "hf_secret_do_not_print"


# push's staging folders go to this process's own temporary folder (TMPDIR), so that other
# processes on the machine cannot make "nothing left behind" look false
SCRATCH = Path(tempfile.mkdtemp(prefix="test-push-scratch-"))


def push(*args, endpoint: str, token: str | None = TOKEN):
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": token or "",
           "HUGGING_FACE_HUB_TOKEN": "", "HF_TOKEN_PATH": os.devnull, "TMPDIR": str(SCRATCH)}
    return run_cli("push", *args, env=env)


def _scratch() -> set[str]:
    return {p.name for p in SCRATCH.iterdir()}


@pytest.mark.parametrize("args, needle", [
    (["--repo-id", "x" * 100_000 + "/y"], "repo_id: at most 4,096 characters, got 100,002"),
    (["--repo-id", "x" * 200 + "/y"], "--repo-id 'xxxx"),
    (["--repo-id", "me/../../etc"], "expected owner/name"),
    (["--repo-id", "/abs/path"], "expected owner/name"),
    (["--repo-id", "me/x", "--revision", "../../main"], "--revision '../../main': expected a branch name"),
    (["--repo-id", "me/x", "--revision", "b" * 100_000], "revision: at most 4,096 characters, got 100,000"),
    (["--repo-id", "me/x", "--revision", "a//b"], "expected a branch name"),
])
def test_bad_names_send_nothing(args, needle, finished_run):
    before = _scratch()
    with stand_in_hub() as (endpoint, received):
        line = assert_one_line_error(push(finished_run, *args, endpoint=endpoint), needle)
    assert received.requests == [] and len(line) < 600 and TOKEN not in line
    assert _scratch() == before


def _run_with(tmp_path, finished_run, damage) -> Path:
    run = copy_run(finished_run, tmp_path)
    (run / "eval.json").write_text(json.dumps({}))
    damage(run)
    return run


@pytest.mark.parametrize("damage, needle", [
    (lambda r: (r / "adapter" / "leak").symlink_to("/etc/passwd"), "leak: a link inside the run's adapter/"),
    (lambda r: (r / "adapter" / "sub").symlink_to("/etc", target_is_directory=True), "sub: a link inside"),
    (lambda r: os.mkfifo(r / "adapter" / "pipe"), "pipe: not a plain file inside the run's adapter/"),
    (lambda r: (r / "config.json").write_text("[1, 2]"), "config.json"),
    (lambda r: (r / "config.json").write_bytes(b"\xff\xfe{"), "config.json"),
    (lambda r: (r / "eval.json").unlink(), "not a finished MedLN run"),
])
def test_bad_run_folders_send_nothing_and_stay_as_they_were(damage, needle, finished_run, tmp_path):
    run = _run_with(tmp_path, finished_run, damage)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.is_symlink()}
    before = _scratch()
    with stand_in_hub() as (endpoint, received):
        line = assert_one_line_error(push(run, "--repo-id", "me/x", endpoint=endpoint), needle)
    assert received.requests == [] and TOKEN not in line and "root:" not in line
    assert {p: p.read_bytes() for p in files} == files and _scratch() == before


def test_a_run_path_that_is_a_file_or_missing(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with stand_in_hub() as (endpoint, received):
        for path in (tmp_path / "afile", tmp_path / "missing", tmp_path / "afile" / "under"):
            assert_one_line_error(push(path, "--repo-id", "me/x", endpoint=endpoint), "not a finished MedLN run")
    assert received.requests == [] and (tmp_path / "afile").read_text() == "mine"


def test_a_good_push_only_reads_the_run(finished_run, tmp_path):
    run = _run_with(tmp_path, finished_run, lambda r: None)
    before, scratch = tree(run), _scratch()
    with stand_in_hub() as (endpoint, received):
        proc = push(run, "--repo-id", "me/tiny", "--revision", "exp/1", "--json", endpoint=endpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["revision"] == "exp/1" and received.requests
    assert tree(run) == before and _scratch() == scratch
