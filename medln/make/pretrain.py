"""`python -m medln pretrain-tiny`: the bundled offline backbone, built and pretrained here.

medln-tiny is a real LLaVA-architecture model (CLIP-style vision tower -> MLP projector ->
Llama decoder) of a few million parameters, with a byte-level BPE tokenizer trained on
text from the generator itself (`corpus`: never the committed files, so the model does not
depend on what the sample folder holds). It is pretrained from scratch, fully, on the SOURCE acquisition style only
(generated in memory from a seed disjoint from the committed splits), so the committed
TARGET style is a real domain gap for a short fine-tune to close. Deterministic from its seed.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from ..backbones import ASSETS
from ..config import _f, add_command, from_args

OUT = ASSETS / "medln-tiny"

# ~5 M parameters: large enough to learn the source task, small enough for a CPU demo.
SIZES = dict(
    num_heads=4,
    num_kv_heads=4,
    vision_heads=4,
    vocab_size=1024,
    hidden_size=256,
    intermediate_size=768,
    num_layers=4,
    vision_hidden_size=128,
    vision_intermediate_size=512,
    vision_layers=4,
    image_size=64,
)


TOKENIZER_STUDIES = 400  # target-style studies (all phrasings) whose text joins the tokenizer corpus
TOKENIZER_SEED = 101  # their stream: disjoint from the committed splits and the pretraining stream


def corpus(stream_samples) -> list[str]:
    """Tokenizer corpus, from the generator and the code alone (never from committed files,
    so the model is reproducible from its seed whatever the sample folder holds): every
    question, answer and report of the pretraining stream, of a target-style stream with
    every phrasing (held-out ones included: the tokenizer only spells words, it learns no
    answers from them), and the real images' hand-written questions."""
    from .sample import REAL
    from .synth import make_study, study_samples

    texts = [t for s in stream_samples for t in (s.question or "", s.answer)]
    for i in range(TOKENIZER_STUDIES):
        study = make_study(TOKENIZER_SEED, i, "target", held_out=True)
        texts += [t for s in study_samples(study, "tok", None, "target") for t in (s.question or "", s.answer)]
    texts += [t for r in REAL for q in r.questions for t in q[:2]]
    return [t for t in texts if t]


def pretrain_tiny(out: Path = OUT, *, studies: int = 2000, steps: int = 600, batch_size: int = 32,
                  lr: float = 1e-3, seed: int = 0, log=print) -> Path:
    import torch

    from ..backbones import load_backbone
    from ..config import TrainConfig
    from .synth import source_stream
    from transformers import set_seed

    from ..train import Tunable, fit
    from .tiny import build_tiny

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    samples = list(islice(source_stream(studies), None))
    log(f"source-style pretraining set: {len(samples)} items from {studies} studies")
    out = Path(out)
    build_tiny("llava", out, corpus=corpus(samples), seed=seed, **SIZES)
    bb = load_backbone(str(out), device="cpu")
    bb.model.requires_grad_(True)
    n_params = sum(p.numel() for p in bb.model.parameters())
    log(f"medln-tiny: {n_params:,} parameters")
    set_seed(seed)
    cfg = TrainConfig(backbone=str(out), scope="full", steps=steps, lr=lr, batch_size=batch_size, warmup=0.05,
                      seed=seed, weight_decay=0.01)
    tunable = Tunable(bb, bb.model, None)
    history = []
    for record in fit(tunable, cfg, samples):
        history.append(record)
        if record["step"] % 50 == 0 or record["step"] == 1:
            log(f"step {record['step']:>5}/{steps}  loss {record['loss']:.4f}  {record['samples_per_s']:.1f} samples/s")
    bb.model.eval()
    # Stored in fp16 (half the bytes; the assets budget is 15 MB): the weights are small in
    # magnitude (max |w| ~1.2), and the sample metrics are identical to fp32's. Loaded as fp32.
    bb.model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    bb.processor.save_pretrained(out)
    info = {
        "architecture": "LlavaForConditionalGeneration (CLIP vision, MLP projector, Llama decoder)",
        "parameters": n_params,
        "sizes": SIZES,
        "pretraining": {"data": "medln.make.synth source style, generated in memory", "studies": studies,
                        "items": len(samples), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                        "final_loss": history[-1]["loss"], "loss_every_50": [r["loss"] for r in history[::50]]},
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "storage_dtype": "float16",
        "licence": "MIT (MedLN); trained only on MedLN's synthetic data",
    }
    (out / "MEDLN_PRETRAIN.json").write_text(json.dumps(info, indent=2))
    log(f"saved {out} in {info['wall_s']} s")
    return out


@dataclass
class PretrainArgs:
    out: str = _f(str(OUT), "folder to write the model into")
    studies: int = _f(2000, "synthetic source-style studies generated in memory", min=1)
    steps: int = _f(600, "optimizer steps", min=1)
    batch_size: int = _f(32, "samples per step", min=1)
    lr: float = _f(1e-3, "peak learning rate", min=0.0, max=1.0, open=("min",))
    seed: int = _f(0, "seed of the data, the initialisation and the order", min=0)


def add_cli(sub) -> None:
    def run(args) -> None:
        a = from_args(args, PretrainArgs)
        pretrain_tiny(Path(a.out), studies=a.studies, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)

    add_command(sub, "pretrain-tiny", PretrainArgs, run,
                help="build and pretrain the bundled medln-tiny backbone (source style)")
