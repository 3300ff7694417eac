"""The data side of a fair comparison: a validation split for every dataset, and the
reference rows every comparison carries (the untuned base model, and an image-blind
baseline that answers from the training questions alone, medln.baselines)."""

from __future__ import annotations

from ..baselines import fit_blind, score_blind
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


def reference_rows(cfg: TrainConfig, train: list, bases: dict, extra_eval: dict | None, ood_key: str | None) -> dict:
    """{"base": {"test", "ood"}, "blind": {"test", "ood", "fitted_on", "rule"}} for a sweep's
    target split (cfg.eval_split) and its out-of-domain set. The blind baseline is fitted on
    `train` (what the scopes trained on) and never reads an image."""
    out: dict = {}
    base = next(iter(bases.values()), None) if bases else None
    if base is not None:  # every scope's base scores (under 4-bit attn/ffn differ: the first is the plain one)
        out["base"] = {"test": base.get(cfg.eval_split), "ood": base.get(ood_key) if ood_key else None}
    if not cfg.eval_split:
        return out
    blind = fit_blind(train)
    test = subsample(load_samples(cfg.data, cfg.eval_split, skip_bad=cfg.skip_bad).samples, cfg.eval_limit)
    ood = (extra_eval or {}).get(ood_key) if ood_key else None
    if ood is None and cfg.ood_split:
        try:
            ood = subsample(load_samples(cfg.data, cfg.ood_split, skip_bad=cfg.skip_bad).samples, cfg.eval_limit)
        except DataError:
            ood = None
    out["blind"] = {"test": score_blind(blind, test), "ood": score_blind(blind, ood) if ood else None,
                    "fitted_on": f"{cfg.split} ({blind.n_train} questions, {blind.n_train_reports} reports)",
                    "rule": "most frequent train answer per normalised question (backing off to its question type), "
                            "most frequent train report; no image is read"}
    return out
