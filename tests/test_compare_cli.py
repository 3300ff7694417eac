"""`medln compare` under bad input (issue 25): every option is checked before anything is
built from it (a seed list, a grid) or loaded; --lrs-from files are data; --out is new or
empty. Each refusal is one line, exit 2, and nothing is written."""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_one_line_error, run_cli, tree


@pytest.fixture
def sweep_args(tiny_model, dataset, tmp_path):
    return ["compare", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}", "--scopes", "ln",
            "--steps", "1", "--out", tmp_path / "out"]


@pytest.mark.parametrize("flags, needle", [
    (["--seeds", "1000000000"], "seeds: must be <= 100, got 1000000000"),
    (["--seeds", "0"], "seeds: must be >= 1, got 0"),
    (["--seeds", "-2"], "seeds: must be >= 1, got -2"),
    (["--seed", str(2**32 - 1), "--seeds", "2"], "runs past the largest seed"),
    (["--grid-cap", "0"], "grid_cap: must be >= 1, got 0"),
    (["--grid-points", "0"], "grid_points: must be >= 1, got 0"),
    (["--grid-points", "5", "--grid-cap", "3"], "grid_cap: must be >= grid_points (5), got 3"),
    (["--scopes", "ln,,nope"], "unknown scope 'nope'"),
    (["--scopes", ","], "no scopes given"),
    (["--scopes", "x" * 100_000], "scopes: at most 4,096 characters, got 100,000"),
])
def test_options_are_checked_before_anything_is_built(flags, needle, sweep_args, tmp_path):
    t0 = time.perf_counter()
    line = assert_one_line_error(run_cli(*sweep_args, *flags), needle)
    assert time.perf_counter() - t0 < 60 and len(line) < 600  # no billion-seed list, no echoed 100,000 characters
    assert not (tmp_path / "out").exists()


def _earlier(tmp_path, content):
    path = tmp_path / "earlier.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode()
                     if not isinstance(content, str) else content.encode())
    return path


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON (line 1"),
    ([1, 2], "expected a mapping (JSON object), got a list"),
    ({"tuning": [1]}, "field 'tuning': expected a mapping"),
    ({"tuning": {"scopes": {"ln": {"chosen": "fast"}}}}, "field 'tuning.scopes.ln.chosen': expected a number or null"),
    ({"tuning": {"scopes": {"ln": {"chosen": 5.0}}}}, "a learning rate must be in (0, 1), got 5.0"),
    ({"tuning": {"scopes": {"ln": {"chosen": 0.1, "grid": ["a"]}}}}, "field 'tuning.scopes.ln.grid[0]'"),
    ({"tuning": {"scopes": {"ln": []}}}, "field 'tuning.scopes.ln': expected a mapping"),
    ({"tuning": {"grid": {"points": "3"}, "scopes": {}}}, "field 'tuning.grid.points': expected a whole number"),
    ({"tuning": None}, "no 'tuning' record"),
    (b'{"tuning": "\xff"}', "not UTF-8 text"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ({"tuning": {"scopes": {"ln": {"chosen": 0.1}}}, "backbone": "x" * 100_000}, "at most 4,096 characters"),
])
def test_an_lrs_from_file_of_the_wrong_shape_is_named(content, needle, sweep_args, tmp_path):
    line = assert_one_line_error(run_cli(*sweep_args, "--lrs-from", _earlier(tmp_path, content)), needle)
    assert "earlier.json" in line and len(line) < 600
    assert not (tmp_path / "out").exists()


def test_an_lrs_from_record_of_another_backbone_is_refused_without_echoing_it(sweep_args, tmp_path):
    earlier = {"tuning": {"scopes": {"ln": {"chosen": 0.1}}}, "config": {"backbone": "y" * 3000}}
    line = assert_one_line_error(run_cli(*sweep_args, "--lrs-from", _earlier(tmp_path, earlier)),
                                 "its rates were tuned with backbone='yyyy")
    assert len(line) < 600


@pytest.mark.parametrize("case", ["foreign file", "earlier sweep", "a file", "under a file"])
def test_out_must_be_new_or_empty(case, tiny_model, dataset, tmp_path):
    out = tmp_path / "out"
    if case in ("foreign file", "earlier sweep"):
        out.mkdir()
        (out / ("notes.txt" if case == "foreign file" else "results.json")).write_text("mine")
        needle = "already holds files"
    else:
        (tmp_path / "f").write_text("mine")
        out = tmp_path / "f" if case == "a file" else tmp_path / "f" / "out"
        needle = "f is a file, not a folder"
    before = tree(tmp_path)
    assert_one_line_error(run_cli("compare", "--backbone", tiny_model("llava"), "--data", f"jsonl:{dataset}",
                                  "--scopes", "ln", "--steps", "1", "--out", out), needle)
    assert tree(tmp_path) == before


def test_config_file_values_of_the_wrong_type_are_named(sweep_args, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("seeds: many\n")
    assert_one_line_error(run_cli(*sweep_args, "--config", config), "sweep.yaml: seeds: must be a whole number, got 'many'")
    config.write_text("seeds: 1e9\n")  # text that is a number is read as one, then bounded
    assert_one_line_error(run_cli(*sweep_args, "--config", config), "seeds: must be a whole number, got '1e9'")


def test_a_resumed_sweep_folder_holds_only_its_own(tmp_path):
    """--resume's folder rule (issue 25, for the scale-out's --resume/--cell): a sweep.json must be
    there, and nothing a sweep does not write; a new sweep still needs a new or empty folder."""
    from medln.compare.report import check_sweep_out

    out = tmp_path / "sweep"
    with pytest.raises(FileNotFoundError, match="no sweep.json there, so no sweep to resume"):
        check_sweep_out(out, resume=True)
    (out / "runs" / "ln").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no sweep.json"):
        check_sweep_out(out, resume=True)
    (out / "sweep.json").write_text("{}")
    (out / "TABLE.md").write_text("t")
    (out / "params.png").write_bytes(b"p")
    check_sweep_out(out, resume=True)  # its own files only
    with pytest.raises(FileExistsError, match=r"already holds files \(an earlier sweep's\)"):
        check_sweep_out(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files a sweep does not write \(notes.txt\)"):
        check_sweep_out(out, resume=True)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(FileExistsError, match="a link"):
        check_sweep_out(tmp_path / "link", resume=True)


def test_resume_refuses_a_sweep_folder_with_foreign_files(tmp_path):
    """compare --resume / --cell (medln.compare.folder.check_free) on a folder whose sweep.json is
    there but beside a user's own file: refused, the file kept."""
    from medln.compare.folder import check_free

    out = tmp_path / "sweep"
    (out / "runs").mkdir(parents=True)
    (out / "sweep.json").write_text("{}")
    check_free(out, resume=True)
    (out / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files a sweep does not write \(mine.txt\)"):
        check_free(out, resume=True)
    with pytest.raises(FileExistsError, match="already holds a sweep"):
        check_free(out, resume=False)
    assert (out / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("content, needle", [
    (b"[1]", 'not a sweep record (no "config")'),
    (b"\xff\xfe{", "not UTF-8 text"),
    (b"{" * 100_000, "not valid JSON"),
    (b'{"config": {"bogus": 1}}', "unknown options bogus"),
])
def test_collect_reads_sweep_json_as_data(content, needle, tmp_path):
    """compare --collect DIR / --resume read DIR/sweep.json through the validator: one line."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_bytes(content)
    line = assert_one_line_error(run_cli("compare", "--collect", out), needle)
    assert len(line) < 600 and sorted(p.name for p in out.iterdir()) == ["sweep.json"]
