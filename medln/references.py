"""The reference rows beside every tuned score, on the very items it was scored on: the
image-blind row (medln.baselines: the question alone) and the image-aware probe ceiling
(medln.probe: a linear read-out of the frozen vision tower). One function, `reference_rows`,
serves `medln train`, the app's fine-tune, and every comparison (through train_run), so the
rows are computed one way everywhere: fitted on the train samples the scope trained on,
scored with `evaluate.score` (its keys, n and `by_phrasing` included) on each evaluation set.

The ceiling needs the backbone's features at the layer its language model reads
(LLaVA-style `vision_feature_layer`); for another family it is "n/a" with the reason.

Cost: the blind row is a table lookup. The ceiling encodes every train and scored image once
with the frozen vision tower and fits closed-form ridge classifiers (medln.probe). Both are
kept on disk, keyed by what they depend on (the backbone's revision or content hash, its
build, the content hashes of the train, validation and scored samples, medln's version):
$MEDLN_CACHE/references/<sha256>.json. A changed input is another key; a backbone whose exact
revision is unknown (a Hub id with no recorded commit) is not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .baselines import fit_blind, score_blind
from .data.sample import PHRASINGS, Sample
from .metrics import METRICS

FORMAT = 1  # bump when what the rows depend on changes in a way the key does not see
BLIND_RULE = ("most frequent train answer per normalised question (backing off to its question type), most "
              "frequent train report; no image is read")


def cache_folder() -> Path:
    return Path(os.environ.get("MEDLN_CACHE") or Path.home() / ".cache" / "medln") / "references"


def reference_rows(train: list[Sample], evals: dict[str, list[Sample]], *, backbone=None,
                   validation: list[Sample] | None = None, backbone_revision: dict | None = None) -> dict:
    """{"blind": {split: metrics}, "ceiling": {split: metrics} (empty when n/a), "about": {"blind",
    "ceiling", "fitted_on", "cached", "seconds"}} for every evaluation set in `evals`.

    `backbone` (a loaded Backbone) gives the ceiling; `validation` chooses its ridge strength;
    `backbone_revision` (medln.revisions) lets the result be cached on disk."""
    t0 = time.perf_counter()
    key = _key(train, evals, backbone, validation, backbone_revision)
    cached = _load(key)
    if cached is not None:
        cached["about"]["cached"] = True
        return cached
    blind = fit_blind(train)
    out = {"blind": {split: score_blind(blind, samples) for split, samples in evals.items()}, "ceiling": {},
           "about": {"blind": BLIND_RULE, "fitted_on": f"{blind.n_train} questions, "
                                                         f"{blind.n_train_reports} reports"}}
    out["about"]["ceiling"] = _ceiling(out, train, evals, backbone, validation)
    out["about"].update(cached=False, seconds=round(time.perf_counter() - t0, 3))
    _save(key, out)
    return out


def run_references(cfg, backbone, train: list[Sample], evals: dict[str, list[Sample]], revision: dict) -> dict | None:
    """A training run's reference rows (medln.train): on the items base and tuned are scored
    on, fitted on what the run trains on; the ceiling's strength is chosen on the data's own
    validation split when it has one (a sweep's carved slice is not one: the default then)."""
    from .data import DataError, load_samples
    from .evaluate import subsample

    if not evals:
        return None
    try:
        validation = subsample(load_samples(cfg.data, "validation", skip_bad=True).samples, cfg.eval_limit)
    except (DataError, OSError):
        validation = None
    return reference_rows(train, evals, backbone=backbone, validation=validation, backbone_revision=revision)


def reference_records(cfg, backbone, train: list[Sample], evals: dict[str, list[Sample]], run):
    """In a training run (medln.train), before the first step: the reference rows as "eval"
    records (which: blind, ceiling; `about` on the blind one); returns them (None: no run
    folder is written here, or nothing is scored)."""
    refs = run_references(cfg, backbone, train, evals, run.config()["revisions"]["backbone"]) if run else None
    if refs:
        yield {"event": "eval", "which": "blind", "metrics": refs["blind"], "about": refs["about"]}
        yield {"event": "eval", "which": "ceiling", "metrics": refs["ceiling"]}
    return refs


def _ceiling(out: dict, train, evals, backbone, validation) -> str:
    """Fill out["ceiling"]; return what it is, or "n/a: why"."""
    from .probe import FeatureCache, fit_probe, score_probe

    if backbone is None:
        return "n/a: no backbone given"
    if not hasattr(getattr(backbone.model, "config", None), "vision_feature_layer"):
        return f"n/a: the {backbone.family.name} family has no LLaVA-style vision_feature_layer to read"
    if not any(s.task == "vqa" for s in train):
        return "n/a: the train split has no question"
    features = FeatureCache(backbone)
    probe = fit_probe(backbone, train, validation=validation, features=features)
    out["ceiling"] = {split: score_probe(probe, samples, features) for split, samples in evals.items()}
    return probe.describe()


def _key(train, evals, backbone, validation, revision) -> str | None:
    from . import __version__
    from .revisions import samples_fingerprint

    if not revision or (revision.get("source") == "hub" and not revision.get("commit")):
        return None
    build = None
    if backbone is not None:
        build = {"family": backbone.family.name, "quant": backbone.quant, "dtype": str(backbone.dtype)}
    obj = {"format": FORMAT, "medln": __version__, "backbone": {k: v for k, v in revision.items() if k != "name"},
           "build": build, "train": samples_fingerprint(train),
           "validation": samples_fingerprint(validation) if validation else None,
           "evals": {split: samples_fingerprint(samples) for split, samples in sorted(evals.items())}}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _load(key: str | None) -> dict | None:
    if key is None:
        return None
    try:
        return json.loads((cache_folder() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or unreadable: computed again


def _save(key: str | None, rows: dict) -> None:
    from .storage import write_json_atomic

    if key is None:
        return
    try:
        cache_folder().mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_folder() / f"{key}.json", rows)
    except OSError:
        pass  # a read-only cache costs time, never the run


COLUMNS = ("base", "tuned", "blind", "ceiling")  # a run result's score dicts, {split: metrics} each
COLUMN_LABELS = {"base": "base", "tuned": "tuned", "blind": "image-blind", "ceiling": "probe ceiling"}
NO_PHRASING = "n/a (the records do not say which question wordings train holds)"


def score_table(result: dict, *, brief: bool = False) -> list[dict]:
    """A run's scores as rows: {split, phrasing ("all" / "seen" / "held-out"), metric, n, base,
    tuned, blind, ceiling} for every scored split, metric (METRICS' `table` ones, or `brief`)
    and, for VQA metrics, each kind of question phrasing its records say (none: no such row).
    `result`: a done record / eval.json (base, tuned, and blind / ceiling when computed)."""
    rows = []
    for split in result.get("tuned") or {}:
        scores = {c: (result.get(c) or {}).get(split) or {} for c in COLUMNS}
        kinds = [(kind, {c: (scores[c].get("by_phrasing") or {}).get(kind) or {} for c in COLUMNS})
                 for kind in PHRASINGS]
        kinds = [(kind, sub) for kind, sub in kinds if any(sub.values())]
        # one kind only (source-test asks every question in a seen wording): its rows would repeat "all"
        parts = [("all", scores), *(kinds if len(kinds) > 1 else [])]
        for part, got in parts:
            for m in METRICS.values():
                if not (m.brief if brief else m.table) or (part != "all" and m.task != "vqa"):
                    continue
                if all(got[c].get(m.name) is None for c in COLUMNS):
                    continue
                n = next((got[c][m.n_key] for c in COLUMNS if got[c].get(m.n_key) is not None), None)
                rows.append({"split": split, "phrasing": part, "metric": m.name, "n": n,
                             **{c: got[c].get(m.name) for c in COLUMNS}})
    return rows


def has_phrasing(result: dict) -> bool:
    """Whether any scored split's records say their questions' phrasing (else "n/a")."""
    return any((scores or {}).get("by_phrasing") for c in COLUMNS for scores in (result.get(c) or {}).values())


def for_split(refs: dict | None, split: str) -> dict:
    """{"blind": metrics | None, "ceiling": metrics | None} of one evaluation set."""
    refs = refs or {}
    return {"blind": (refs.get("blind") or {}).get(split), "ceiling": (refs.get("ceiling") or {}).get(split)}


__all__ = ["BLIND_RULE", "COLUMNS", "COLUMN_LABELS", "NO_PHRASING", "cache_folder", "for_split", "has_phrasing",
           "reference_records", "reference_rows", "run_references", "score_table"]
