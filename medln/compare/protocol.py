"""The data side of a fair comparison: a validation split for every dataset, and the
reference rows every comparison carries (the untuned base model, an image-blind baseline
that answers from the training questions alone, and the image-aware probe ceiling:
medln.references)."""

from __future__ import annotations

from .. import references
from ..config import ConfigError, TrainConfig
from ..data import DataError, load_samples
from ..evaluate import subsample

VALIDATION_FRACTION = 0.1  # of train's images, when a dataset has no validation split
VALIDATION_SEED = 0


def _image_key(sample) -> str:
    import hashlib

    image = sample.image
    return hashlib.sha1(image).hexdigest() if isinstance(image, (bytes, bytearray)) else str(image)


def split_validation(cfg: TrainConfig) -> tuple[list, list, dict]:
    """(train samples, validation samples, how validation was obtained).

    The dataset's own `validation` split when it has one; else a seeded slice of train, by
    image (all questions about one image stay on one side), which is then not trained on."""
    import random

    train = load_samples(cfg.data, cfg.split, skip_bad=cfg.skip_bad).samples
    try:
        val = load_samples(cfg.data, "validation", skip_bad=cfg.skip_bad).samples
    except DataError:
        val = []
    if val:
        return train, val, {"source": "own", "split": "validation", "n": len(val),
                            "text": "the dataset's own validation split"}
    keys = sorted({_image_key(s) for s in train})
    if len(keys) < 2:
        raise ConfigError(f"{cfg.data}: no validation split and too few training images ({len(keys)}) to carve one")
    held = set(random.Random(VALIDATION_SEED).sample(keys, max(1, round(len(keys) * VALIDATION_FRACTION))))
    val = [s for s in train if _image_key(s) in held]
    rest = [s for s in train if _image_key(s) not in held]
    return rest, val, {"source": "carved", "split": f"{cfg.split} slice", "n": len(val), "images": len(held),
                       "text": f"a seeded slice of train ({VALIDATION_FRACTION:.0%} of its images, seed "
                               f"{VALIDATION_SEED}), left out of training"}


def reference_rows(cfg: TrainConfig, train: list, bases: dict, extra_eval: dict | None, ood_key: str | None,
                   rows: list | tuple = ()) -> dict:
    """{"base": {"test", "ood"}, "blind": {"test", "ood", "fitted_on", "rule"}, "ceiling": {"test",
    "ood", "rule"}} for a sweep's target split (cfg.eval_split) and its out-of-domain set.

    The blind row and the probe ceiling are the ones the runs computed on the items they were
    scored on (medln.references, fitted on `train`: what the scopes trained on), taken from
    the first completed row; a sweep whose runner computed none (a stand-in runner) gets the
    blind row from the same function, on the same items, and the ceiling "n/a"."""
    out: dict = {}
    base = next(iter(bases.values()), None) if bases else None
    if base is not None:  # every scope's base scores (under 4-bit attn/ffn differ: the first is the plain one)
        out["base"] = {"test": base.get(cfg.eval_split), "ood": base.get(ood_key) if ood_key else None}
    if not cfg.eval_split:
        return out
    done = next((r for r in rows if r.get("blind") and not r.get("skipped")), None)
    if done is not None:
        got = {c: {"test": done.get(c), "ood": done.get(f"ood_{c}")} for c in ("blind", "ceiling")}
        about = done.get("references") or {}
    else:
        test = subsample(load_samples(cfg.data, cfg.eval_split, skip_bad=cfg.skip_bad).samples, cfg.eval_limit)
        ood = (extra_eval or {}).get(ood_key) if ood_key else None
        if ood is None and cfg.ood_split:
            try:
                ood = subsample(load_samples(cfg.data, cfg.ood_split, skip_bad=cfg.skip_bad).samples, cfg.eval_limit)
            except DataError:
                ood = None
        refs = references.reference_rows(train, {"test": test, **({"ood": ood} if ood else {})})
        got = {c: {"test": refs[c].get("test"), "ood": refs[c].get("ood")} for c in ("blind", "ceiling")}
        about = refs["about"]
    out["blind"] = {**got["blind"], "fitted_on": f"{cfg.split} ({about.get('fitted_on')})",
                    "rule": about.get("blind")}
    out["ceiling"] = {**got["ceiling"], "rule": about.get("ceiling") or "n/a: not computed"}
    return out
