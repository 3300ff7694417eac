"""`python -m medln` as a user runs it (subprocesses in the repository root): the JSON
contracts of backbones / scopes / params / train / ask, and clean exits on bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import adapter_run, assert_one_line_error, llava_7b_config_dir, run_cli

PARAM_KEYS = {"backbone", "scope", "total", "trainable", "percent", "dead", "modules"}


def ok_json_lines(proc) -> list:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every stdout line is one JSON value


def assert_user_error(proc, *needles: str):
    """Exit 2, one clear `error:` message naming the problem, no stack trace."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])


# --------------------------------------------------------------------------- listings


def test_backbones_json(tmp_path):
    (rows,) = ok_json_lines(run_cli("backbones", "--json"))
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == {"name", "hub_id", "family", "license", "gated", "batch_size", "lrs"}
        assert isinstance(row["gated"], bool) and 1 <= row["batch_size"] <= 512  # the default `train` takes
    tiny = next(r for r in rows if r["name"] == "medln-tiny")
    (start,) = [r for r in ok_json_lines(run_cli("train", "--data", "sample", "--steps", "1", "--eval-limit", "1",
                                                 "--eval-split", "", "--ood-split", "", "--json", "--out",
                                                 str(tmp_path / "run"))) if r.get("event") == "start"]
    assert start["lr"] == tiny["lrs"]["ln"] and start["batch_size"] == tiny["batch_size"]  # what train then uses
    names = {r["name"] for r in rows}
    assert {"medln-tiny", "blip-vqa-base", "medgemma-4b"} <= names
    assert {r["family"] for r in rows} == {"llava", "blip", "idefics3", "qwen2_vl", "gemma3"}
    assert next(r for r in rows if r["name"] == "medgemma-4b")["gated"] is True


def test_scopes_json():
    (rows,) = ok_json_lines(run_cli("scopes", "--json"))
    assert [r["name"] for r in rows] == ["ln", "ln-vision", "ln-llm", "attn", "ffn", "lora", "full", "ia3", "bitfit", "prompt", "ln-lora"]
    for row in rows:
        assert set(row) == {"name", "kind", "targets", "description", "default_lr", "quant_4bit"}
        assert row["description"] and row["quant_4bit"] and 0 < row["default_lr"] < 1
    lr = {r["name"]: r["default_lr"] for r in rows}
    assert lr["ln"] > lr["lora"]  # LayerNorm-only needs a much higher learning rate
    assert "refused" in next(r for r in rows if r["name"] == "full")["quant_4bit"]


# --------------------------------------------------------------------------- params


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`medln backbones --json | head -c 100`: the pipe closes before medln has written; it
    stops quietly with a shell's exit status for SIGPIPE (141), as Unix tools do."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "medln", "backbones", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_params_json_from_config_only_folder(tiny_model, tmp_path):
    only = tmp_path / "cfg"
    only.mkdir()
    shutil.copy(tiny_model("llava") / "config.json", only / "config.json")
    (row,) = ok_json_lines(run_cli("params", "--backbone", only, "--scope", "ln", "--json"))
    assert set(row) == PARAM_KEYS
    assert row["scope"] == "ln" and row["dead"] > 0 and 0 < row["trainable"] < row["total"]
    assert row["percent"] == pytest.approx(100 * row["trainable"] / row["total"], abs=1e-5)
    (rows,) = ok_json_lines(run_cli("params", "--backbone", only, "--scope", "all", "--quant", "4bit", "--json"))
    by_scope = {r["scope"]: r for r in rows}
    assert by_scope["ln"] == row  # 4-bit does not change what ln trains
    assert "4-bit" in by_scope["full"]["skipped"]


def test_params_json_llava_7b(tmp_path):
    folder = llava_7b_config_dir(tmp_path / "llava-7b")
    (row,) = ok_json_lines(run_cli("params", "--backbone", folder, "--scope", "ln", "--json"))
    assert set(row) == PARAM_KEYS
    assert (row["trainable"], row["dead"], row["total"]) == (362_496, 6_144, 7_566_743_552)


# --------------------------------------------------------------------------- train + ask


@pytest.fixture(scope="module")
def cli_run(tiny_model, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("train", "--backbone", tiny_model("llava"), "--scope", "ln", "--data", f"jsonl:{dataset}",
                   "--steps", "2", "--batch-size", "2", "--eval-split", "test", "--ood-split", "", "--eval-limit", "1",
                   "--eval-batch-size", "1", "--out", out, "--json")
    return out, ok_json_lines(proc)


def test_train_json_prints_one_object_per_record(cli_run):
    out, records = cli_run
    assert all(isinstance(r, dict) for r in records)
    assert records[0]["event"] == "start" and records[-1]["event"] == "done"
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    # one item per split and model: one "score" record each (medln.train.EVENTS)
    assert [r["event"] for r in records] == ["start", "eval", "eval", "step", "step", "score", "eval", "score", "eval", "done"]
    assert [r.get("which") for r in records if r["event"] == "eval"] == ["blind", "ceiling", "base", "tuned"]
    assert records[-1]["status"] == "completed" and records[-1]["run"] == str(out)
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "eval.json", "adapter", "inspect.json"}
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == steps
    saved = json.loads((out / "eval.json").read_text())
    assert saved["tuned"]["test"]["n"] == 1 and saved["base"]["test"]["n"] == 1
    # beside them, on the same item: the image-blind row and the probe ceiling (medln.references)
    assert saved["blind"]["test"]["n"] == 1 and saved["ceiling"]["test"]["n"] == 1
    assert "no image is read" in saved["references"]["blind"] and "ridge" in saved["references"]["ceiling"]


def test_ask_json_with_and_without_adapter(cli_run, tiny_model, dataset):
    out, _ = cli_run
    image = dataset.parent / "images" / "img00.png"
    for extra in ([], ["--adapter", out]):
        (reply,) = ok_json_lines(run_cli("ask", "--backbone", tiny_model("llava"), *extra, "--image", image,
                                         "--question", "Is there a pleural effusion?", "--json"))
        assert isinstance(reply["answer"], str)
        assert reply["adapter"] == (str(out) if extra else None)
        assert reply["warning"] is None  # a key every reply has; the image check is the demo model's only


def test_ask_plain_text_says_what_json_says(tmp_path):
    """The demo-model warnings are printed in plain text too, not only with --json."""
    from medln import DISCLAIMER
    from medln.data.bundled import example_images

    real = example_images()[0][0]  # a real image: not one of the demo model's phantoms
    args = ("ask", "--image", real, "--question", "What imaging modality is this?")
    plain = run_cli(*args)
    assert plain.returncode == 0, plain.stderr[-2000:]
    (reply,) = ok_json_lines(run_cli(*args, "--json"))
    lines = plain.stdout.strip().splitlines()
    assert lines[0] == reply["answer"]
    assert DISCLAIMER in lines[1] and "not for clinical use" in reply["disclaimer"]
    assert reply["warning"] and "synthetic phantoms" in reply["warning"] and reply["warning"] in lines[1]


# What `ask` must not import: 4-bit support without 4-bit weights, the app, the other commands'
# modules, training and metrics stacks. transformers 5 itself imports torch.distributed.tensor
# (modeling_utils -> core_model_loading), flash-attention and continuous batching
# (activations -> hub_kernels) for any model class: a plain transformers + peft script imports
# them too (bench/ask_peer.py; `medln bench-ask` compares the two), so they are not listed.
ASK_MUST_NOT_IMPORT = ("bitsandbytes", "gradio", "medln.ui", "medln.compare", "medln.bench", "medln.train",
                       "medln.metrics", "nltk", "matplotlib", "pandas", "scipy", "sklearn")

ASK_PROBE = """
import json, sys
from unittest import mock
import medln.runs
loads = []
original = medln.runs.BaseSpec.load
with mock.patch.object(medln.runs.BaseSpec, "load", lambda self, *a, **k: loads.append(1) or original(self, *a, **k)):
    from medln.__main__ import main
    code = main(sys.argv[1:])
from peft import import_utils
print(json.dumps({"code": code, "loads": len(loads), "bnb_usable": import_utils.is_bnb_available(),
                  "modules": sorted(k for k, v in sys.modules.items() if v is not None)}))
"""


def test_ask_imports_only_what_answering_needs(cli_run, tiny_model, dataset):
    import subprocess
    import sys

    out, _ = cli_run
    image = dataset.parent / "images" / "img00.png"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", ASK_PROBE, "ask", "--adapter", str(out),
                           "--image", str(image), "--question", "Is there a pleural effusion?"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["code"] == 0 and probe["loads"] == 1  # the base is loaded once, the adapter attached to it
    imported = [m for m in probe["modules"] if any(m == f or m.startswith(f + ".") for f in ASK_MUST_NOT_IMPORT)]
    slow = sorted((line for line in proc.stderr.splitlines() if any(m in line for m in imported)),
                  key=lambda line: -int(line.split("|")[1]))
    assert not imported, f"ask imported {imported[:10]}; slowest: {slow[:5]}"
    assert "peft" in probe["modules"] and probe["bnb_usable"]  # peft without bitsandbytes, 4-bit still possible


def test_ask_attaches_the_adapter_to_the_one_loaded_copy(cli_run):
    from safetensors import safe_open

    from medln.answers import require_run
    from medln.models import ModelCache

    run = require_run(cli_run[0])
    cache = ModelCache(max_models=1)
    e = cache.entry(run.base)
    base = {p.data_ptr() for p in e.backbone.model.parameters()}
    with cache.hold(e):  # the entry's lock, as answering takes it
        model, _ = e.use(run.adapter_dir)
        new = sum(p.numel() for p in model.parameters() if p.data_ptr() not in base)
    with safe_open(str(run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        saved = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert len(cache) == 1 and 0 < new <= saved  # only the adapter's own tensors are new: no second copy


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --------------------------------------------------------------------------- user errors: exit 2, no traceback


def train_args(backbone, data, out):
    return ("train", "--backbone", backbone, "--data", data, "--steps", "1", "--eval-split", "", "--ood-split", "",
            "--out", out)


def test_bad_data_spec(tiny_model, tmp_path):
    proc = run_cli(*train_args(tiny_model("llava"), "nonsense:whatever", tmp_path / "r"))
    assert_user_error(proc, "bad data spec", "nonsense:whatever")
    assert not (tmp_path / "r").exists()


def test_missing_data_file(tiny_model, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    assert_user_error(run_cli(*train_args(tiny_model("llava"), f"jsonl:{missing}", tmp_path / "r")), str(missing))


def _beside_images(dataset, tmp_path):
    """A private copy of the shared dataset folder: files written here cannot leak into
    tests that zip the shared folder."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset.parent, copy)
    return copy


def test_malformed_jsonl_line_is_named(tiny_model, dataset, tmp_path):
    lines = dataset.read_text().splitlines()
    bad = _beside_images(dataset, tmp_path) / "bad.jsonl"  # beside the images: relative paths still resolve
    bad.write_text("\n".join([lines[0], lines[1], '{"image": "images/img02.png", "question": "Is', *lines[3:]]) + "\n")
    proc = run_cli(*train_args(tiny_model("llava"), f"jsonl:{bad}", tmp_path / "r"))
    assert_user_error(proc, f"{bad}:3", "malformed JSON")


def test_jsonl_line_with_missing_image_is_named(tiny_model, dataset, tmp_path):
    lines = dataset.read_text().splitlines()
    record = json.loads(lines[1])
    record["image"] = "images/missing.png"
    bad = _beside_images(dataset, tmp_path) / "missing-image.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    proc = run_cli(*train_args(tiny_model("llava"), f"jsonl:{bad}", tmp_path / "r"))
    assert_user_error(proc, f"{bad}:2", "image")


def test_other_user_errors(tiny_model, tmp_path):
    llava = tiny_model("llava")
    assert_user_error(run_cli("params", "--backbone", tmp_path / "no-such-folder", "--json"), "unknown backbone")
    assert_user_error(run_cli("params", "--backbone", llava, "--scope", "nope", "--json"), "unknown scope")
    assert_user_error(run_cli("train", "--backbone", llava, "--scope", "full", "--quant", "4bit", "--out", tmp_path / "r"),
                      "4-bit")
    assert_user_error(run_cli("ask", "--backbone", llava, "--image", tmp_path / "none.png", "--question", "Is it?"),
                      "none.png")


# --------------------------------------------------------------------------- hostile input: one line, exit 2


@pytest.fixture(scope="module")
def cli_inputs(tiny_model, dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "latin1.jsonl").write_bytes(b'{"image": "images/img00.png", "question": "caf\xe9?", "answer": "a"}\n')
    (root / "unknown").mkdir()
    (root / "unknown" / "config.json").write_text('{"model_type": "florence9"}')
    (root / "remote").mkdir()
    (root / "remote" / "config.json").write_text(
        '{"model_type": "custom_vlm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}')
    (root / "a-file").write_text("x")
    garbage = adapter_run(tiny_model, "llava", root / "garbage")
    (garbage / "adapter" / "adapter_config.json").write_text("not json")
    small = adapter_run(tiny_model, "llava", root / "small", hidden_size=48, vision_hidden_size=48,
                         intermediate_size=96, vision_intermediate_size=96)
    return root, garbage, small


@pytest.mark.parametrize("case", ["non-utf8", "unknown-model-type", "remote-code", "seed", "max-length",
                                  "garbage-adapter", "other-shapes", "out-under-file", "lora-r", "long-question"])
def test_cli_refusals_are_one_line(case, cli_inputs, tiny_model, dataset):
    root, garbage, small = cli_inputs
    llava, data = tiny_model("llava"), f"jsonl:{dataset}"
    image = dataset.parent / "images" / "img00.png"
    quick = ("--steps", "1", "--batch-size", "2", "--eval-split", "", "--ood-split", "")
    args, needles = {
        "non-utf8": (("train", "--backbone", llava, "--data", f"jsonl:{root / 'latin1.jsonl'}", "--out", root / "o1"),
                     ["latin1.jsonl:1: not UTF-8 text (byte 0xe9"]),
        "unknown-model-type": (("params", "--backbone", root / "unknown"), ["unsupported model_type 'florence9'"]),
        "remote-code": (("train", "--backbone", root / "remote", "--data", data, *quick, "--out", root / "o2"),
                        ["needs custom code", "--trust-remote-code"]),
        "seed": (("train", "--backbone", llava, "--seed", "-1"), ["seed: must be >= 0, got -1"]),
        "max-length": (("train", "--backbone", llava, "--data", data, "--max-length", "8", *quick, "--out", root / "o3"),
                       ["exceed max_length=8", "raise --max-length", "image images/"]),
        "garbage-adapter": (("ask", "--backbone", llava, "--adapter", garbage, "--image", image, "--question", "q?"),
                            ["adapter_config.json: not valid JSON", "(unreadable adapter config)"]),
        "other-shapes": (("ask", "--backbone", llava, "--adapter", small, "--image", image, "--question", "q?"),
                         ["in the adapter but this backbone needs"]),
        "out-under-file": (("train", "--backbone", llava, "--data", data, "--out", root / "a-file" / "run"),
                           ["a-file is a file, not a folder"]),
        "lora-r": (("params", "--backbone", llava, "--lora-r", "0"), ["lora_r: must be >= 1"]),
        "long-question": (("ask", "--backbone", llava, "--image", image, "--question", "x" * 501),
                          ["question is too long (501 characters; the limit is 500)"]),
    }[case]
    line = assert_one_line_error(run_cli(*args), *needles)
    print(f"\n{case}: {line}")


def test_bench_ask_runs_the_peer_on_the_runs_own_base(cli_run, tiny_model, dataset):
    import argparse

    from medln.bench.ask import PEER, commands

    out, _ = cli_run
    args = argparse.Namespace(adapter=str(out), image="x.png", question="Q?")
    ask, peer = commands(args)
    assert ask[1:] == ["-m", "medln", "ask", "--adapter", str(out), "--image", "x.png", "--question", "Q?"]
    assert peer[1] == str(PEER) and PEER.exists()
    assert peer[peer.index("--model") + 1] == str(tiny_model("llava"))
    assert peer[peer.index("--adapter") + 1] == str(out / "adapter")
    assert "{question}" in peer[peer.index("--prompt") + 1]
