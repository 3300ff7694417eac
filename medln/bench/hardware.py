"""Which registry backbone fits which Hugging Face Space GPU, and how fast a step should be:
COMPUTED from the published model shapes, not measured (no GPU was available to this work).

    python -m medln.bench.hardware            # the Markdown table in docs/hardware.md
    python -m medln.bench.hardware --json     # every intermediate figure

Every model is built on the meta device from its published hyper-parameters (medln.bench's
shapes, plus three configs here), so the parameter counts are exact; the rest is a model of
the hardware with the assumptions stated below, for one `ln` fine-tune step of the app's default batch: 8 samples, each one image plus 64
text tokens (where 8 do not fit at once, the same 8 samples by gradient accumulation).

weights   16-bit: 2 B/param. 4-bit: every nn.Linear that bitsandbytes quantizes (all but the
          family's `not_quantized` modules) at NF4 + double-quantised absmax = 4.127 bit/param;
          everything else (embeddings, norms, lm_head, connector, convolutions) at 2 B.
          fp32 compute (MedGemma on a T4): 4 B where 16-bit had 2.
activations  backward through the whole model (`ln` trains the vision norms too): per
          transformer layer ≈ (8·h + 3·i) stored values per token (norm inputs, q/k/v/o and MLP
          inputs, the MLP's gate/up/act outputs; SDPA keeps no T×T matrix), in the compute dtype;
          + logits: T·V·10 B (16-bit logits, their fp32 upcast for the loss, its gradient).
overhead  1.5 GB: CUDA context, cuBLAS workspace, allocator slack. The trained norms with
          AdamW: 16 B/param (a few MB).
fits      weights + batch x activations + overhead <= the card's memory; "max batch" solves it.
FLOPs     per step ≈ 4·Σ(linear params × tokens they see) (forward 2, backward 2: the input
          gradients; frozen matrices get no weight gradient; REFERENCE.md) + attention scores
          3·4·T²·d per layer.
s/step    8 × FLOPs per sample / (MFU × peak) + a launch floor of 10 µs × 40 (16-bit) or 60
          (4-bit: the dequantisation kernels) kernels per layer and micro-batch. Assumed MFU: 0.30 in 16-bit, 0.18 in 4-bit
          (bitsandbytes dequantises every weight on every matmul), 0.30 of the fp32 peak for fp32.
download  params × the checkpoint's stored bytes/param (bf16/fp16: 2; BLIP's fp32 checkpoint: 4).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from ..config import TrainConfig

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + fp8 absmax per 64 + fp32 per 256 absmax blocks
OVERHEAD_GB = 1.5
TEXT_TOKENS = 64
MFU = {"16bit": 0.30, "4bit": 0.18, "fp32": 0.30}
KERNELS_PER_LAYER = {"16bit": 40, "4bit": 60, "fp32": 40}
LAUNCH_S = 10e-6


@dataclass(frozen=True)
class Card:
    name: str
    memory_gb: float
    tflops_16: float  # dense fp16/bf16 tensor-core peak (data sheets)
    tflops_32: float  # fp32 peak
    bf16: bool


CARDS = [
    Card("T4 16 GB", 16, 65, 8.1, False),
    Card("A10G 24 GB", 24, 125, 31.2, True),  # the A10 data sheet's figures; the A10G is a close variant
    Card("L4 24 GB", 24, 121, 30.3, True),
    Card("A100 40 GB", 40, 312, 19.5, True),
    Card("A100 80 GB", 80, 312, 19.5, True),
    Card("H100 80 GB", 80, 989, 67, True),  # SXM figures
    # ZeroGPU: an H200 MIG 3g.71gb slice (spaces' own defaults: 60 of the H200's 132 SMs, ~74.6 GB)
    Card("ZeroGPU 70 GB", 70, round(989 * 60 / 132), round(67 * 60 / 132, 1), True),
]
BATCH = TrainConfig.batch_size  # the default fine-tune's batch


# ------------------------------------------------------------------ the models


def _llava_15_7b():
    """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Vicuna-7B v1.5 (Llama, MHA)."""
    from transformers import LlamaConfig

    from .shapes import shape_config

    _, config, _ = shape_config("llava-7b")
    config.text_config = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                     tie_word_embeddings=False)
    return config


def _smolvlm_500m():
    """SmolVLM-500M: the 256M's SigLIP base-patch16-512 + SmolLM2-360M."""
    from transformers import LlamaConfig

    from .shapes import shape_config

    _, config, _ = shape_config("smolvlm-256m")
    config.text_config = LlamaConfig(vocab_size=49280, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                                     num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=False)
    return config


def _blip_vqa_base():
    """Salesforce/blip-vqa-base: ViT-B/16 at 384 px + BERT-base text encoder and decoder."""
    from transformers import BlipConfig

    return BlipConfig()


def _shape(name):
    def build():
        from .shapes import shape_config

        return shape_config(name)[1]
    return build


@dataclass(frozen=True)
class Model:
    backbone: str  # registry name
    build: object
    vision_tokens: int  # patches the vision tower sees (one image)
    llm_tokens: int  # tokens the language model sees: image tokens + text
    stored_bytes: int  # bytes per parameter in the published checkpoint


MODELS = [
    Model("smolvlm-256m", _shape("smolvlm-256m"), 1024, 64 + TEXT_TOKENS, 2),
    Model("smolvlm-500m", _smolvlm_500m, 1024, 64 + TEXT_TOKENS, 2),
    Model("blip-vqa-base", _blip_vqa_base, 577, 2 * TEXT_TOKENS, 4),  # question -> encoder, answer -> decoder
    Model("qwen2-vl-2b", _shape("qwen2-vl-2b"), 2304, 576 + TEXT_TOKENS, 2),
    Model("medgemma-4b", _shape("medgemma-4b"), 4096, 256 + TEXT_TOKENS, 2),
    Model("llava-1.5-7b", _llava_15_7b, 577, 576 + TEXT_TOKENS, 2),
    Model("llava-med-v1.5-7b", _shape("llava-7b"), 577, 576 + TEXT_TOKENS, 2),
]


@dataclass
class Shape:
    params: int
    quantizable: int  # weights bitsandbytes turns into NF4
    norm_params: int
    linear: dict  # part -> linear weight params (vision / llm)
    layers: dict  # part -> [(h, i, d_attn)] per transformer layer
    vocab: int
    fp16_ok: bool


def measure(model: Model) -> Shape:
    """Exact counts from the meta-device model."""
    import torch.nn as nn

    from ..backbones import BACKBONES_BY_NAME, FAMILIES, meta_model, part_of
    from ..structure import is_norm

    config = model.build()
    family = FAMILIES[BACKBONES_BY_NAME[model.backbone].family]
    m = meta_model(config, family)
    params = sum(p.numel() for p in m.parameters())
    skip = tuple(family.not_quantized)
    quantizable, norms = 0, 0
    linear = {"vision": 0, "llm": 0}
    for name, mod in m.named_modules():
        if is_norm(mod):
            norms += sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Linear):
            if not any(s in name for s in skip) and name != "lm_head":
                quantizable += mod.weight.numel()
            part = "vision" if part_of(family, name) == "vision" else "llm"
            linear[part] += mod.weight.numel()
    layers = {"vision": [], "llm": []}
    for name, mod in m.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) < 2:
            continue
        blocks = [b for b in mod if any(isinstance(x, nn.Linear) for x in b.modules())]
        if len(blocks) != len(mod):
            continue
        part = "vision" if part_of(family, name + ".0") == "vision" else "llm"
        for block in blocks:
            lins = [x for x in block.modules() if isinstance(x, nn.Linear)]
            h = min(x.in_features for x in lins)
            i = max(x.out_features for x in lins)
            layers[part].append((h, i, h))
    out = m.get_output_embeddings()
    vocab = out.weight.shape[0] if out is not None else config.text_config.vocab_size  # BLIP: its decoder's
    return Shape(params, quantizable, norms, linear, layers, vocab, family.fp16_ok)


# ------------------------------------------------------------------ the hardware model


def plan(model: Model, shape: Shape, card: Card, mode: str) -> dict:
    """mode: '4bit' or '16bit' (bf16, or fp16 on a card without bf16). Families that overflow
    fp16 compute in fp32 on a card without bf16 (medln.precision's auto rule)."""
    precision = "bf16" if card.bf16 else ("fp16" if shape.fp16_ok else "fp32")
    elem = 4 if precision == "fp32" else 2
    rest = shape.params - shape.quantizable
    weights = (shape.quantizable * NF4_BITS / 8 + rest * elem) if mode == "4bit" else shape.params * elem
    tokens = {"vision": model.vision_tokens, "llm": model.llm_tokens}
    acts = sum(tokens[p] * (8 * h + 3 * i) * elem for p, ls in shape.layers.items() for h, i, _ in ls)
    acts += model.llm_tokens * shape.vocab * 10  # per sample
    fixed = weights + shape.norm_params * 16 + OVERHEAD_GB * 1e9
    max_batch = int((card.memory_gb * 1e9 - fixed) // acts) if card.memory_gb * 1e9 > fixed else 0
    batch = min(BATCH, max_batch)
    micro_batches = -(-BATCH // batch) if batch else 0
    flops = 4 * sum(shape.linear[p] * tokens[p] for p in tokens)
    flops += sum(3 * 4 * tokens[p] ** 2 * d for p, ls in shape.layers.items() for _, _, d in ls)
    kind = "fp32" if precision == "fp32" else mode
    peak = (card.tflops_32 if precision == "fp32" else card.tflops_16) * 1e12
    n_layers = sum(len(ls) for ls in shape.layers.values())
    step_s = (BATCH * flops / (MFU[kind] * peak) + micro_batches * n_layers * KERNELS_PER_LAYER[kind] * LAUNCH_S
              if batch else None)
    return {"card": card.name, "mode": mode, "precision": precision, "weights_gb": round(weights / 1e9, 2),
            "act_gb_per_sample": round(acts / 1e9, 3), "need_gb_batch1": round((fixed + acts) / 1e9, 2),
            "max_batch": max_batch, "micro_batches": micro_batches,
            "step_s": None if step_s is None else round(step_s, 3),
            "tflop_per_sample": round(flops / 1e12, 3)}


def rows() -> list[dict]:
    out = []
    for model in MODELS:
        shape = measure(model)
        out.append({"backbone": model.backbone, "params": shape.params, "quantizable": shape.quantizable,
                    "download_gb": round(shape.params * model.stored_bytes / 1e9, 2),
                    "tokens": {"vision": model.vision_tokens, "llm": model.llm_tokens},
                    "plans": [plan(model, shape, card, mode) for card in CARDS for mode in ("4bit", "16bit")],
                    "shape": asdict(shape) | {"layers": {k: len(v) for k, v in shape.layers.items()}}})
    return out


def markdown(table: list[dict]) -> str:
    """One row per backbone; per card: seconds per 8-sample `ln` step in 4-bit and in 16-bit
    (bf16, fp16 where the card has no bf16, fp32 for a family that refuses fp16), and the
    largest micro-batch that fits; ✗: not even one sample fits."""
    head = "| backbone | params | download | 4-bit weights | " + " | ".join(c.name for c in CARDS) + " |"
    sep = "|---|---:|---:|---:|" + "---|" * len(CARDS)
    lines = [head, sep]
    for r in table:
        cells = []
        for card in CARDS:
            parts = []
            for p in (x for x in r["plans"] if x["card"] == card.name):
                label = "4-bit" if p["mode"] == "4bit" else p["precision"]
                if not p["max_batch"]:
                    parts.append(f"{label}: ✗ (needs {p['need_gb_batch1']:.0f} GB)")
                else:
                    parts.append(f"{label}: {p['step_s']:.2f} s (batch ≤ {p['max_batch']})")
            cells.append("<br>".join(parts))
        w4 = next(p["weights_gb"] for p in r["plans"] if p["mode"] == "4bit" and p["precision"] != "fp32")
        lines.append(f"| `{r['backbone']}` | {r['params'] / 1e9:.2f} B | {r['download_gb']:.1f} GB | {w4:.1f} GB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="every figure, as JSON")
    args = ap.parse_args(argv)
    table = rows()
    print(json.dumps(table, indent=1) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
