"""medln.config: one range per numeric field, enforced by validate() for the CLI, the app and
the API alike (what /finetune once received: the whole dataset in one batch)."""

from __future__ import annotations

import dataclasses

import pytest

from medln.config import ConfigError, TrainConfig, bounds


def test_every_numeric_field_has_one_range_that_validate_enforces():
    bounded = [f for f in dataclasses.fields(TrainConfig) if "min" in f.metadata]
    assert {"steps", "batch_size", "lr", "seed", "max_length", "lora_r", "eval_limit"} <= {f.name for f in bounded}
    for f in bounded:
        b = bounds(f.name)
        over = b["max"] * 10 if isinstance(b["max"], int) else b["max"] + 1
        with pytest.raises(ConfigError, match=rf"{f.name}: must be <=? ?{b['max']}"):
            TrainConfig(**{f.name: over}).validate()
        under = b["min"] - 1
        with pytest.raises(ConfigError, match=rf"{f.name}: must be >=? ?{b['min']}"):
            TrainConfig(**{f.name: under}).validate()
    # what /finetune received before: the whole dataset in one batch, a worker held forever
    with pytest.raises(ConfigError, match="batch_size: must be <= 512"):
        TrainConfig(batch_size=1_000_000).validate()
    with pytest.raises(ConfigError, match="steps: must be <= 100000"):
        TrainConfig(steps=1_000_000_000).validate()
    for bad in ("12", 1.5, True, float("nan")):
        with pytest.raises(ConfigError, match="steps: must be a whole number"):
            TrainConfig(steps=bad).validate()
