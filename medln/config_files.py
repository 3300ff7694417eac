"""`--config FILE`: option values from a JSON or YAML file, for any command, checked against
that command's dataclass before argparse sees them (medln.config: the dataclasses are the
single source of truth), then flags given on the command line override them.

The file is a user's data (medln.userfiles): bounded, UTF-8, YAML through the safe loader
with no tags and a bounded expansion. Every key must be text and an option of *this*
command (an option of another command is named as such: `scopes` belongs to compare, not
train); every value must have the option's type. Text where a number belongs is read as
that number when it is one (YAML reads `lr: 1e-3` as text: YAML 1.1 floats need a dot).
A run's config.json holds its options under "config" and may be given as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import MISSING

from .config import ConfigError, aliases, bound_problems, type_problem
from .userfiles import FileError, load_file, short

MAX_CONFIG_BYTES = 1 * 2**20


def _options_of(parser: argparse.ArgumentParser | None) -> dict[str, type]:
    """command name -> its options dataclass, for every command of the top-level parser."""
    if parser is None:
        return {}
    subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if subs is None:
        return {}
    return {name: p._defaults["_options"] for name, p in subs.choices.items() if "_options" in p._defaults}


def _coerce(name: str, tp, value):
    """A number written as text ("1e-3", "12") becomes that number; anything else is checked as it is."""
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if isinstance(value, str) and base in (int, float):
        try:
            number = int(value) if base is int else float(value)
        except ValueError:
            return value  # type_problem names it
        if base is float and not math.isfinite(number):
            return value
        return number
    return value


def read_config_file(path: str, cls, *, command: str = "", parser: argparse.ArgumentParser | None = None) -> dict:
    """Option values for `cls` (a command's dataclass) from a JSON/YAML file, each key an
    option of this command and each value of the option's type; ConfigError naming the file
    and the option otherwise."""
    where = f"--config {path}"
    try:
        data = load_file(path, what="--config", max_bytes=MAX_CONFIG_BYTES)
    except FileError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of option names to values, got {short(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if isinstance(data.get("config"), dict) and "config" not in fields:  # a run folder's config.json
        data = data["config"]
    bad_key = next((k for k in data if not isinstance(k, str)), None)
    if bad_key is not None:
        raise ConfigError(f"{where}: option names must be text, got the key {short(bad_key)}")
    old = aliases(cls)  # old option names ("limit" for eval_limit) still work in files
    data = {k if k in fields else old.get(k, k): v for k, v in data.items()}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        owners = [name for name, other in _options_of(parser).items()
                  if key in {f.name for f in dataclasses.fields(other)}]
        this = f"`medln {command}`" if command else "this command"
        if owners:
            raise ConfigError(f"{where}: option {key!r} belongs to `medln {owners[0]}`"
                              f"{' (and others)' if len(owners) > 1 else ''}, not {this}")
        raise ConfigError(f"{where}: unknown option {short(key, 40)} for {this} (its options: "
                          f"{', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in data.items():
        value = _coerce(key, hints[key], value)
        problem = type_problem(key, hints[key], value)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Flags over --config values over the dataclass defaults; required options are checked
    last, since the file may hold them."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        args._parser.set_defaults(**read_config_file(args.config, args._options, command=getattr(args, "command", ""),
                                                     parser=parser))
        args = parser.parse_args(argv)
    options = getattr(args, "_options", None)
    missing = [f.name for f in dataclasses.fields(options) if f.default is MISSING and getattr(args, f.name) is None] \
        if options else []
    if missing:
        def name(m: str) -> str:
            meta = next(f for f in dataclasses.fields(options) if f.name == m).metadata
            return m.upper() if meta.get("positional") else meta.get("flag") or "--" + m.replace("_", "-")

        raise ConfigError(f"{args.command}: missing " + ", ".join(name(m) for m in missing))
    if options:  # every command's values, flags too, within its fields' types and bounds (ask, eval, ...)
        names = {f.name for f in dataclasses.fields(options)}
        problems = bound_problems(options(**{k: v for k, v in vars(args).items() if k in names}))
        if problems:
            raise ConfigError("invalid options: " + problems[0] if len(problems) == 1 else
                              "invalid options:\n  " + "\n  ".join(problems))
    return args
