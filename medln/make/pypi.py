"""The package's long description, docs/pypi.md, made from README.md (pyproject's `readme`):

    python -m medln.make.pypi          # after editing README.md; tests/test_make_pypi.py checks it is current

The README is also the Hugging Face Space's page, so it starts with the Space's front matter
(YAML between `---` lines) and links files of the repository by relative paths. A package index
shows neither well: the front matter would be printed as text, and relative links lead nowhere
there. This writes the README without the front matter, without maintainers' HTML comments,
with each relative link turned into its text (naming the file, in code, when the text does not),
and without relative images. Absolute links and code blocks stay as they are.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "README.md"
TARGET = REPO / "docs" / "pypi.md"
NOTE = "<!-- Made from README.md by `python -m medln.make.pypi`: edit README.md, then run that. -->\n"

_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n+", re.S)
_COMMENT = re.compile(r"<!--.*?-->\n?", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_ABSOLUTE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def _relink(line: str) -> str:
    def image(m: re.Match) -> str:
        return m.group(0) if _ABSOLUTE.match(m.group(2)) else ""

    def link(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        if _ABSOLUTE.match(target):
            return m.group(0)
        path = target.split("#")[0]
        if not path or text.strip("`") == path:  # an anchor in the page, or the path is the text
            return text if text.startswith("`") or not path else f"`{path}`"
        return f"{text} (`{path}`)"

    return _LINK.sub(link, _IMAGE.sub(image, line))


def render(readme: str) -> str:
    """README text -> the long description (see the module docstring)."""
    text = _COMMENT.sub("", _FRONT_MATTER.sub("", readme))
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        new = line if fenced else _relink(line)
        if new.strip() or not line.strip():  # a line that held only a relative image goes
            out.append(new)
    return NOTE + "\n".join(out).strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    TARGET.write_text(render(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
