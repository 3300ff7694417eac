"""Files a user hands over are data, never trusted: a --config file, an earlier sweep's
results.json (--lrs-from), a run folder's config.json and inspect.json, an adapter's
adapter_config.json. Each is read here into plain values, bounded before it is parsed, and
then checked field by field, so that every refusal is one line naming the file, the field
and what was expected (never a traceback, never a whole echoed value).

- `read_text`: a regular file, at most `max_bytes`, UTF-8 (the first bad byte's offset named).
- `load_json` / `load_yaml` / `load_file` (by suffix): YAML through PyYAML's SafeLoader only,
  with no explicit tags at all (`!!python/...`, `!!binary`, custom `!tags`: refused), and the
  document's size *as expanded* bounded before it is built: aliases may repeat a node, so a
  200-byte "billion laughs" file would expand to gigabytes; its node graph is measured
  first (shared nodes counted once per use, in time linear in the file) and refused.
- `Record`: a mapping read field by field (`rec.get("tuning.scopes", dict)`, dotted paths
  named in every message); `check` is the same test for one value.
- `short`: a value as echoed in a message: its repr, cut to a few dozen characters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

MAX_BYTES = 8 * 2**20  # a user's JSON/YAML file: options, a sweep's results, a run's records
MAX_NODES = 100_000  # values in one document once YAML aliases are expanded
MAX_CHARS = 4 * 2**20  # characters of its scalars once expanded
MISSING = object()


class FileError(ValueError):
    """A user's file cannot be used as it is; the message names the file, the field and why."""


def short(value, limit: int = 60) -> str:
    """repr(value), at most `limit` characters (a huge value is never echoed whole)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"… ({len(value):,} characters)"
    if isinstance(value, (list, tuple, dict)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# ------------------------------------------------------------------ reading and parsing


def read_text(path: str | Path, *, what: str = "", max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file no larger than `max_bytes`."""
    path = Path(path)
    where = f"{what} {path}".strip()
    try:
        if not path.exists():
            raise FileError(f"{where}: no such file")
        if not path.is_file():
            raise FileError(f"{where}: not a regular file (a folder or a device)")
        size = path.stat().st_size
        if size > max_bytes:
            raise FileError(f"{where}: too large ({size:,} bytes; the limit is {max_bytes:,})")
        raw = path.read_bytes()[: max_bytes + 1]
    except OSError as e:
        raise FileError(f"{where}: cannot read it ({e.strerror or type(e).__name__})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def load_json(path: str | Path, *, what: str = "", max_bytes: int = MAX_BYTES):
    where = f"{what} {path}".strip()
    text = read_text(path, what=what, max_bytes=max_bytes)

    def no_constant(name):  # NaN / Infinity are not JSON
        raise ValueError(f"{name} is not a JSON value")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise FileError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise FileError(f"{where}: not usable JSON (nested too deeply)") from None
    except ValueError as e:  # NaN, or an integer with more digits than Python converts
        raise FileError(f"{where}: not valid JSON ({str(e).splitlines()[0][:120]})") from None


def load_yaml(path: str | Path, *, what: str = "", max_bytes: int = MAX_BYTES):
    """A YAML document as plain values: safe constructors only, no tags, bounded expansion."""
    import yaml

    where = f"{what} {path}".strip()
    text = read_text(path, what=what, max_bytes=max_bytes)
    loader = yaml.SafeLoader(text)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!":  # an explicit tag (`!` alone means "plain string")
                raise FileError(f"{where}: YAML tag {short(tag, 40)} at line {event.start_mark.line + 1}: tags are "
                                "not accepted (plain values only)")
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FileError(f"{where}: not valid YAML{at}: {short(problem, 100).strip(chr(39))}") from None
    except RecursionError:
        raise FileError(f"{where}: not usable YAML (nested too deeply)") from None
    finally:
        loader.dispose()


def _check_expansion(root, where: str) -> None:
    """Refuse a node graph whose expansion (aliases repeated) exceeds MAX_NODES values or
    MAX_CHARS characters, or that refers to itself. Each distinct node is measured once."""
    import yaml

    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()

    def measure(node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise FileError(f"{where}: a YAML alias refers to the value that contains it (a recursive structure)")
        if isinstance(node, yaml.ScalarNode):
            size = (1, len(node.value))
        else:
            open_nodes.add(key)
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
            counted = [measure(c) for c in children]
            open_nodes.discard(key)
            size = (1 + sum(n for n, _ in counted), sum(c for _, c in counted))
        if size[0] > MAX_NODES or size[1] > MAX_CHARS:
            raise FileError(f"{where}: the YAML document expands to more than {MAX_NODES:,} values or {MAX_CHARS:,} "
                            "characters (aliases repeat values): refused before building it")
        sizes[key] = size
        return size

    measure(root)


def load_file(path: str | Path, *, what: str = "", max_bytes: int = MAX_BYTES):
    """JSON, or YAML for a .yaml / .yml file."""
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return load_yaml(path, what=what, max_bytes=max_bytes)
    return load_json(path, what=what, max_bytes=max_bytes)


# ------------------------------------------------------------------ checking values

KINDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
         dict: "a mapping", type(None): "null"}


def kind_of(value) -> str:
    return KINDS.get(type(value), type(value).__name__)


def check(value, expect, where: str, *, lo=None, hi=None, choices=None, max_len: int | None = None,
          items=None, optional: bool = False):
    """`value` if it is of kind `expect` (str, int, float, bool, list, dict) within the bounds,
    else a FileError naming `where` ("FILE: field 'a.b'"). float accepts whole numbers; bool is
    never a number; `items`: the kind of a list's items."""
    if value is None and optional:
        return None
    ok = isinstance(value, expect) and not (expect in (int, float) and isinstance(value, bool))
    if expect is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if ok and expect is float and not math.isfinite(value):
        ok = False
    if not ok:
        raise FileError(f"{where}: expected {KINDS.get(expect, expect.__name__)}"
                        f"{' or null' if optional else ''}, got {short(value)}")
    if choices is not None and value not in choices:
        raise FileError(f"{where}: expected one of {', '.join(map(str, choices))}, got {short(value)}")
    if lo is not None and value < lo:
        raise FileError(f"{where}: must be >= {lo}, got {short(value)}")
    if hi is not None and value > hi:
        raise FileError(f"{where}: must be <= {hi}, got {short(value)}")
    if max_len is not None and len(value) > max_len:
        raise FileError(f"{where}: at most {max_len:,} {'characters' if expect is str else 'items'}, got {len(value):,}")
    if items is not None:
        for i, item in enumerate(value):  # "f: field 'a.b'" -> "f: field 'a.b[3]'"
            check(item, items, where[:-1] + f"[{i}]'" if where.endswith("'") else f"{where}[{i}]")
    return value


class Record:
    """A mapping from a user's file, read field by field: every refusal names the file and
    the dotted path of the field (`results.json: field 'tuning.scopes.ln.chosen': ...`)."""

    def __init__(self, data, file: str, path: str = ""):
        self.file, self.path = str(file), path
        if not isinstance(data, dict):
            raise FileError(f"{self._where()}: expected a mapping (JSON object), got {kind_of(data)}")
        bad = next((k for k in data if not isinstance(k, str)), MISSING)
        if bad is not MISSING:
            raise FileError(f"{self._where()}: keys must be text, got {short(bad)}")
        self.data = data

    def _where(self, key: str | None = None) -> str:
        key = key if key is None or len(key) <= 60 else key[:60] + "…"  # a crafted key is not echoed whole
        path = ".".join(p for p in (self.path, key) if p)
        return f"{self.file}: field {path!r}" if path else self.file

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self):
        return self.data.keys()

    def get(self, key: str, expect, default=MISSING, **rules):
        """The field's value checked by `check` (rules: lo, hi, choices, max_len, items,
        optional); a missing field is `default`, or refused when there is none."""
        if key not in self.data:
            if default is MISSING:
                raise FileError(f"{self._where(key)}: missing")
            return default
        return check(self.data[key], expect, self._where(key), **rules)

    def sub(self, key: str, *, optional: bool = False) -> "Record | None":
        """A nested mapping as a Record (None when optional and missing or null)."""
        value = self.data.get(key)
        if value is None and optional:
            return None
        if key not in self.data:
            raise FileError(f"{self._where(key)}: missing")
        return Record(value, self.file, ".".join(p for p in (self.path, key if len(key) <= 60 else key[:60] + "…") if p))

    def fail(self, key: str | None, problem: str):
        raise FileError(f"{self._where(key)}: {problem}")


def read_record(path: str | Path, *, what: str = "", max_bytes: int = MAX_BYTES) -> Record:
    """A JSON/YAML file whose top level must be a mapping."""
    return Record(load_file(path, what=what, max_bytes=max_bytes), f"{what} {path}".strip())
