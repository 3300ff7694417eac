"""`medln push`: a run to the Hugging Face Hub (revisions of what a run read: medln.revisions).

`medln push RUN --repo-id owner/name` uploads the run's adapter with its card (or, with
`--merged`, the merged model built by medln.merge, with its own card) through huggingface_hub.
The token comes from the environment (HF_TOKEN, or the one `hf auth login` saved) and is never
printed: a message that might contain it is masked. HF_ENDPOINT chooses the server (tests run
a stand-in on localhost).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path

from .config import _f, add_command
from .revisions import HubError
from .userfiles import short

__all__ = ["HubError", "push_run", "add_cli"]

# ---------------------------------------------------------------------------------------- push


def push_run(run_path, repo_id: str, *, merged: bool = False, private: bool = False, revision: str | None = None,
             endpoint: str | None = None) -> dict:
    """Upload a finished run's adapter (or its merged model) with a fresh model card.
    Returns {"repo_id", "url", "commit", "files", "what"}."""
    from .runs import RunDir, RunError

    run = RunDir(Path(run_path))
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise HubError(f"--repo-id {short(repo_id)}: expected owner/name (letters, digits, '.', '_', '-'; "
                       "at most 96 characters each)")
    if revision and (not REVISION.fullmatch(revision) or ".." in revision or revision.endswith((".lock", "/"))
                     or "//" in revision):
        raise HubError(f"--revision {short(revision)}: expected a branch name (letters, digits, '.', '_', '-', '/'; "
                       "at most 128 characters)")
    if not run.complete:
        raise RunError(f"{run.path}: not a finished MedLN run (it needs adapter/ and eval.json)")
    _check_plain_files(run.adapter_dir)
    from .data.hub import hub_token

    token = hub_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN, or log in once with `hf auth login`")
    with tempfile.TemporaryDirectory(prefix="medln-push-") as scratch:
        folder = _staged(run, Path(scratch), merged=merged, repo_id=repo_id)
        try:
            return _upload(folder, repo_id, token=token, private=private, revision=revision, endpoint=endpoint,
                           what="merged model" if merged else "adapter", run_name=run.path.name)
        except Exception as e:  # HfHubHTTPError, connection errors: one line, token masked
            message = f"{type(e).__name__}: {e}".replace(token, "***").splitlines()[0]
            raise HubError(f"push to {repo_id} failed: {message}") from None


REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][\w.\-/]{0,127}")


def _check_plain_files(adapter_dir: Path) -> None:
    """Only the run's own files go up: a link (to ~/.ssh, say) or a device in adapter/ would
    upload whatever it points at; refused, named, before anything is read or sent."""
    from .runs import RunError

    import os

    paths = [adapter_dir]
    for folder, dirs, files in os.walk(adapter_dir):  # links to folders are listed, never followed
        paths += [Path(folder) / name for name in sorted(dirs + files)]
    for path in paths:
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            kind = "a link" if path.is_symlink() else "not a plain file"
            raise RunError(f"{path}: {kind} inside the run's adapter/; push uploads only the run's own files")


def _staged(run, scratch: Path, *, merged: bool, repo_id: str) -> Path:
    """The folder to upload, with a card that names `repo_id`: a copy of adapter/ (so the
    run's own card stays as training wrote it), or the merged model."""
    import shutil

    from .card import adapter_card, base_of, merged_card

    if merged:
        from .merge import MERGED_JSON, merge_run

        info = merge_run(run.path, scratch / "merged")
        folder = scratch / "merged"
        merged_card(run.config(), run.eval() or {}, info, repo_id=repo_id).save(folder / "README.md")
        # what merge recorded, without this machine's folders (the run's path, a local base's path)
        record = json.loads((folder / MERGED_JSON).read_text(encoding="utf-8"))
        record.update(run=run.path.name, source=base_of(run.config())["name"])
        (folder / MERGED_JSON).write_text(json.dumps(record, indent=2), encoding="utf-8")
        return folder
    folder = scratch / "adapter"
    shutil.copytree(run.adapter_dir, folder)
    adapter_card(run.config(), run.eval() or {}, peft=(folder / "adapter_config.json").is_file(),
                 repo_id=repo_id).save(folder / "README.md")
    return folder


def _upload(folder: Path, repo_id: str, *, token: str, private: bool, revision: str | None, endpoint: str | None,
            what: str, run_name: str) -> dict:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                             commit_message=f"MedLN {what} from run {run_name}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {"repo_id": repo_id, "url": str(url), "revision": revision or "main", "commit": info.oid,
            "commit_url": info.commit_url, "what": what, "files": files}


def cmd_push(args) -> None:
    result = push_run(args.run, args.repo_id, merged=args.merged, private=args.private, revision=args.revision or None)
    if args.json:
        print(json.dumps(result))
        return
    print(f"pushed the {result['what']} ({len(result['files'])} files: {', '.join(result['files'])}) to "
          f"{result['repo_id']}@{result['revision']}: {result['commit_url']}")


@dataclasses.dataclass(kw_only=True)
class PushArgs:
    run: str = _f(help="a finished run folder", positional=True)
    repo_id: str = _f(help="the Hub repository to upload to, owner/name (created if missing)")
    merged: bool = _f(False, "upload the merged model (the adapter folded into the base) instead of the adapter")
    private: bool = _f(False, "create the repository as private (an existing one keeps its visibility)")
    revision: str = _f("", "branch to upload to (created from main if missing); default main")
    json: bool = _f(False, "print JSON")


def add_cli(sub) -> None:
    add_command(sub, "push", PushArgs, cmd_push,
                help="upload a run's adapter (or --merged model) with its model card to the Hugging Face Hub")
