"""The app's settings under bad input (issue 25): every MEDLN_* variable is checked at start
and a bad one is one line naming it (exit 2, nothing started); a visitor's backbone is a
registry name or a Hub id, a local folder only under MEDLN_MODELS_ROOT, and the refusal is
the same sentence whether or not such a path exists."""

from __future__ import annotations


import pytest

from conftest import assert_one_line_error, run_cli
from medln.config import ConfigError
from medln.ui.settings import Settings, SettingsError, check_environment


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("mine")
    return path


@pytest.mark.parametrize("name, value, needle", [
    ("MEDLN_RUNS", "{afile}", "MEDLN_RUNS='{afile}': it is a file, not a folder"),
    ("MEDLN_RUNS", "{afile}/sub", "is a file, not a folder"),
    ("MEDLN_CACHE", "{afile}", "MEDLN_CACHE='{afile}': it is a file"),
    ("MEDLN_MODELS_ROOT", "{afile}/none", "MEDLN_MODELS_ROOT"),
    ("MEDLN_QUEUE_SIZE", "abc", "MEDLN_QUEUE_SIZE='abc': expected a whole number"),
    ("MEDLN_QUEUE_SIZE", "0", "MEDLN_QUEUE_SIZE='0': expected a value between 1 and 10000"),
    ("MEDLN_MAX_UPLOAD_MB", "1e99", "MEDLN_MAX_UPLOAD_MB"),
    ("MEDLN_MAX_MODEL_GB", "nan", "MEDLN_MAX_MODEL_GB='nan'"),
    ("MEDLN_JOB_MEMORY_GB", "-1", "MEDLN_JOB_MEMORY_GB='-1'"),
    ("MEDLN_ZEROGPU_MAX_S", "5", "MEDLN_ZEROGPU_MAX_S='5'"),
    ("MEDLN_LOG", "verbose", "MEDLN_LOG='verbose': expected one of DEBUG"),
    ("MEDLN_SECRET", "short", "MEDLN_SECRET: at least 16 characters"),
    ("MEDLN_BACKBONE", "x" * 100_000, "MEDLN_BACKBONE: at most 1,024 characters, got 100,000"),
    ("MEDLN_BACKBONE", "no such model", "MEDLN_BACKBONE: unknown backbone"),
])
def test_bad_settings_are_named(name, value, needle, afile):
    value, needle = value.format(afile=afile), needle.format(afile=afile)
    with pytest.raises(SettingsError) as e:
        check_environment({name: value})
    assert needle in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400
    assert afile.read_text() == "mine"


def test_good_settings_pass(tmp_path):
    check_environment({"MEDLN_RUNS": str(tmp_path / "new" / "runs"), "MEDLN_QUEUE_SIZE": " 4 ", "MEDLN_LOG": "debug",
                       "MEDLN_MODELS_ROOT": str(tmp_path), "MEDLN_MAX_MODEL_GB": "0", "MEDLN_BACKBONE": "medln-tiny"})
    assert (tmp_path / "new" / "runs").is_dir()


@pytest.mark.slow  # two app starts in fresh interpreters: end to end
def test_app_start_refuses_a_runs_root_that_is_a_file(afile):
    """`medln app` and app.py: one line, exit 2, nothing listening (it failed with FileExistsError)."""
    proc = run_cli("app", "--port", "9", env={"MEDLN_RUNS": str(afile)}, timeout=120)
    assert_one_line_error(proc, "MEDLN_RUNS=", "is a file, not a folder")
    proc = run_cli("app", env={"MEDLN_QUEUE_SIZE": "many"}, timeout=120)
    assert_one_line_error(proc, "MEDLN_QUEUE_SIZE='many'")
    assert afile.read_text() == "mine"


# ------------------------------------------------------------------ the backbone a visitor names

def settings(tmp_path, models_root=None) -> Settings:
    return Settings(runs_root=tmp_path / "runs", default_backbone="medln-tiny", models_root=models_root)


@pytest.mark.parametrize("value", ["medln-tiny", " medln-tiny ", "owner/model", "owner/model@v1.0"])
def test_registry_names_and_hub_ids_are_taken(value, tmp_path):
    assert settings(tmp_path).app_backbone(value) == value.strip()


def test_server_paths_are_refused_alike(tmp_path, tiny_model):
    """Existing and missing paths get the same sentence: the field is no probe of the server."""
    s = settings(tmp_path)
    refusals = set()
    for value in ("../../../../etc", "/etc", "/no/such/folder", "../../../../no-such", str(tiny_model("llava")),
                  "~", "~/x", "./medln", "medln/ui", "a/../b", ".hidden/x"):
        with pytest.raises(ConfigError) as e:
            s.app_backbone(value)
        message = str(e.value)
        assert message.startswith("backbone: ") and "this server takes no local folders" in message
        assert "exist" not in message and "config.json" not in message and "folder but" not in message
        refusals.add(message.replace(repr(value.strip()), "X"))
    assert len(refusals) == 1, refusals


@pytest.mark.parametrize("value, needle", [
    ("x" * 100_000, "backbone: at most 1,024 characters, got 100,000"),
    ("", "backbone: choose one"),
    (None, "backbone: choose one"),
    (12, "backbone: choose one"),
])
def test_backbone_field_bounds(value, needle, tmp_path):
    with pytest.raises(ConfigError, match=needle):
        settings(tmp_path).app_backbone(value)


def test_models_root_allows_only_folders_inside(tmp_path):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    s = settings(tmp_path, models_root=root.resolve())
    assert s.app_backbone("mine") == str((root / "mine").resolve())
    assert s.app_backbone(str(root / "mine")) == str((root / "mine").resolve())
    for value in ("escape", "../outside", str(tmp_path / "outside"), "mine/../../outside", "/etc"):
        with pytest.raises(ConfigError, match="a local folder only under the server's models folder"):
            s.app_backbone(value)


def test_models_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLN_MODELS_ROOT", str(tmp_path))
    s = Settings.from_env(runs_root=tmp_path / "runs", secret="x" * 32)
    assert s.models_root == tmp_path.resolve()
    monkeypatch.delenv("MEDLN_MODELS_ROOT")
    assert Settings.from_env(runs_root=tmp_path / "runs", secret="x" * 32).models_root is None


def test_the_forms_use_the_gate(tmp_path):
    """The Fine-tune and Compare forms, /finetune and the parameter views all go through it."""
    from medln.ui import finetune as ft
    from medln.ui.uploads import DataChoice

    s = settings(tmp_path)
    with pytest.raises(ConfigError, match="not accepted here"):
        ft.build_config(ft.config_fields("../../../../etc", "ln", False, 1, None, 1, 1, 0), DataChoice("sample"), s)
    rows, summary, _, ok = ft.param_view("../../../../etc", "ln", False, s)
    assert rows == [] and not ok and "not accepted here" in summary and "config.json" not in summary
    assert ft.build_config(ft.config_fields("medln-tiny", "ln", False, 1, None, 1, 1, 0), DataChoice("sample"),
                           s).backbone == "medln-tiny"
