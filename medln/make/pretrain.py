"""`python -m medln pretrain-tiny`: the bundled offline backbone, built and pretrained here.

medln-tiny is a real LLaVA-architecture model (CLIP-style vision tower -> MLP projector ->
Llama decoder) of a few million parameters, with a byte-level BPE tokenizer trained on
text from the generator itself (`medln.make.task.corpus_texts`: never the committed files,
so the model does not depend on what the sample folder holds). It is pretrained from
scratch, fully, on the SOURCE domain only (generated in memory from a seed disjoint from the
committed splits), so both committed targets are real gaps for a short fine-tune to close.
Deterministic from its seed on a given machine (the record names the machine and torch).

After training it scores itself on the committed source-test split and on both targets'
test splits (the untuned base rows) and writes those figures into MEDLN_PRETRAIN.json.

The bundled model (v3.3) is three stages, in four runs (docs/experiment.md, "The language
stage" and "Session 10"; each run's record nests the one before):
  1. python -m medln pretrain-tiny --out S1 --steps 5000 --studies 8000   (the vision-language stage)
  2. python -m medln pretrain-tiny --init S1 --out S2a --steps 3000 --studies 4000 --stream 106 --lr 2e-4 --wide
     python -m medln pretrain-tiny --init S2a --out S2 --steps 2000 --studies 4000 --stream 107 --lr 1e-4 --wide
  3. python -m medln pretrain-tiny --init S2 --steps 400 --studies 2000 --stream 104 --lr 5e-4 \
         --extra --decoder-only --wide
Stage 2 (`--wide`) trains the whole model on three more, pretraining-only finding kinds, as a
real Med-VLM has met more findings than a target asks about; it lifted `full` on the findings
validation split of the time (158 questions) by about 5 points, 0.580 -> 0.631, but not on test.
Stage 3 trains the decoder alone on the source with more question wordings (EXTRA): held-out
wordings were answered at the image-blind level by every fine-tune of stage 1 alone, and the
frozen vision side keeps what the scanner target's norms re-map.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from ..backbones import ASSETS
from ..config import _f, add_command, from_args

OUT = ASSETS / "medln-tiny"

# ~1.5 M parameters: small enough that a fine-tune and its scoring fit the 2-minute CPU demo.
# 64 px images in 8 px patches (64 image tokens): 16 px patches were tried first and left
# presence, position and size unlearned even on the training studies (docs/experiment.md).
SIZES = dict(
    num_heads=4,
    num_kv_heads=4,
    vision_heads=4,
    vocab_size=1024,
    hidden_size=128,
    intermediate_size=384,
    num_layers=3,
    vision_hidden_size=128,
    vision_intermediate_size=384,
    vision_layers=4,
    image_size=64,
    patch_size=8,
)


def corpus() -> list[str]:
    """Tokenizer corpus: the generator's text of every domain (medln.make.task.corpus_texts)
    and the real images' hand-written questions and answers."""
    from .real import REAL
    from .task import corpus_texts

    texts = corpus_texts() + [t for r in REAL for q in r.questions for t in q[:2]]
    return [t for t in texts if t]


def score_base(out: Path, log=print) -> dict:
    """The pretrained model on the committed source-test split and each target's test split."""
    from ..backbones import load_backbone
    from ..data import load_samples
    from ..evaluate import evaluate
    from .task import TARGETS

    bb = load_backbone(str(out), device="cpu")
    specs = {"source-test": ("sample", "source-test"), **{f"{t}-test": (f"sample:{t}", "test") for t in TARGETS}}
    scores = {}
    for name, (spec, split) in specs.items():
        try:
            samples = load_samples(spec, split).samples
        except Exception as e:  # the sample is built after the model on a fresh checkout
            log(f"not scored on {name}: {e}")
            continue
        m = evaluate(bb, bb.model, samples, adapter=False)
        scores[name] = {"n": m["n"], "overall": round(m["overall"], 4),
                        "by_question_type": {k: round(v["accuracy"], 4) for k, v in m["by_question_type"].items()}}
        log(f"{name}: overall {m['overall']:.3f} (n = {m['n']})")
    return scores


@dataclass
class PretrainArgs:
    out: str = _f(str(OUT), "folder to write the model into")
    studies: int = _f(4000, "synthetic source-domain studies generated in memory", min=1)
    steps: int = _f(2500, "optimizer steps", min=1)
    batch_size: int = _f(32, "samples per step", min=1)
    lr: float = _f(1e-3, "peak learning rate", min=0.0, max=1.0, open=("min",))
    seed: int = _f(0, "seed of the data, the initialisation and the order", min=0)
    init: str = _f("", "continue from this saved model folder (a second stage) instead of building a new one")
    stream: int = _f(100, "seed of the generated source stream (never a committed split's)", min=100)
    extra: bool = _f(False, "also the pretraining-only EXTRA question wordings (medln.make.questions)")
    wide: bool = _f(False, "source studies of more finding kinds (medln.make.findings.WIDE_KINDS; pretraining only)")
    decoder_only: bool = _f(False, "train the language model only (vision tower and projector frozen): a language stage")


def pretrain_tiny(args: PretrainArgs | None = None, log=print) -> Path:
    """Build medln-tiny and pretrain it on the source domain; PretrainArgs holds every default."""
    a = args or PretrainArgs()
    out, studies, steps, batch_size, lr, seed = Path(a.out), a.studies, a.steps, a.batch_size, a.lr, a.seed
    import torch

    from ..backbones import load_backbone
    from ..backbones.family import part_of
    from ..config import TrainConfig
    from transformers import set_seed

    from ..train import Tunable, fit
    from .task import source_stream
    from .tiny import build_tiny

    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    samples = list(source_stream(studies, seed=a.stream, extra=a.extra, wide=a.wide))
    log(f"source-domain pretraining set: {len(samples)} items from {studies} studies")
    if not a.init:
        build_tiny("llava", out, corpus=corpus(), seed=seed, **SIZES)
    bb = load_backbone(a.init or str(out), device="cpu")  # fp32, also from the fp16 file
    for name, p in bb.model.named_parameters():  # the family's part table says what the decoder is
        p.requires_grad_(not a.decoder_only or part_of(bb.family, name) == "llm")
    n_params = sum(p.numel() for p in bb.model.parameters())
    log(f"medln-tiny: {n_params:,} parameters")
    set_seed(seed)
    cfg = TrainConfig(backbone=str(out), scope="full", steps=steps, lr=lr, batch_size=batch_size, warmup=0.05,
                      seed=seed, weight_decay=0.01)
    tunable = Tunable(bb, bb.model, None)
    history = []
    for record in fit(tunable, cfg, samples):
        history.append(record)
        if record["step"] % 100 == 0 or record["step"] == 1:
            log(f"step {record['step']:>5}/{steps}  loss {record['loss']:.4f}  {record['samples_per_s']:.1f} samples/s")
    train_s = time.perf_counter() - t0
    # A second stage keeps the record of the first (read before `out` is overwritten: init may be out).
    earlier = Path(a.init) / "MEDLN_PRETRAIN.json" if a.init else None
    earlier_info = json.loads(earlier.read_text()) if earlier and earlier.is_file() else None
    bb.model.eval()
    # Stored in fp16 (half the bytes; the assets budget is 20 MiB); loaded as fp32.
    bb.model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    bb.processor.save_pretrained(out)
    info = {
        "architecture": "LlavaForConditionalGeneration (CLIP vision, MLP projector, Llama decoder)",
        "parameters": n_params,
        "sizes": SIZES,
        "pretraining": {"data": "medln.make.task source domain, generated in memory", "studies": studies,
                        "stream": a.stream, "extra_wordings": a.extra, "wide_kinds": a.wide,
                        "decoder_only": a.decoder_only, "init": a.init or None,
                        "items": len(samples), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                        "final_loss": history[-1]["loss"], "loss_every_100": [r["loss"] for r in history[::100]]},
        "wall_s": round(train_s, 1),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "storage_dtype": "float16",
        "licence": "MIT (MedLN); trained only on MedLN's synthetic data",
    }
    if earlier_info:
        info["earlier_stage"] = {k: earlier_info[k] for k in ("pretraining", "wall_s", "machine", "earlier_stage")
                                 if k in earlier_info}
    (out / "MEDLN_PRETRAIN.json").write_text(json.dumps(info, indent=2))
    info["base_scores"] = score_base(out, log)
    (out / "MEDLN_PRETRAIN.json").write_text(json.dumps(info, indent=2))
    log(f"saved {out}; trained in {info['wall_s']} s")
    return out


def add_cli(sub) -> None:
    def run(args) -> None:
        pretrain_tiny(from_args(args, PretrainArgs))

    add_command(sub, "pretrain-tiny", PretrainArgs, run,
                help="build and pretrain the bundled medln-tiny backbone (source domain)")
