"""The package's shape: no import cycles, no module past 400 lines, what the runtime and
`medln --help` import, the registries every family- and scope-keyed table follows, the
packaging metadata, the CLI built from the config dataclasses."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import tomllib

import pytest

from conftest import FAMILY_NAMES, REPO, run_cli


def medln_modules() -> dict[str, object]:
    """Dotted module name -> file, for every module of the medln package."""
    out = {}
    for f in sorted((REPO / "medln").rglob("*.py")):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the medln modules it imports, anywhere in the file (inside functions too).
    `from X import name` counts as an import of X.name when that is a module, else of X."""
    mods = medln_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, f in mods.items():
        package = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # medln.x.Thing -> medln.x
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_medln_modules():
    graph = import_graph()
    assert cycles(graph) == []
    # Nor between packages: medln.data, medln.ui, medln.compare, ... each taken as one node.
    top = {m: ".".join(m.split(".")[:2]) for m in graph}
    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        packages.setdefault(top[m], set()).update(top[t] for t in targets if top[t] != top[m])
    assert cycles(packages) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_longer_than_400_lines():
    lines = {m: len(f.read_text(encoding="utf-8").splitlines()) for m, f in medln_modules().items()}
    assert {m: n for m, n in lines.items() if n > 400} == {}


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """Spinning OpenMP threads made torch 6-9x slower on a shared CPU (medln/__init__.py):
    importing medln sets the passive policy before torch can load; a user's own value stays."""
    code = "import os, medln; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**env, **({"OMP_WAIT_POLICY": given} if given else {})})
        assert proc.stdout.strip() == expected, proc.stderr[-2000:]


def test_help_imports_no_builder():
    """`medln --help` (and every command's --help but the builders' own) stays light: no
    medln.make, no gradio, no torch."""
    code = ("import sys\nfrom medln.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('medln.make') or m.split('.')[0] in "
            "('gradio', 'torch', 'transformers')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow  # a fresh interpreter loading a model: end to end
def test_loading_a_backbone_imports_neither_gradio_nor_the_builders(tiny_model):
    """The core is usable without gradio, and asset builders (medln.make) never run at run time."""
    code = (
        "import sys, medln, medln.train, medln.models, medln.answers, medln.runs\n"
        f"from medln.backbones import load_backbone\nload_backbone({str(tiny_model('llava'))!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'gradio' or m.startswith('medln.make')"
        " or m.startswith('medln.ui'))\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_every_family_is_one_record_the_tables_follow():
    """A family's tiny checkpoint and benchmark input block live in its Family record; the
    checkpoint registry, the bench shapes and the test fixtures follow FAMILIES."""
    from medln.backbones import BACKBONES, FAMILIES, TinySpec
    from medln.bench.shapes import SHAPES

    assert all(isinstance(f.tiny, TinySpec) and f.tiny.build_config and f.tiny.build_processor
               for f in FAMILIES.values())
    # bench has real shapes of the decoder families only (no BLIP shape): each has its image block
    assert all(FAMILIES[s.family].image_block is not None for s in SHAPES.values())
    assert set(FAMILY_NAMES) == set(FAMILIES)  # the test fixtures build a tiny model of each
    assert {b.family for b in BACKBONES} <= set(FAMILIES)


def test_every_scope_is_one_registry_line():
    """Scopes are data: a method from METHODS and targets every family can resolve."""
    from medln.backbones import FAMILIES
    from medln.methods import METHODS, SCOPES

    for scope in SCOPES:
        assert METHODS[scope.kind] is scope.method, scope
        for family in FAMILIES.values():
            for target in scope.targets:
                assert target in family.parts or target in family.projections, (scope.name, family.name, target)


def test_pyproject_lists_every_package_and_ships_the_assets():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setup = project["tool"]["setuptools"]
    packages = {".".join(p.relative_to(REPO).parts[:-1]) for p in (REPO / "medln").rglob("__init__.py")}
    assert packages | {"medln.assets"} == set(setup["packages"])
    assert setup["package-dir"]["medln.assets"] == "assets"
    assert project["project"]["scripts"]["medln"] == "medln.__main__:main"
    assert (REPO / "medln" / "py.typed").is_file()
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text()


def test_dependencies_are_tested_ranges_and_the_lock_sits_inside_them():
    """pyproject declares ranges (a lower bound each: what .ci/lowest installs); requirements.txt
    pins each core dependency and the app's gradio at one version inside its range (.ci/run)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "dependencies" not in project.get("dynamic", [])
    core = [Requirement(r) for r in project["dependencies"]]
    app = [Requirement(r) for r in project["optional-dependencies"]["app"]]
    assert set(project["optional-dependencies"]) == {"app", "ray", "trackers", "dev"}
    for r in core + app:
        assert any(s.operator == ">=" for s in r.specifier), f"{r}: no lower bound"
        assert not any(s.operator in ("==", "===") for s in r.specifier), f"{r}: an exact pin"
    names = {canonicalize_name(r.name) for r in core}
    assert not names & {"gradio", "pycocotools", "pytest", "playwright"}  # app, never imported, dev
    lock = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version
    assert set(lock) == names | {canonicalize_name(r.name) for r in app}
    for r in core + app:
        assert r.specifier.contains(lock[canonicalize_name(r.name)], prereleases=True), f"the lock's {r.name} is outside {r}"


def test_every_command_option_comes_from_a_dataclass():
    """--help shows each field with its help and default; booleans have --x and --no-x."""
    from medln.config import TrainArgs

    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for f in dataclasses.fields(TrainArgs):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        if f.type in (bool, "bool"):
            assert "--no-" + f.name.replace("_", "-") in text
    assert "(default: 200)" in text and "--config FILE" in text


def test_a_saved_config_replays_exactly(tiny_model, dataset, tmp_path):
    """`train --config RUN/config.json` trains the same config; flags override the file."""
    first = tmp_path / "a"
    args = ["--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--steps", 1, "--batch-size", 2,
            "--lr", 0.01, "--eval-split", "", "--ood-split", "", "--no-skip-bad", "--seed", 3]
    proc = run_cli("train", *args, "--out", first)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((first / "config.json").read_text())["config"]
    proc = run_cli("train", "--config", first / "config.json", "--out", tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"] == saved
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"backbone: {tiny_model('llava')}\ndata: jsonl:{dataset}\nsteps: 5\nbogus: 1\n")
    proc = run_cli("train", "--config", yaml_file, "--out", tmp_path / "c")
    assert proc.returncode == 2 and "unknown option 'bogus' for `medln train`" in proc.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not os.environ.get("MEDLN_TEST_INSTALL"), reason="slow: set MEDLN_TEST_INSTALL=1")
def test_pip_install_gives_a_working_medln_command(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-build-isolation", REPO], check=True)
    proc = subprocess.run([venv / "bin" / "medln", "scopes", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["name"] == "ln"


def test_docs_design_lists_every_module_in_one_line():
    """docs/design.md's module list is the tree: every module of medln once, nothing that is gone."""
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("medln/") and line.split()[0].endswith(".py")]
    described = [line for line in text.splitlines() if line.startswith("medln/") and line.split()[0].endswith(".py")
                 and len(line.split()) > 1]
    tree = sorted(str(f.relative_to(REPO)) for f in medln_modules().values())
    assert sorted(listed) == tree, (set(tree) - set(listed), set(listed) - set(tree))
    assert len(described) == len(listed)  # each with its one-line description


def test_readme_is_short_and_every_relative_link_in_it_and_docs_resolves():
    """README.md at most 220 lines (the rest is in docs/, linked); no link to a moved file."""
    import re

    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 220
    broken = []
    for page in [readme, *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z][a-z0-9+.-]*:", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_readme_commands_parse_with_the_options_each_command_lists():
    """Every `medln ...` line of the README's code blocks parses, with the names --help shows
    (not a hidden old spelling), names only bundled files that exist, and the test command is
    the one CI runs."""
    import argparse
    import re
    import shlex

    from medln.__main__ import build_parser

    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S)).replace("\\\n", " ")
    lines = [re.sub(r"\s#.*$", "", line).strip() for line in blocks.splitlines()]
    commands = [shlex.split(part.strip())[1:] for line in lines for part in line.split("&&")
                if part.strip().startswith("medln ")]
    assert len(commands) >= 12, commands
    for argv in commands:
        if argv == ["--version"]:
            continue
        parser = build_parser(argv)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[argv[0]]
        shown = {s for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        assert {a for a in argv if a.startswith("--")} <= shown, argv
        parser.parse_args(argv)  # SystemExit (a usage error) fails the test
        assert all((REPO / a).exists() for a in argv if a.startswith("assets/")), argv
    assert "python -m pytest -q" in text and "python -m pytest -q" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
