"""The package's shape: what the runtime imports, the family registry every family-keyed
table follows, the packaging metadata, the CLI built from the config dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tomllib

import pytest

from conftest import FAMILY_NAMES, REPO, run_cli


def test_loading_a_backbone_imports_neither_gradio_nor_the_builders(tiny_model):
    """The core is usable without gradio, and asset builders (medln.make) never run at run time."""
    code = (
        "import sys, medln, medln.train, medln.serve, medln.runs\n"
        f"from medln.backbones import load_backbone\nload_backbone({str(tiny_model('llava'))!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'gradio' or m.startswith('medln.make')"
        " or m.startswith('medln.ui'))\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_family_keyed_tables_follow_the_family_registry():
    from medln.backbones import BACKBONES, FAMILIES
    from medln.bench.inputs import IMAGE_BLOCKS
    from medln.bench.shapes import SHAPES
    from medln.make.tiny import TINY_SPECS

    assert set(TINY_SPECS) == set(FAMILIES)
    # bench has real shapes of the decoder families only (no BLIP shape): each has its image block
    assert {s.family for s in SHAPES.values()} <= set(IMAGE_BLOCKS) <= set(FAMILIES)
    assert set(FAMILY_NAMES) == set(FAMILIES)  # the test fixtures build a tiny model of each
    assert {b.family for b in BACKBONES} <= set(FAMILIES)


def test_every_scope_is_one_registry_line():
    """Scopes are data: a kind from KINDS and targets every family can resolve."""
    from medln.backbones import FAMILIES
    from medln.scopes import KINDS, SCOPES

    for scope in SCOPES:
        assert scope.kind in KINDS, scope
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
    assert proc.returncode == 2 and "unknown options bogus" in proc.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not os.environ.get("MEDLN_TEST_INSTALL"), reason="slow: set MEDLN_TEST_INSTALL=1")
def test_pip_install_gives_a_working_medln_command(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-build-isolation", REPO], check=True)
    proc = subprocess.run([venv / "bin" / "medln", "scopes", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["name"] == "ln"
