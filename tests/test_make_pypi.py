"""medln.make.pypi: the package's long description is the README without the Space's front
matter, maintainers' comments and relative links, and docs/pypi.md is what it makes now."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO
from medln.make.pypi import render


def test_the_long_description_is_current_and_is_what_pyproject_ships():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shipped = (REPO / "docs" / "pypi.md").read_text(encoding="utf-8")
    assert shipped == render(readme), "README.md changed: run `python -m medln.make.pypi`"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["readme"] == {"file": "docs/pypi.md", "content-type": "text/markdown"}
    assert readme.startswith("---\ntitle: MedLN\n")  # the Space keeps its front matter
    body = shipped.split("\n", 1)[1]  # after the note saying how it was made
    assert body.startswith("# MedLN") and "sdk: gradio" not in body and "<!--" not in body
    targets = re.findall(r"\]\(([^)]+)\)", re.sub(r"```.*?```", "", shipped, flags=re.S))
    assert targets and all(re.match(r"https?://", t) for t in targets), targets  # only absolute links remain


def test_render_rules():
    readme = ("---\ntitle: X\nsdk: gradio\n---\n\n# X\n\n<!-- for the maintainers\nonly -->\n"
              "See [docs/cli.md](docs/cli.md), [the options](docs/cli.md#precision), [below](#your-own-data)\n"
              "and [the paper](https://arxiv.org/abs/2404.16385).\n![shot](docs/screenshots/a.png)\n"
              "![badge](https://img.shields.io/x.svg)\n```bash\nmedln train  # [not](a/link)\n```\n")
    assert render(readme).split("\n", 1)[1] == (
        "# X\n\nSee `docs/cli.md`, the options (`docs/cli.md`), below\n"
        "and [the paper](https://arxiv.org/abs/2404.16385).\n![badge](https://img.shields.io/x.svg)\n"
        "```bash\nmedln train  # [not](a/link)\n```\n")
