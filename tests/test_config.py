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


# ------------------------------------------------------------- one name per option, old names hidden


def _visible_flags(command: str) -> dict[str, str]:
    """flag -> dest of what `medln COMMAND --help` lists."""
    import argparse

    from medln.__main__ import build_parser

    sub = next(a for a in build_parser([command])._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a.dest for a in sub.choices[command]._actions if a.help != argparse.SUPPRESS
            for s in a.option_strings if s.startswith("--")}


def test_an_option_has_one_name_across_commands():
    flags = {c: _visible_flags(c) for c in ("train", "compare", "eval", "ask", "params", "bench", "score", "inspect",
                                            "merge", "push", "backbones", "scopes", "app")}
    names: dict[str, set[str]] = {}  # dest -> the flags that set it, over every command
    for command_flags in flags.values():
        for flag, dest in command_flags.items():
            if not flag.startswith("--no-"):
                names.setdefault(dest, set()).add(flag)
    assert {d: f for d, f in names.items() if len(f) > 1} == {}
    # the concepts that had two names: the scoring limit and batch, gradient checkpointing
    assert {"--eval-limit", "--eval-batch-size"} <= set(flags["eval"]) & set(flags["train"]) & set(flags["compare"])
    assert "--grad-checkpointing" in flags["bench"] and "--grad-checkpointing" in flags["train"]
    assert not {"--limit", "--batch-size"} & set(flags["eval"]) and "--grad-ckpt" not in flags["bench"]
    # the predictions file: eval writes it, score reads it
    assert flags["eval"]["--predictions"] == flags["score"]["--predictions"] == "predictions"
    assert not {"--pred", "--ref"} & set(flags["score"])


def test_old_names_still_work_hidden(tmp_path):
    import json

    from medln.__main__ import build_parser
    from medln.config_files import parse_command_line

    def parse(*argv):
        argv = [str(a) for a in argv]
        return parse_command_line(build_parser(argv), argv)

    args = parse("eval", "--limit", 2, "--batch-size", 3)
    assert (args.eval_limit, args.eval_batch_size) == (2, 3)
    from medln.config import EVAL_LIMIT

    assert (parse("eval").eval_limit, parse("eval").eval_batch_size) == (EVAL_LIMIT, 16)  # the aliases set no default
    assert parse("eval", "--eval-limit", 5).eval_limit == 5
    file = tmp_path / "eval.json"
    file.write_text(json.dumps({"limit": 7, "batch_size": 4}))  # an old --config file
    args = parse("eval", "--config", file)
    assert (args.eval_limit, args.eval_batch_size) == (7, 4)
    assert parse("bench", "--grad-ckpt").grad_ckpt is True and parse("bench", "--no-grad-ckpt").grad_ckpt is False
    assert parse("bench", "--grad-checkpointing").grad_ckpt is True and parse("bench").grad_ckpt is False
    args = parse("score", "--task", "vqa", "--pred", "p.jsonl", "--ref", "r.jsonl")
    assert (args.predictions, args.references) == ("p.jsonl", "r.jsonl")


def test_the_batch_defaults_to_the_one_the_backbones_budget_was_measured_with(monkeypatch):
    from medln.__main__ import build_parser
    from medln.backbones import BACKBONES_BY_NAME
    from medln.compare.options import CompareConfig
    from medln.config import from_args
    from medln.config_files import parse_command_line
    from medln.methods import default_batch, default_lr

    tiny, med = BACKBONES_BY_NAME["medln-tiny"], BACKBONES_BY_NAME["llava-med-v1.5-7b"]
    monkeypatch.setitem(BACKBONES_BY_NAME, "medln-tiny", dataclasses.replace(tiny, batch_size=32))
    monkeypatch.setitem(BACKBONES_BY_NAME, med.name, dataclasses.replace(med, batch_size=2, lrs={"ln": 0.01}))
    assert default_batch("medln-tiny") == 32 and TrainConfig().batch_size == 32  # resolved, so runs record it
    assert TrainConfig(batch_size=4).batch_size == 4  # an explicit batch wins
    assert TrainConfig.from_dict({"backbone": "medln-tiny", "batch_size": None}).batch_size == 32
    assert CompareConfig(out="o").batch_size == 32  # a sweep records the batch its cells train with
    # the registry entry however `resolve` is given it: name or hub id, with or without a revision
    for arg in (med.name, med.hub_id, f"{med.hub_id}@main", f"{med.name}@main"):
        assert (default_batch(arg), TrainConfig(backbone=arg).batch_size, default_lr(arg, "ln")) == (2, 2, 0.01)
    for other in ("owner/some-model", "/models/local", "/models/x@y"):  # no measured budget: the generic 8
        assert TrainConfig(backbone=other).batch_size == default_batch(other) == 8
    for command in ("train", "compare"):  # the CLI's default is the backbone's, not a fixed number
        for backbone, batch in (("medln-tiny", 32), (med.name, 2)):
            argv = [command, "--backbone", backbone] + (["--out", "o"] if command == "compare" else [])
            args = parse_command_line(build_parser(argv), argv)
            cfg = from_args(args, CompareConfig if command == "compare" else TrainConfig)
            assert cfg.batch_size == batch, (command, backbone)
