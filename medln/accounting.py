"""Parameter accounting before anything loads: per-scope trainable counts from config.json.

The model is built on the meta device (no weights) and described as plain data
(medln.structure.describe); the description is cached on disk keyed by the config's bytes and the
transformers version, so a repeat query for a local config needs neither torch nor
transformers (~0.1 s instead of ~4 s of imports on a 2-core machine).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import astuple
from importlib.metadata import version
from pathlib import Path

from . import __version__
from .backbones import FAMILIES, resolve
from .methods import SCOPES, ScopeError, get_scope, select
from .methods.lora import RANK
from .storage import write_text_atomic
from .structure import ModuleInfo, describe


def cache_dir() -> Path:
    return Path(os.environ.get("MEDLN_CACHE", Path.home() / ".cache" / "medln")) / "structure"


def _key(config_bytes: bytes) -> str:
    h = hashlib.sha256(config_bytes)
    h.update(f"medln {__version__} transformers {version('transformers')}".encode())
    return h.hexdigest()[:32]


def structure(backbone: str) -> tuple[str, str, list[ModuleInfo], list[str]]:
    """(display name, family, module descriptions, dead-norm prefixes) for a backbone."""
    resolved = resolve(backbone)
    cached = None
    if resolved.local:
        config_bytes = (Path(resolved.source) / "config.json").read_bytes()
        cached = cache_dir() / f"{_key(config_bytes)}.json"
        if cached.exists():
            try:
                data = json.loads(cached.read_text(encoding="utf-8"))
                return resolved.name, data["family"], [ModuleInfo(*m) for m in data["modules"]], data["dead"]
            except (OSError, ValueError, KeyError, TypeError):  # a damaged cache entry is rebuilt, not trusted
                pass
    from .backbones import load_config, meta_model

    resolved, config, family = load_config(backbone)
    modules = describe(meta_model(config, family))
    dead = family.dead_norms(config)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)  # a unique temporary name: two requests may write at once
        write_text_atomic(cached, json.dumps({"family": family.name, "modules": [astuple(m) for m in modules], "dead": dead}))
    return resolved.name, family.name, modules, dead


def param_rows(backbone: str, scopes: list[str] | None = None, quant: str = "none", lora_r: int = RANK) -> list[dict]:
    """One row per scope: {backbone, scope, total, trainable, percent, dead, modules} or
    {backbone, scope, skipped: reason} for a combination that cannot run."""
    name, family_name, modules, dead = structure(backbone)
    family = FAMILIES[family_name]
    rows = []
    for scope_name in scopes or [s.name for s in SCOPES]:
        try:
            sel = select(modules, dead, family, get_scope(scope_name), quant=quant, lora_r=lora_r)
        except ScopeError as e:
            rows.append({"backbone": name, "scope": scope_name, "skipped": str(e)})
            continue
        rows.append({"backbone": name, "scope": scope_name, "total": sel.total, "trainable": sel.trainable,
                     "percent": round(sel.percent, 6), "dead": sel.dead,
                     "modules": sel.modules + sel.extra if sel.scope.kind != "full" else ["(all)"]})
    return rows


__all__ = ["param_rows", "structure"]
