"""`medln inspect` under bad input (issue 25): a run folder and its inspect.json are data; a
run given with --with is only read; each refusal is one line, exit 2, and nothing changes."""

from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, copy_run, run_cli, tree

pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")


@pytest.mark.parametrize("case, content, needles", [
    ("garbage", "not json {", ["inspect.json: not valid JSON (line 1", "--force recomputes it"]),
    ("a list", "[1, 2]", ["inspect.json: expected a mapping (JSON object), got a list"]),
    ("rows not a list", '{"rows": "x", "top": {}, "layers": {}}', ["field 'rows': expected a list, got 'x'"]),
    ("a row's type", '{"rows": [{"module": "m", "part": "llm", "leaf": "l", "param": "gain", "layer": 0, '
                     '"numel": 1, "base_norm": 1.0, "delta_norm": "far", "rel": 0.1}], "top": {}, "layers": {}}',
     ["field 'rows[0].delta_norm': expected a number, got 'far'"]),
    ("a huge key", json.dumps({"rows": [], "top": {"relative": [], "bias": []}, "layers": {"llm": {"x" * 5000: 1}}}),
     ["field 'layers.llm.xxxxxxxx", "a layer number is expected"]),
    ("not UTF-8", b'{"rows": "\xff"}', ["inspect.json: not UTF-8 text (byte 0xff"]),
])
def test_a_bad_inspect_json_is_named(case, content, needles, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    target = run / "inspect.json"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree(run)
    line = assert_one_line_error(run_cli("inspect", run), *needles)
    assert len(line) < 400, line  # never the whole value
    assert tree(run) == before


def test_force_recomputes_a_bad_inspect_json(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "inspect.json").write_text("[]")
    proc = run_cli("inspect", run, "--force", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "inspect.json").read_text())["n_tensors"] > 0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no scratch left behind


@pytest.mark.parametrize("name", ["inspect.json", "inspect.html"])
def test_an_output_path_that_is_a_folder_is_refused_before_any_work(name, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    if (run / name).exists():
        (run / name).unlink()
    (run / name).mkdir()
    (run / name / "mine.txt").write_text("keep")
    assert_one_line_error(run_cli("inspect", run), f"{name} exists and is not a regular file")
    assert (run / name / "mine.txt").read_text() == "keep"


def test_a_run_of_another_backbone_is_refused_and_left_alone(finished_run, tiny_model, tmp_path):
    run = copy_run(finished_run, tmp_path, "main")
    other = copy_run(finished_run, tmp_path, "other")
    config = json.loads((other / "config.json").read_text())
    config["base"]["backbone"] = str(tiny_model("blip"))
    (other / "config.json").write_text(json.dumps(config))
    before_main, before_other = tree(run), tree(other)
    assert_one_line_error(run_cli("inspect", run, "--with", other), f"--with {other}: trained on",
                          "same backbone only")
    assert tree(other) == before_other and tree(run) == before_main


def test_a_run_given_with_with_is_only_read(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path, "main")
    other = copy_run(finished_run, tmp_path, "other")
    (other / "inspect.json").unlink()  # computed in memory, never written into that run
    before = tree(other)
    proc = run_cli("inspect", run, "--with", other, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree(other) == before
    result = json.loads((run / "inspect.json").read_text())
    assert result["compare"][0]["run"] == str(other) and result["compare"][0]["spearman_tensors"] == 1.0
    assert (run / "inspect.html").is_file()


@pytest.mark.parametrize("case", ["missing", "a file", "config not json", "config a list", "config wrong type",
                                  "no adapter", "foreign peft type", "base path outside", "huge rank"])
def test_a_bad_run_folder_is_named(case, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    cfg_path, adapter_cfg = run / "config.json", run / "adapter" / "adapter_config.json"
    config, adapter = json.loads(cfg_path.read_text()), json.loads(adapter_cfg.read_text())
    target, needles = run, []
    if case == "missing":
        target, needles = tmp_path / "nowhere", ["nowhere"]
    elif case == "a file":
        target = tmp_path / "file.txt"
        target.write_text("x")
        needles = ["file.txt: not a folder"]
    elif case == "config not json":
        cfg_path.write_text("{")
        needles = ["config.json: not valid JSON"]
    elif case == "config a list":
        cfg_path.write_text("[]")
        needles = ["config.json: expected a mapping"]
    elif case == "config wrong type":
        config["config"]["steps"] = "many"
        cfg_path.write_text(json.dumps(config))
        needles = ["config.json: field 'config.steps': must be a whole number, got 'many'"]
    elif case == "no adapter":
        import shutil

        shutil.rmtree(run / "adapter")
        needles = ["has no adapter/ folder"]
    elif case == "foreign peft type":
        adapter["peft_type"] = "LOHA"
        adapter_cfg.write_text(json.dumps(adapter))
        needles = ["field 'peft_type': 'LOHA' is not a MedLN adapter type"]
    elif case == "base path outside":
        adapter["base_model_name_or_path"] = "../../../etc"
        adapter_cfg.write_text(json.dumps(adapter))
        needles = ["field 'base_model_name_or_path': '../../../etc' is a path outside the adapter"]
    elif case == "huge rank":
        adapter.update(peft_type="LORA", r=10**9, lora_alpha=16)
        adapter_cfg.write_text(json.dumps(adapter))
        needles = ["field 'r': must be <= 1024"]
    (run / "inspect.json").unlink()
    before = tree(run)
    assert_one_line_error(run_cli("inspect", target, "--force"), *needles)
    assert tree(run) == before
