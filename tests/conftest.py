"""Shared fixtures: tiny random checkpoints of every family (built once per session with
medln.make.tiny.build_tiny and loaded back through the hub code path), a tiny JSONL data set, and
an environment with no network and a private MedLN cache.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from medln.backbones import FAMILIES  # noqa: E402

FAMILY_NAMES = list(FAMILIES)  # every family of the registry gets a tiny model and its tests

# No hub: resolve() / check_access() must never wait on the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def medln_cache(tmp_path_factory):
    """MEDLN_CACHE in a temporary folder (inherited by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("medln-cache")
    old = os.environ.get("MEDLN_CACHE")
    os.environ["MEDLN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MEDLN_CACHE", None)
    else:
        os.environ["MEDLN_CACHE"] = old


class TinyModels:
    """family -> folder of a tiny random checkpoint (config.json, safetensors, tokenizer,
    processor), built on first use and shared by the whole session."""

    def __init__(self, factory):
        self.factory = factory
        self.paths: dict[str, Path] = {}

    def __call__(self, family: str) -> Path:
        if family not in self.paths:
            from medln.make.tiny import build_tiny

            self.paths[family] = Path(build_tiny(family, self.factory.mktemp(f"tiny-{family}")))
        return self.paths[family]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory)


VQA = [
    ("Is there a pleural effusion?", "no", "CLOSED"),
    ("Is the heart size normal?", "yes", "CLOSED"),
    ("Which lobe shows consolidation?", "right lower lobe", "OPEN"),
    ("What imaging modality is this?", "ct", "OPEN"),
    ("Is there a pneumothorax?", "no", "CLOSED"),
    ("What organ is shown?", "liver", "OPEN"),
    ("Is the trachea midline?", "yes", "CLOSED"),
    ("Where is the mass?", "left upper lobe", "OPEN"),
    ("Is there cardiomegaly?", "yes", "CLOSED"),
    ("What is the plane of this image?", "axial", "OPEN"),
]
REPORTS = [
    "The lungs are clear. No effusion or pneumothorax.",
    "Mild cardiomegaly. No acute cardiopulmonary abnormality.",
]


def _write_images(folder: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        y, x = np.mgrid[0:48, 0:48]
        rgb = np.stack([(x * (i + 3)) % 256, (y * (2 * i + 5)) % 256, np.full_like(x, 20 * i % 256)], -1)
        name = f"img{i:02d}.png"
        Image.fromarray(rgb.astype(np.uint8)).save(folder / name)
        names.append(f"images/{name}")
    return names


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """data.jsonl with a dozen PNGs: train = 10 VQA (CLOSED/OPEN) + 2 report lines, test =
    3 VQA + 1 report line (the `split` field selects lines). Use as `jsonl:{path}`."""
    root = tmp_path_factory.mktemp("data")
    images = _write_images(root / "images", 12)
    lines = []
    for i, (q, a, t) in enumerate(VQA):
        lines.append({"id": f"tr{i}", "split": "train", "image": images[i], "question": q, "answer": a, "answer_type": t})
    for i, r in enumerate(REPORTS):
        lines.append({"id": f"trr{i}", "split": "train", "image": images[10 + i], "report": r})
    for i, (q, a, t) in enumerate(VQA[:3]):
        lines.append({"id": f"te{i}", "split": "test", "image": images[(i + 5) % 12], "question": q, "answer": a, "answer_type": t})
    lines.append({"id": "ter0", "split": "test", "image": images[11], "report": REPORTS[0]})
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def train_samples(dataset):
    from medln.data import load_samples

    return load_samples(f"jsonl:{dataset}", "train").samples


def run_cli(*args, timeout: float = 300, env: dict | None = None, isolated: bool = False):
    """`python -m medln ARGS` in the repository root; returns a CompletedProcess.

    In this process by default: `medln.__main__.main` is what the console script and
    `python -m medln` run, and a fresh interpreter per call would cost seconds of imports
    each. `isolated=True` (or an `env`) runs a real subprocess, for what only a separate
    interpreter shows (imports, environment variables, signals)."""
    import contextlib
    import io
    import subprocess
    import traceback

    argv = [str(a) for a in args]
    if isolated or env:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([sys.executable, "-m", "medln", *argv], cwd=REPO, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    from medln.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(REPO), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter would print before exiting with 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["medln", *argv], code, out.getvalue(), err.getvalue())


def llava_7b_config_dir(folder):
    """LLaVA-1.5 / LLaVA-Med v1.5 (Mistral) at full size from the published hyper-parameters:
    CLIP ViT-L/14-336 + Mistral-7B, features from vision layer -2. Only config.json is written."""
    from transformers import CLIPVisionConfig, LlavaConfig, MistralConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=32064, max_position_embeddings=32768)
    LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-2, image_token_index=32000,
                vision_feature_select_strategy="default").save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    return folder


@pytest.fixture(scope="session")
def facts(tiny_model, train_samples):
    """facts(family): what an independent probe finds in that family's tiny model (norms that
    get a gradient, dead norms, linears, totals; tests/test_methods.py `probe`), once per session
    for the scope tests old and new."""
    from test_methods import few, probe

    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = probe(family, tiny_model(family), few(train_samples))
        return cache[family]

    return get


def assert_one_line_error(proc, *needles: str):
    """Exit 2 and ONE line on stderr that starts with `error:` and names the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def adapter_run(tiny_model, family: str, folder: Path, **sizes) -> Path:
    """A run folder holding an untrained adapter of `family` (peft's own files)."""

    from medln.adapters import make_portable
    from medln.config import TrainConfig
    from medln.make.tiny import build_tiny
    from medln.train import prepare

    path = build_tiny(family, folder / "model", **sizes) if sizes else tiny_model(family)
    tunable = prepare(TrainConfig(backbone=str(path)), device="cpu")
    tunable.model.save_pretrained(folder / "run" / "adapter")
    make_portable(folder / "run" / "adapter", path.name)  # as train does: no absolute base path in the adapter
    # A finished run whose config names the bundled-size tiny model as its base: for a run of
    # the smaller model that is a foreign adapter dropped into a run folder.
    claimed = str(tiny_model(family))
    (folder / "run" / "config.json").write_text(json.dumps({"config": {"scope": "ln", "backbone": claimed},
                                                            "family": family}))
    (folder / "run" / "eval.json").write_text("{}")
    return folder / "run"


def copy_dataset(dataset, tmp_path) -> Path:
    import shutil

    shutil.copytree(dataset.parent, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture(scope="session")
def finished_run(tiny_model, dataset, tmp_path_factory) -> Path:
    """A finished 1-step `ln` run of the tiny LLaVA (no evaluation), shared by the session:
    treat it as read-only; `copy_run(finished_run, tmp_path)` gives a copy to change."""
    from medln.config import TrainConfig
    from medln.train import train_run

    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = TrainConfig(backbone=str(tiny_model("llava")), scope="ln", data=f"jsonl:{dataset}", steps=1, batch_size=2,
                      lr=0.05, eval_split="", ood_split="")
    list(train_run(cfg, out))
    return out


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / name))


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: compare before and after to show nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
