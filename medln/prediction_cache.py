"""The base model's answers, kept on disk and reused: every `train`, `eval` and `compare` run
and every app fine-tune scores the untouched base on the same splits, and those answers
depend only on what the key below names. A changed input is another key, so a stale entry is
never read; an entry is also checked against the samples it answers (same ids, same order).

The key (a JSON object; its sha256 names the file):
  backbone    the Hub commit the weights were loaded at, or a local folder's content hash
              (medln.revisions); a Hub model whose commit is unknown is not cached at all
  build       quant, projections kept unquantized, weight dtype, compute precision, device
              kind, fused norms (medln.kernels)
  prompt      the family and its prompt template (the chat template is in the folder's hash)
  data        the split, the limit, and the content hash of the very samples scored (ids,
              questions, answers, image bytes)
  generation  new-token limits, batch size, greedy; the medln, torch and transformers versions

Entries: $MEDLN_CACHE/predictions/<sha256>.json = {"key", "ids", "predictions"}, written
atomically (medln.storage). Delete the folder to start afresh; nothing else is kept there.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .generation import MAX_NEW_TOKENS
from .precision import from_dtype
from .revisions import samples_fingerprint
from .storage import cache_root, write_json_atomic

FORMAT = 1  # bump when what an answer depends on changes in a way the key does not see


def folder() -> Path:
    return cache_root() / "predictions"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def base_key(bb, base, *, backbone_revision: dict, split: str, limit: int | None, samples: list,
             batch_size: int, fused_norms: bool = False) -> dict | None:
    """The key of the base answers of `bb` (loaded as BaseSpec `base`) on these samples, or
    None when the backbone's exact revision is not known (then nothing is cached)."""
    from . import __version__

    if backbone_revision.get("source") == "hub" and not backbone_revision.get("commit"):
        return None
    device = next(p.device for p in bb.model.parameters()).type
    return {
        "format": FORMAT,
        # a local folder by its content alone: the bundled model by name or by path is one model
        "backbone": {k: v for k, v in backbone_revision.items() if k != "name"},
        "build": {"quant": bb.quant, "keep": sorted(base.keep) if base else [], "dtype": bb.dtype,
                  "precision": (bb.precision or from_dtype(bb.dtype)).name, "device": device,
                  "fused_norms": fused_norms},  # same maths, other rounding: greedy answers may differ
        "prompt": {"family": bb.family.name, "template": bb.prompt},
        "data": {"split": split, "limit": limit, "n": len(samples), "samples_sha256": samples_fingerprint(samples)},
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "batch_size": batch_size, "greedy": True,
                       "versions": {"medln": __version__, "torch": _version("torch"),
                                    "transformers": _version("transformers")}},
    }


def base_keys(bb, base, backbone_revision: dict, sets: dict, *, limit: int, batch_size: int,
              fused_norms: bool = False) -> dict:
    """{split: key} for a run's evaluation sets (each `limit`-subsampled, as train does)."""
    return {split: base_key(bb, base, backbone_revision=backbone_revision, split=split, limit=limit, samples=samples,
                            batch_size=batch_size, fused_norms=fused_norms) for split, samples in sets.items()}


def path_of(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return folder() / f"{digest}.json"


def load(key: dict | None, samples: list) -> list[str] | None:
    """The cached answers for these samples, in their order, or None."""
    if key is None:
        return None
    try:
        entry = json.loads(path_of(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    preds = entry.get("predictions") if isinstance(entry, dict) else None
    if entry.get("key") != key or entry.get("ids") != [s.id for s in samples] or \
            not isinstance(preds, list) or len(preds) != len(samples):
        return None
    return [str(p) for p in preds]


def save(key: dict | None, samples: list, preds: list[str]) -> None:
    """Keep the answers; a disk that refuses them costs only the reuse."""
    if key is None:
        return
    try:
        folder().mkdir(parents=True, exist_ok=True)
        write_json_atomic(path_of(key), {"key": key, "ids": [s.id for s in samples], "predictions": list(preds)})
    except OSError:
        pass
