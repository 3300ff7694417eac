"""medln.hub: `medln push` against a stand-in Hub on localhost (tests/hubserver.py) that records
what it received; `@revision` on hub backbones and `hf:` datasets, and the commit every run
records. No network: the models come from a Hub cache laid out on disk."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import run_cli
from hubserver import stand_in_hub
from medln.backbones import BackboneError, resolve
from medln.config import TrainConfig
from medln.revisions import HubError, fingerprint, split_revision
from medln.runs import RunDir
from medln.train import train_run

# Every case runs the CLI in a fresh interpreter against a stand-in hub server: end to end,
# so CI runs them (-m slow) and the default command does not (issue 22: a 4-minute suite).
pytestmark = [pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning"), pytest.mark.slow]
TOKEN = "hf_secret_do_not_print"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("push") / "run"
    cfg = TrainConfig(backbone="medln-tiny", scope="ln", data=f"jsonl:{dataset}", steps=1, batch_size=4, warmup=0.0,
                      lr=0.05, eval_split="test", ood_split="")
    assert list(train_run(cfg, out))[-1]["event"] == "done"
    return RunDir(out)


def push(*args, endpoint: str, token: str | None = TOKEN):
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": token or "",
           "HUGGING_FACE_HUB_TOKEN": "", "HF_TOKEN_PATH": os.devnull}
    return run_cli("push", *args, env=env)


def test_push_uploads_the_adapter_and_its_card(tiny_run):
    from huggingface_hub import ModelCard

    with stand_in_hub() as (endpoint, received):
        proc = push(tiny_run.path, "--repo-id", "me/tiny-ln", "--private", "--json", endpoint=endpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TOKEN not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["repo_id"] == "me/tiny-ln" and out["revision"] == "main" and out["commit"]
    assert received.repos["me/tiny-ln"]["visibility"] == "private"
    # every request that reached the API carried the token (the LFS PUT goes to the storage URL the batch gave)
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in received.requests if r["path"].startswith("/api/models"))
    [commit] = received.commits
    assert commit["repo_id"] == "me/tiny-ln" and commit["revision"] == "main"
    files = commit["files"]
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert files["adapter_model.safetensors"] == (tiny_run.adapter_dir / "adapter_model.safetensors").read_bytes()
    assert files["adapter_config.json"] == (tiny_run.adapter_dir / "adapter_config.json").read_bytes()
    assert not any(str(tiny_run.path.parent).encode() in data for data in files.values())  # no local folders
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "mit" and card.data.library_name == "peft"
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model is None  # medln-tiny is not on the Hub (medln.card)
    assert 'PeftModel.from_pretrained(base, "me/tiny-ln")' in card.content
    assert 'medln.ASSETS / "medln-tiny"' in card.content and "not for clinical use" in card.content
    # the run's own card is untouched: it still loads from its folder
    assert "path/to/this/folder" in (tiny_run.adapter_dir / "README.md").read_text()


def test_push_merged_to_a_branch(tiny_run):
    from huggingface_hub import ModelCard

    with stand_in_hub() as (endpoint, received):
        proc = push(tiny_run.path, "--repo-id", "me/tiny-ln-merged", "--merged", "--revision", "exp", endpoint=endpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert received.branches == [("me/tiny-ln-merged", "exp")]
    [commit] = received.commits
    assert commit["revision"] == "exp"
    files = commit["files"]
    assert {"config.json", "model.safetensors", "README.md", "medln-merged.json"} <= set(files)
    assert not any(name.startswith("adapter_") for name in files)
    assert not any(str(tiny_run.path.parent).encode() in data for data in files.values())  # no local folders
    assert json.loads(files["medln-merged.json"])["run"] == "run"
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert "me/tiny-ln-merged" in card.content and "dtype=torch.float32" in card.content


def test_push_refusals_send_nothing(tiny_run, tmp_path):
    with stand_in_hub() as (endpoint, received):
        no_token = push(tiny_run.path, "--repo-id", "me/x", endpoint=endpoint, token=None)
        bad_repo = push(tiny_run.path, "--repo-id", "not a repo", endpoint=endpoint)
        (tmp_path / "half").mkdir()
        unfinished = push(tmp_path / "half", "--repo-id", "me/x", endpoint=endpoint)
    assert no_token.returncode == 2 and "HF_TOKEN" in no_token.stderr and "hf auth login" in no_token.stderr
    assert bad_repo.returncode == 2 and "owner/name" in bad_repo.stderr
    assert unfinished.returncode == 2 and "not a finished MedLN run" in unfinished.stderr
    assert received.requests == []


def test_a_failed_push_is_one_line_without_the_token(tiny_run):
    with stand_in_hub() as (endpoint, _):
        pass  # closed: nothing listens on that port now
    proc = push(tiny_run.path, "--repo-id", "me/x", endpoint=endpoint)
    assert proc.returncode == 2 and proc.stderr.startswith("error: push to me/x failed")
    assert TOKEN not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ revisions


def test_revision_syntax():
    assert split_revision("owner/name@v1.0") == ("owner/name", "v1.0")
    assert split_revision("owner/name") == ("owner/name", None)
    assert split_revision("owner/name@refs/pr/1") == ("owner/name", "refs/pr/1")
    with pytest.raises(HubError):
        split_revision("owner/name@")
    assert resolve("llava-1.5-7b@abc").source == "llava-hf/llava-1.5-7b-hf" and resolve("llava-1.5-7b@abc").revision == "abc"
    with pytest.raises(BackboneError, match="Hub models only"):
        resolve("medln-tiny@main")


def test_a_folder_with_an_at_in_its_name_is_a_folder(tiny_model, tmp_path):
    folder = tmp_path / "model@2"
    shutil.copytree(tiny_model("llava"), folder)
    resolved = resolve(str(folder))
    assert resolved.local and resolved.revision is None


def hub_cache(tiny_model, root) -> str:
    """A Hub cache (HF_HUB_CACHE layout) holding `me/tiny` at COMMIT, with refs main and v1."""
    repo = root / "models--me--tiny"
    shutil.copytree(tiny_model("llava"), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(COMMIT)
    return str(root)


def test_a_hub_backbone_at_a_revision_is_recorded_with_its_commit(tiny_model, dataset, tmp_path):
    env = {"HF_HUB_CACHE": hub_cache(tiny_model, tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    args = ["--data", f"jsonl:{dataset}", "--steps", 1, "--batch-size", 2, "--lr", 0.01, "--eval-split", "",
            "--ood-split", ""]
    proc = run_cli("train", "--backbone", "me/tiny@v1", *args, "--out", tmp_path / "run", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["revisions"]["backbone"] == {"source": "hub", "id": "me/tiny", "requested": "v1", "commit": COMMIT}
    assert record["base"]["backbone"] == "me/tiny@v1"  # a reload asks for the same revision
    assert f'revision="{COMMIT}"' in (tmp_path / "run" / "adapter" / "README.md").read_text()
    missing = run_cli("train", "--backbone", "me/tiny@v2", *args, "--out", tmp_path / "run2", env=env)
    assert missing.returncode == 2 and "me/tiny" in missing.stderr and "Traceback" not in missing.stderr


def test_a_local_model_is_recorded_by_its_content(tiny_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model("llava"), folder)
    before = fingerprint(folder)
    assert before == fingerprint(tiny_model("llava"))  # the path is not part of it
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert fingerprint(folder) != before


def test_an_hf_dataset_at_a_revision_records_its_commit(tmp_path, monkeypatch):
    """A dataset prepared in the datasets cache under its commit (as datasets names it)."""

    from medln.data import DataError, hub
    from test_data_loaders import cache_as_hub_dataset

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_as_hub_dataset(tmp_path, ("test",), tmp_path / "hf-cache", revision=COMMIT)

    loaded = hub.load(f"someorg/tiny-set@{COMMIT}", "test")
    assert loaded.revision == {"source": "hub", "id": "someorg/tiny-set", "config": None, "requested": COMMIT,
                               "commit": COMMIT}
    assert hub.load("someorg/tiny-set", "test").revision["commit"] == COMMIT
    with pytest.raises(DataError, match=f"holds commit {COMMIT}, not {'f' * 40}"):
        hub.load(f"someorg/tiny-set@{'f' * 40}", "test")
    with pytest.raises(DataError, match="expected hf:DATASET_ID"):
        hub.load("someorg/tiny-set@", "test")
