"""Revisions: which commit of a Hub model or dataset a run used, or the content hash of a
local one. A hub backbone (`owner/name@REVISION`, or a registry name with `@REVISION`) and an
`hf:` dataset (`hf:owner/name@REVISION[:CONFIG]`) take a branch, tag or commit, passed to
from_pretrained / load_dataset as `revision`. Every run records what it really used in
config.json ("revisions"): for a hub model or dataset the commit the files came from (the Hub
cache's snapshot folder; the datasets cache folder, which is named by commit); for a local
folder or file a content hash (`fingerprint`). A leaf module: backbones and data import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
HASH_WHOLE_FILES_UP_TO = 64 * 2**20  # bigger files (weight shards) count by name and size only


class HubError(ValueError):
    """A push or a revision cannot be done as asked; the message says why (never the token)."""


def split_revision(arg: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'); no '@' -> (arg, None). A revision is a
    branch, tag or commit; it may contain '/' (refs/pr/1) but not '@' or whitespace."""
    name, at, revision = arg.rpartition("@")
    if not at:
        return arg, None
    if not name or not revision or re.search(r"\s", revision):
        raise HubError(f"{arg!r}: expected NAME@REVISION (a branch, tag or commit after the '@')")
    return name, revision


# ------------------------------------------------------------------------------- what a run used


def fingerprint(path: str | Path) -> str:
    """sha256 of a file, or of a folder: every file's relative path and size, and the content
    of each file up to 64 MiB (config, tokenizer, a small model); larger files (the weight
    shards of a big model) by path and size only, so hashing a 7B folder takes no minutes.
    Names starting with '.' (caches, .git) are left out."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{size}\0".encode())
        if size <= HASH_WHOLE_FILES_UP_TO:
            with file.open("rb") as f:
                for block in iter(lambda: f.read(2**20), b""):
                    digest.update(block)
    return digest.hexdigest()


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit whose files a load of `repo_id@revision` just read: the snapshot folder the
    Hub cache resolves that revision to (a download updates refs/<revision> first; transformers
    5 no longer keeps `config._commit_hash`)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    commit = Path(path).parent.name if isinstance(path, str) else None
    return commit if commit and _COMMIT.match(commit) else None


def samples_fingerprint(samples) -> str:
    """sha256 of what a split holds: every sample's id, task, question, answer and image bytes."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps([s.id, s.task, s.question, s.answer, s.answer_type]).encode())
        image = s.image if isinstance(s.image, bytes) else Path(s.image).read_bytes()
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


def data_revision(loaded) -> dict:
    """What a run's training data was: an `hf:` dataset's commit (its loader records it), or
    for any other source the content hash of the samples it yielded."""
    recorded = getattr(loaded, "revision", None)
    if recorded:
        return recorded
    return {"source": "local", "samples_sha256": samples_fingerprint(loaded.samples), "n": len(loaded.samples)}


def dataset_commit(dataset) -> str | None:
    """The commit a `datasets.Dataset` was prepared from: datasets names a Hub dataset's cache
    folder by the commit it downloaded (builder hash = commit sha, datasets.load)."""
    for cache_file in getattr(dataset, "cache_files", None) or ():
        name = Path(cache_file.get("filename", "")).parent.name
        if _COMMIT.match(name):
            return name
    return None
