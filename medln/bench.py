"""Speed and memory at real shapes, with random weights: `python -m medln bench`.

Each (shape, quant, batch, seq, scope) row builds the model from a config whose
hyper-parameters are the published ones, with random weights, directly on the device (no
download; 4-bit: bitsandbytes NF4 quantization of those random weights), applies the scope
with `medln.scopes.apply_scope` (the selection training uses), and measures in one run:

- training: steady-state seconds per optimizer step (CUDA events after warm-up; CPU:
  perf_counter), trained tokens/s, peak GPU memory, model FLOPs utilisation (MFU);
- what trains: trainable parameters and the adapter's bytes (what a run would save);
- generation: first-token latency and decode tokens/s, greedy, before the scope is applied
  (base) and after training with the adapter on (tuned): one copy of the base weights.

A scope that cannot run (full fine-tuning of 4-bit weights, out of memory, ...) gives a row
with a "skipped" reason instead of stopping the sweep. Rows are written as they finish, so a
command stopped at its time limit keeps what it measured. bench/README.md has the GPU recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import re
import statistics
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .backbones import FAMILIES, Family, model_class, part_of
from .config import ConfigError, _f
from .scopes import ScopeError, TuningScope, apply_scope, count_params, get_scope, select, select_in_model

# The columns of every row (the issue's contract); rows also carry the extras in EXTRA_KEYS.
ROW_KEYS = ("shape", "scope", "quant", "batch", "seq", "step_s", "tokens_per_s", "peak_mem_gb", "mfu", "trainable",
            "adapter_bytes", "gen_tokens_per_s_base", "gen_tokens_per_s_tuned")
EXTRA_KEYS = ("gen_first_token_s_base", "gen_first_token_s_tuned", "gen_peak_mem_gb_base", "gen_peak_mem_gb_tuned",
              "total_params", "flops_per_step", "image_tokens", "loss", "sdpa", "compile", "grad_ckpt", "toy",
              "lora_r", "steps", "warmup", "build_s", "notes", "skipped")

# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A model at its published size: a transformers config built from hyper-parameters."""

    name: str
    family: str  # key of medln.backbones.FAMILIES
    build_config: Callable[[], object]
    reference_params: int | None  # REFERENCE.md's (computed) count; None: none published
    image_side: int | None = None  # Qwen2-VL takes any resolution: the side (pixels) benchmarked
    note: str = ""


def _llava_7b():
    """LLaVA-Med v1.5 (`-hf` conversion): CLIP ViT-L/14-336 + Mistral-7B-Instruct-v0.2, MLP projector."""
    from transformers import CLIPVisionConfig, LlavaConfig, MistralConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                                       hidden_act="quick_gelu"),
        text_config=MistralConfig(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                                  rope_theta=1e6, sliding_window=None, tie_word_embeddings=False),
        image_token_index=32000,
        image_seq_length=576,
        vision_feature_layer=-2,  # as LLaVA-1.5: the last CLIP block's output is never used
        vision_feature_select_strategy="default",  # CLS dropped: 576 image tokens
        projector_hidden_act="gelu",
    )


def _smolvlm_256m():
    """SmolVLM-256M: SigLIP base-patch16-512 + SmolLM2-135M, pixel shuffle by 4 (64 tokens per tile)."""
    from transformers import Idefics3Config, Idefics3VisionConfig, LlamaConfig

    return Idefics3Config(
        vision_config=Idefics3VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=LlamaConfig(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                rope_theta=100000.0, tie_word_embeddings=False),
        scale_factor=4,
        image_token_id=49190,
        tie_word_embeddings=False,
    )


def _qwen2_vl_2b():
    """Qwen2-VL-2B: 675M ViT (patch 14, 2x2 merge) + Qwen2-1.5B decoder with M-RoPE, tied embeddings."""
    from transformers import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

    return Qwen2VLConfig(
        vision_config=Qwen2VLVisionConfig(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16,
                                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=Qwen2VLTextConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                      num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                      max_position_embeddings=32768, tie_word_embeddings=True,
                                      rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                       "mrope_section": [16, 24, 24]}),
        tie_word_embeddings=True,
    )


def _medgemma_4b():
    """MedGemma-4B (Gemma 3 4B): SigLIP so400m at 896 px, 256 pooled image tokens; 5 local : 1 global layers."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    layers = 34
    return Gemma3Config(
        text_config=Gemma3TextConfig(vocab_size=262208, hidden_size=2560, intermediate_size=10240,
                                     num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                     head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                                     layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                                  for i in range(layers)]),
        vision_config=SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                         num_attention_heads=16, image_size=896, patch_size=14,
                                         vision_use_head=False),
        mm_tokens_per_image=256,
    )


def _tiny():
    """A 0.23 M-parameter LLaVA for CPU tests (widths multiples of 64: the 4-bit block size)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=32, patch_size=8, projection_dim=64),
        text_config=LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                tie_word_embeddings=False),
        image_token_index=511,
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in [
        Shape("llava-7b", "llava", _llava_7b, 7_567_000_000,
              note="LLaVA-Med v1.5 (Mistral-7B + CLIP ViT-L/14-336): 576 image tokens"),
        Shape("smolvlm-256m", "idefics3", _smolvlm_256m, 256_500_000,
              note="one 512 px tile (64 image tokens); the processor splits large images into up to 16 tiles + 1"),
        Shape("qwen2-vl-2b", "qwen2_vl", _qwen2_vl_2b, 2_209_000_000, image_side=672,
              note="672x672 image: 48x48 patches, 576 image tokens after the 2x2 merge"),
        Shape("medgemma-4b", "gemma3", _medgemma_4b, 4_300_000_000,
              note="896 px image: 4,096 patches pooled to 256 image tokens"),
        Shape("tiny", "llava", _tiny, None, note="CPU test model: 16 image tokens"),
    ]
}

# "Toy" widths keep a shape's image geometry and sequence layout (so its input building is
# checked on a CPU) but shrink every width and depth, and the vocabulary to TOY_VOCAB (special
# token ids renumbered below it): a 262k-entry logits matrix would dominate a CPU step.
TOY_VOCAB = 512
TOY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16}
TOY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "projection_dim": 64, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2}


def toy_config(config):
    """The same model type at toy widths (2 layers, width 64): a CPU dry run of a real shape."""
    d = config.to_dict()
    renumber: dict[int, int] = {}  # old special id -> new one, the same in every sub-config
    for sub in (d, d["text_config"]):
        if "vocab_size" in sub:
            sub["vocab_size"] = TOY_VOCAB
        for k, v in sub.items():
            if k.endswith(("_token_id", "_token_index")) and isinstance(v, int) and v >= TOY_VOCAB - 64:
                sub[k] = renumber.setdefault(v, TOY_VOCAB - 1 - len(renumber))
            elif k == "eos_token_id" and isinstance(v, list):
                sub[k] = [renumber.setdefault(i, TOY_VOCAB - 1 - len(renumber)) if i >= TOY_VOCAB - 64 else i
                          for i in v]
    for key, sizes in (("text_config", TOY_TEXT), ("vision_config", TOY_VISION)):
        sub = d[key]
        sub.update({k: v for k, v in sizes.items() if k in sub})
        if sub.get("layer_types"):  # keep one layer of each kind (Gemma 3: sliding and full)
            kinds = list(dict.fromkeys(sub["layer_types"]))
            sub["layer_types"] = [kinds[i % len(kinds)] for i in range(TOY_TEXT["num_hidden_layers"])]
        rope = sub.get("rope_parameters") or {}
        if "mrope_section" in rope:  # M-RoPE splits head_dim/2 frequencies into (t, h, w)
            half = TOY_TEXT["head_dim"] // 2
            rope["mrope_section"] = [half - 2 * (half // 3), half // 3, half // 3]
    return type(config).from_dict(d)


def shape_config(name: str, *, toy: bool = False):
    try:
        shape = SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}") from None
    config = shape.build_config()
    return shape, (toy_config(config) if toy else config), FAMILIES[shape.family]


def meta_param_count(name: str) -> int:
    """Parameters of a shape, counted on the meta device (no memory; tied weights once)."""
    from .scopes import meta_model

    shape, config, family = shape_config(name)
    return count_params(meta_model(config, family))


# --------------------------------------------------------------------------- synthetic inputs


@dataclass
class ImageBlock:
    """One image as the family's processor expands it in the token sequence, and its pixels."""

    ids: list[int]  # placeholder tokens, image tokens included
    image_tokens: int  # tokens that carry image features
    pixels: Callable  # (n images, torch.Generator) -> dict of model inputs
    type_ids: str | None = None  # input marking image tokens with 1, as the processor returns it


def _randn(*shape, g):
    import torch

    return torch.randn(*shape, generator=g)


def _llava_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 + (1 if config.vision_feature_select_strategy == "full" else 0)
    return ImageBlock([config.image_token_id] * n, n,
                      lambda k, g: {"pixel_values": _randn(k, 3, v.image_size, v.image_size, g=g)})


def _idefics3_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2  # pixel shuffle
    return ImageBlock([config.image_token_id] * n, n,  # one tile per image: (k, tiles, 3, H, W)
                      lambda k, g: {"pixel_values": _randn(k, 1, 3, v.image_size, v.image_size, g=g)})


def _qwen2_vl_block(config, shape: Shape) -> ImageBlock:
    import torch

    v = config.vision_config
    factor = v.patch_size * v.spatial_merge_size
    side = max(factor, (shape.image_side or 448) // factor * factor)
    grid = side // v.patch_size
    n = grid * grid // v.spatial_merge_size**2

    def pixels(k, g):  # flattened patches (k * grid^2, C * T * P * P) and their (t, h, w) grid
        return {"pixel_values": _randn(k * grid * grid, 3 * v.temporal_patch_size * v.patch_size**2, g=g),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * k)}

    ids = [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
    # transformers >= 5.2x computes M-RoPE positions from the processor's mm_token_type_ids
    takes = _forward_takes(FAMILIES[shape.family], "mm_token_type_ids")
    return ImageBlock(ids, n, pixels, type_ids="mm_token_type_ids" if takes else None)


def _forward_takes(family: Family, name: str) -> bool:
    import inspect

    return name in inspect.signature(model_class(family).forward).parameters


def _gemma3_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = config.mm_tokens_per_image
    ids = [config.boi_token_index] + [config.image_token_id] * n + [config.eoi_token_index]
    return ImageBlock(ids, n, lambda k, g: {"pixel_values": _randn(k, 3, v.image_size, v.image_size, g=g)},
                      type_ids="token_type_ids")  # bidirectional attention within the image


IMAGE_BLOCKS: dict[str, Callable[[object, Shape], ImageBlock]] = {
    "llava": _llava_block, "idefics3": _idefics3_block, "qwen2_vl": _qwen2_vl_block, "gemma3": _gemma3_block,
}


def _special_ids(config) -> set[int]:
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "boi_token_index",
             "eoi_token_index")
    return {i for i in (getattr(config, n, None) for n in names) if isinstance(i, int)}


def synthetic_batch(shape: Shape, config, family: Family, batch: int, seq: int, *, labels: bool = True,
                    seed: int = 0) -> dict:
    """`batch` sequences of `seq` tokens: <bos> + one image block + random text. Labels cover
    the text (the image block and <bos> are -100), as a VQA answer would."""
    import torch

    block = IMAGE_BLOCKS[family.name](config, shape)
    text_cfg = config.get_text_config()
    prefix = [text_cfg.bos_token_id if text_cfg.bos_token_id is not None else 1] + block.ids
    if seq < len(prefix) + 2:
        raise ConfigError(f"--seq {seq} is too short for {shape.name}: one image takes {len(prefix)} tokens")
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, text_cfg.vocab_size, (batch, seq - len(prefix)), generator=g)
    for special in _special_ids(config):  # random text must not look like image placeholders
        text[text == special] = 3
    ids = torch.cat([torch.tensor(prefix).expand(batch, -1), text], dim=1)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **block.pixels(batch, g)}
    if block.type_ids:
        out[block.type_ids] = (ids == config.image_token_id).long()
    if labels:
        lab = ids.clone()
        lab[:, : len(prefix)] = -100
        out["labels"] = lab
    return out


def image_tokens(shape: Shape, config, family: Family) -> int:
    return IMAGE_BLOCKS[family.name](config, shape).image_tokens


# --------------------------------------------------------------------------- model building


def build_model(config, family: Family, device, dtype, *, sdpa: bool = True):
    """Random weights, allocated and initialised on `device` (transformers' own init)."""
    import torch

    with torch.device(device):
        model = model_class(family)._from_config(copy.deepcopy(config), dtype=dtype,
                                                 attn_implementation="sdpa" if sdpa else "eager")
    return model


def _skipped(name: str, keys) -> bool:
    """transformers' llm_int8_skip_modules rule: a key names a module or a dotted component."""
    return any(name == k or name.startswith(k + ".") or f".{k}." in f".{name}." for k in keys)


def quantize_4bit(model, skip, compute_dtype) -> int:
    """Replace every nn.Linear (except `skip`) by a bitsandbytes NF4 Linear4bit holding its
    weights quantized (double quantization, QLoRA's recipe, as backbones.quantization_config).
    transformers' bnb integration only quantizes while loading a checkpoint, hence by hand.
    Returns the number of layers replaced."""
    import bitsandbytes as bnb
    import torch.nn as nn

    # names only: each bf16 layer is freed as soon as its 4-bit replacement is in place
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _skipped(n, skip)]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        linear = model.get_submodule(name)
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta")
        # .to(device) on an unquantized Params4bit quantizes it there (the bf16 tensor is then freed)
        q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=True,
                                     quant_type="nf4", module=q).to(linear.weight.device)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(model.get_submodule(parent_name), attr, q)
        del linear
    model.is_loaded_in_4bit = True  # peft wraps Linear4bit with its 4-bit LoRA layer only if set
    return len(targets)


def compile_blocks(model) -> int:
    """Regional torch.compile: each block of every top-level layer list, compiled in place."""
    import torch.nn as nn

    done: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 1 and not any(name.startswith(d + ".") for d in done):
            for i, block in enumerate(m):
                block.compile()
                done.append(f"{name}.{i}")
    return len(done)


# --------------------------------------------------------------------------- FLOPs and MFU

# bf16 dense tensor-core peak, TFLOP/s (vendor data sheets); the first name contained in the
# device name wins, so the more specific names come first.
PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "T4": 65.0,
}


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def forward_flops(model, inputs: dict, autocast) -> dict[str, int]:
    """Matmul FLOPs of one forward pass per module, counted with hooks: 2 x rows x in x out
    for every linear layer (4-bit ones too) and the convolution FLOPs of patch embeddings. The
    rows a layer sees differ by part (vision patches vs text tokens), which 2·N·tokens misses.
    Attention scores (the T^2 term) are not counted: the MFU is a slight underestimate."""
    import torch
    import torch.nn as nn

    from .scopes import is_norm

    flops: dict[str, int] = {}
    hooks = []

    def linear_hook(name):
        def hook(m, args, out):
            rows = args[0].numel() // m.in_features
            flops[name] = flops.get(name, 0) + 2 * rows * m.in_features * m.out_features
        return hook

    def conv_hook(name):
        def hook(m, args, out):
            per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
            flops[name] = flops.get(name, 0) + 2 * out.numel() * per_output
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif hasattr(m, "in_features") and hasattr(m, "out_features") and not is_norm(m):
            hooks.append(m.register_forward_hook(linear_hook(name)))
    try:
        with torch.no_grad(), autocast():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return flops


PART_ORDER = ("vision", "connector", "llm")  # the order activations flow in


def training_flops(fwd: dict[str, int], family: Family, scope: TuningScope, modules: list[str]) -> int:
    """FLOPs of one training step: forward, plus the input-gradient matmuls (x1) wherever a
    gradient flows (every part from the first one holding a trained tensor onwards), plus the
    weight-gradient matmuls (x1) of trained whole weights. For LN scopes this is the 4·N·tokens
    of the issue, for full fine-tuning 6·N·tokens; for LoRA/ln-llm the vision tower is forward-only."""
    if scope.kind == "full":
        return 3 * sum(fwd.values())
    trained_parts = {part_of(family, m) or "llm" for m in modules}
    first = min(PART_ORDER.index(p) for p in trained_parts)
    whole = set(modules) if scope.kind == "linear" else set()
    total = 0
    for name, f in fwd.items():
        part = part_of(family, name) or "llm"
        total += f * (1 + (PART_ORDER.index(part) >= first) + (name in whole))
    return total


# --------------------------------------------------------------------------- measurements


class _Clock:
    """Per-step timing: CUDA events on a GPU (no host sync inside the loop), else perf_counter."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch
        self.marks: list = []

    def mark(self):
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 4) if device.type == "cuda" else None


def _reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def time_training(model, inputs: dict, *, steps: int, warmup: int, device, autocast) -> tuple[list[float], float, object]:
    """AdamW steps with gradient clipping (as train.fit); returns the timed steps' seconds,
    the last loss and the optimizer (freed by the caller)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # A tiny learning rate: random weights, only the cost matters; fused AdamW on a GPU.
    opt = torch.optim.AdamW(params, lr=1e-7, fused=device.type == "cuda")
    clock = _Clock(device)
    model.train()
    for i in range(warmup + steps):
        if i >= warmup:
            clock.mark()
        with autocast():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    clock.mark()
    return clock.intervals(), float(loss.detach().float()), opt


class _TokenClock:
    """A generate() streamer that only notes when each step's tokens reach the host: put() gets
    the prompt first, then every new token (generate copies it to the CPU: a device sync)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def time_generation(model, inputs: dict, *, new_tokens: int, device, autocast, eager) -> dict:
    """Greedy decoding of exactly `new_tokens` tokens (min = max: random weights may pick EOS),
    after a 2-token warm-up. first_token_s: call to first token (prefill, vision included);
    tokens_per_s: decode rate, batch x (n - 1) / (t(n) - t(1)); peak_mem_gb: during the call."""
    import torch

    model.eval()
    n_prompt, batch = inputs["input_ids"].shape[1], inputs["input_ids"].shape[0]

    def run(n):
        clock = _TokenClock()
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                             streamer=clock)
        _sync(device)
        if out.shape[1] - n_prompt != n:
            raise RuntimeError(f"generate returned {out.shape[1] - n_prompt} new tokens, {n} asked")
        return t0, clock.times

    with torch.inference_mode(), autocast(), eager():
        run(2)  # warm-up: kernels, cache allocation
        _reset_peak(device)
        t0, times = run(new_tokens)
        peak = _peak_gb(device)
    first = times[1] - t0  # times[0]: the prompt handed to the streamer
    rate = batch * (new_tokens - 1) / (times[-1] - times[1]) if new_tokens > 1 else None
    return {"first_token_s": round(first, 5), "tokens_per_s": round(rate, 2) if rate else None, "peak_mem_gb": peak}


def adapter_bytes(model) -> int:
    """Bytes of what a run saves: the peft adapter state (LN copies, LoRA A/B, trained
    projections) in its dtype; for full fine-tuning the whole model."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        tensors = get_peft_model_state_dict(model).values()
    else:
        seen, tensors = set(), []
        for t in model.state_dict().values():
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                tensors.append(t)
    return sum(t.numel() * t.element_size() for t in tensors)


def _free(device, *, compiled: bool = False):
    import torch

    if device.type == "cuda":  # only GPU memory is measured (a full collection costs ~0.3 s)
        gc.collect()
        torch.cuda.empty_cache()
    if compiled:  # compiled graphs hold the model; importing torch._dynamo otherwise costs seconds
        torch._dynamo.reset()


# --------------------------------------------------------------------------- the benchmark


@dataclass
class BenchConfig:
    shape: str = _f("tiny", "comma-separated shapes: " + ", ".join(SHAPES))
    scopes: str = _f("ln,lora,attn,ffn,full", "comma-separated tuning scopes (see `scopes`)")
    quant: str = _f("4bit", "comma-separated: 4bit (NF4), bf16 (the GPU dtype) or none (fp32 on CPU, bf16 on GPU)")
    batch: str = _f("4", "comma-separated batch sizes")
    seq: str = _f("1024", "comma-separated sequence lengths in tokens, image tokens included")
    steps: int = _f(10, "timed optimizer steps per row")
    warmup: int = _f(3, "untimed optimizer steps first (allocation, autotuning, compilation)")
    gen_tokens: int = _f(64, "new tokens per generation measurement (0: skip generation)")
    gen_batch: int = _f(1, "prompts per generation measurement")
    gen_text: int = _f(32, "text tokens after the image in a generation prompt")
    lora_r: int = _f(8, "LoRA rank; LoRA targets every attention and MLP projection of the language model")
    sdpa: bool = _f(True, "PyTorch scaled-dot-product attention (flash/memory-efficient kernels); off: eager")
    compile: bool = _f(False, "torch.compile each transformer block (regional) for the training steps")
    grad_ckpt: bool = _f(False, "gradient checkpointing (recompute activations in backward)")
    toy: bool = _f(False, "toy widths (2 layers, width 64) with the shape's real image and sequence layout: CPU dry run")
    device: str = _f("", "cuda or cpu (default: cuda when available)")
    peak_tflops: float | None = _f(None, "peak dense bf16 TFLOP/s for MFU (default: from the device name)")
    out: str = _f("", "write the results JSON here after every row (a folder: <folder>/<device>.json)")
    seed: int = _f(0, "seed of the random weights and inputs")

    def lists(self) -> dict[str, list]:
        def split(s):
            return [x.strip() for x in str(s).split(",") if x.strip()]

        return {"shape": split(self.shape), "scopes": split(self.scopes), "quant": split(self.quant),
                "batch": [int(x) for x in split(self.batch)], "seq": [int(x) for x in split(self.seq)]}

    def validate(self) -> "BenchConfig":
        problems = []
        try:
            lists = self.lists()
        except ValueError as e:
            raise ConfigError(f"invalid bench config:\n  batch/seq must be integers: {e}") from None
        problems += [f"shape: unknown {s!r} (choose from {', '.join(SHAPES)})" for s in lists["shape"] if s not in SHAPES]
        for s in lists["scopes"]:
            try:
                get_scope(s)
            except ScopeError as e:
                problems.append(f"scopes: {e}")
        problems += [f"quant: {q!r} is not 4bit, bf16 or none" for q in lists["quant"] if q not in ("4bit", "bf16", "none")]
        problems += [f"{k}: must be >= 1, got {v}" for k in ("batch", "seq") for v in lists[k] if v < 1]
        for k in ("shape", "scopes", "quant", "batch", "seq"):
            if not lists[k]:
                problems.append(f"{k}: empty")
        for k in ("steps", "gen_batch", "lora_r"):
            if getattr(self, k) < 1:
                problems.append(f"{k}: must be >= 1, got {getattr(self, k)}")
        for k in ("warmup", "gen_tokens", "gen_text"):
            if getattr(self, k) < 0:
                problems.append(f"{k}: must be >= 0, got {getattr(self, k)}")
        if self.device not in ("", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device: {self.device!r} is not cpu or cuda")
        if not problems:  # every sequence must hold its shape's image
            for name in lists["shape"]:
                shape, config, family = shape_config(name, toy=self.toy)
                need = len(IMAGE_BLOCKS[family.name](config, shape).ids) + 3
                problems += [f"seq: {t} is too short for {name} (one image takes {need - 3} tokens)"
                             for t in lists["seq"] if t < need]
        if problems:
            raise ConfigError("invalid bench config:\n  " + "\n  ".join(problems))
        return self


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for pkg in ("transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    return env


def _empty_row(shape: str, scope: str, quant: str, batch: int, seq: int, cfg: BenchConfig) -> dict:
    row = {k: None for k in ROW_KEYS + EXTRA_KEYS}
    row.update(shape=shape, scope=scope, quant=quant, batch=batch, seq=seq, sdpa=cfg.sdpa, compile=cfg.compile,
               grad_ckpt=cfg.grad_ckpt, toy=cfg.toy, lora_r=cfg.lora_r, steps=cfg.steps, warmup=cfg.warmup, notes=[])
    return row


def bench_row(cfg: BenchConfig, shape_name: str, scope_name: str, quant: str, batch: int, seq: int,
              device=None) -> dict:
    """One measurement; never raises for a scope that cannot run: the row says why in "skipped"."""
    import torch

    device = torch.device(device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    row = _empty_row(shape_name, scope_name, quant, batch, seq, cfg)
    # The precision training would use here (medln.precision: bf16 on a GPU with it, fp16 on
    # a T4, fp32 for a family that refuses fp16 there, fp32 on a CPU), or bf16 when asked for.
    from .precision import resolve_precision

    precision = resolve_precision("bf16" if quant == "bf16" else "auto", device=str(device),
                                  fp16_ok=FAMILIES[SHAPES[shape_name].family].fp16_ok, model=shape_name)
    dtype = precision.dtype
    quant_arg = "4bit" if quant == "4bit" else "none"  # medln.scopes' vocabulary
    mixed = precision.autocast

    def autocast():  # as train.fit: fp32 trained tensors, matmuls in the precision's dtype
        return torch.autocast(device.type, dtype=dtype) if mixed else nullcontext()

    def eager():  # generation runs eager with or without --compile: base and tuned alike
        return torch.compiler.set_stance("force_eager") if cfg.compile else nullcontext()

    model = opt = inputs = gen_inputs = None
    try:
        scope = get_scope(scope_name)
        shape, config, family = shape_config(shape_name, toy=cfg.toy)
        if scope.kind == "full" and quant_arg != "none":
            select([], [], family, scope, quant=quant_arg)  # scopes' own refusal, before anything is built
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(config, family, device, dtype, sdpa=cfg.sdpa)
        row["total_params"] = count_params(model)
        if quant == "4bit":
            keep = list(family.not_quantized)
            if scope.kind == "linear":  # attn/ffn train whole projections: keep them bf16 (scopes.py)
                keep += select_in_model(model, config, family, scope).modules
            quantize_4bit(model, keep, dtype)
            _free(device)  # hand the bf16 blocks back to the driver
        _sync(device)
        row["build_s"] = round(time.perf_counter() - t0, 2)
        row["image_tokens"] = image_tokens(shape, config, family)

        def on_device(d):
            return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in d.items()}

        inputs = on_device(synthetic_batch(shape, config, family, batch, seq, seed=cfg.seed))
        fwd = forward_flops(model, inputs, autocast)
        if cfg.gen_tokens:
            prompt_len = 1 + len(IMAGE_BLOCKS[family.name](config, shape).ids) + cfg.gen_text
            gen_inputs = on_device(synthetic_batch(shape, config, family, cfg.gen_batch, prompt_len, labels=False,
                                                   seed=cfg.seed + 1))
            base = time_generation(model, gen_inputs, new_tokens=cfg.gen_tokens, device=device, autocast=autocast,
                                   eager=eager)
            row.update(gen_tokens_per_s_base=base["tokens_per_s"], gen_first_token_s_base=base["first_token_s"],
                       gen_peak_mem_gb_base=base["peak_mem_gb"])

        torch.manual_seed(cfg.seed)  # LoRA's A matrices
        model, selection = apply_scope(model, model.config, family, scope, quant=quant_arg, lora_r=cfg.lora_r)
        row["notes"] += selection.notes
        row["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row["adapter_bytes"] = adapter_bytes(model)
        flops = training_flops(fwd, family, scope, selection.modules)
        row["flops_per_step"] = flops
        if cfg.grad_ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.compile:
            row["notes"].append(f"compiled {compile_blocks(model)} blocks")

        _sync(device)
        _reset_peak(device)
        times, loss, opt = time_training(model, inputs, steps=cfg.steps, warmup=cfg.warmup, device=device,
                                         autocast=autocast)
        row["peak_mem_gb"] = _peak_gb(device)
        step_s = statistics.median(times)
        peak = cfg.peak_tflops or (peak_tflops(device_name(device)) if device.type == "cuda" else None)
        row.update(step_s=round(step_s, 6), tokens_per_s=round(batch * seq / step_s, 1), loss=round(loss, 4),
                   mfu=round(flops / step_s / (peak * 1e12), 4) if peak else None)
        if not math.isfinite(loss):
            row["notes"].append("non-finite loss")
        opt = inputs = None  # optimizer state and activations' inputs go before the tuned generation
        model.zero_grad(set_to_none=True)
        _free(device)

        if cfg.gen_tokens:
            if cfg.grad_ckpt:
                model.gradient_checkpointing_disable()
            tuned = time_generation(model, gen_inputs, new_tokens=cfg.gen_tokens, device=device, autocast=autocast,
                                    eager=eager)
            row.update(gen_tokens_per_s_tuned=tuned["tokens_per_s"], gen_first_token_s_tuned=tuned["first_token_s"],
                       gen_peak_mem_gb_tuned=tuned["peak_mem_gb"])
    except ScopeError as e:
        row["skipped"] = str(e)
    except torch.cuda.OutOfMemoryError as e:
        row["skipped"] = f"out of memory at batch {batch} x {seq} tokens: {str(e).splitlines()[0]}"
    except Exception as e:  # noqa: BLE001 - one broken row must not end a GPU sweep
        traceback.print_exc(file=sys.stderr)
        row["skipped"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        model = opt = inputs = gen_inputs = None  # noqa: F841 - drop the references before freeing
        _free(device, compiled=cfg.compile)
    return row


def run_bench(cfg: BenchConfig, *, on_row: Callable[[dict], None] | None = None) -> dict:
    """Every (shape, quant, batch, seq, scope) combination, in that nesting order:
    {"device", "env", "config", "rows": [...]}. `on_row` sees each row as it finishes."""
    import torch

    cfg.validate()
    lists = cfg.lists()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = {"device": device_name(device), "env": environment(), "config": dataclasses.asdict(cfg), "rows": []}
    out = results_path(cfg.out, result["device"]) if cfg.out else None
    for shape in lists["shape"]:
        for quant in lists["quant"]:
            for batch in lists["batch"]:
                for seq in lists["seq"]:
                    for scope in lists["scopes"]:
                        row = bench_row(cfg, shape, scope, quant, batch, seq, device=device)
                        result["rows"].append(row)
                        if out:
                            write_results(result, out)
                        if on_row:
                            on_row(row)
    return result


def results_path(out: str, device: str) -> Path:
    path = Path(out)
    if path.is_dir() or out.endswith("/"):
        slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"
        path = path / f"{slug}.json"
    return path


def merge_results(paths: list[str]) -> dict:
    """Result files of one device (e.g. two device calls) as one: later rows replace earlier
    rows measured with the same settings."""
    merged: dict = {"device": None, "env": None, "config": [], "rows": []}
    index: dict[tuple, int] = {}
    for p in paths:
        data = json.loads(Path(p).read_text())
        if merged["device"] not in (None, data["device"]):
            raise ConfigError(f"{p} was measured on {data['device']}, not {merged['device']}: keep one device per file")
        merged["device"], merged["env"] = data["device"], data.get("env")
        merged["config"].append(data.get("config"))
        for row in data["rows"]:
            key = tuple(row.get(k) for k in ("shape", "scope", "quant", "batch", "seq", "sdpa", "compile",
                                             "grad_ckpt", "toy"))
            if key in index:
                merged["rows"][index[key]] = row
            else:
                index[key] = len(merged["rows"])
                merged["rows"].append(row)
    return merged


def write_results(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- CLI


def _fmt(row: dict) -> str:
    head = f"{row['shape']:<13} {row['scope']:<6} {row['quant']:<5} b={row['batch']} t={row['seq']}"
    if row.get("skipped"):
        return f"{head}  skipped: {row['skipped']}"

    def g(k, fmt):
        return format(row[k], fmt) if row[k] is not None else "-"

    return (f"{head}  step {g('step_s', '.4f')} s  {g('tokens_per_s', ',.0f')} tok/s  peak {g('peak_mem_gb', '.2f')} GB"
            f"  mfu {g('mfu', '.3f')}  trainable {row['trainable']:,}  adapter {row['adapter_bytes']:,} B"
            f"  gen {g('gen_tokens_per_s_base', '.1f')} -> {g('gen_tokens_per_s_tuned', '.1f')} tok/s")


def cmd_bench(args) -> None:
    if args.merge:
        if not args.out:
            raise ConfigError("--merge needs --out (the combined file)")
        merged = merge_results(args.merge)
        path = results_path(args.out, merged["device"])
        write_results(merged, path)
        print(f"wrote {path}: {len(merged['rows'])} rows from {len(args.merge)} files", file=sys.stderr)
        return
    names = {f.name for f in dataclasses.fields(BenchConfig)}
    cfg = BenchConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = run_bench(cfg, on_row=lambda row: print(_fmt(row), file=sys.stderr if args.json else sys.stdout,
                                                     flush=True))
    if args.json:
        print(json.dumps(result), flush=True)
    if cfg.out:
        print(f"wrote {results_path(cfg.out, result['device'])}", file=sys.stderr)


def add_cli(sub) -> None:
    import argparse

    from .config import add_arguments

    s = sub.add_parser("bench", help="speed and memory per scope at real shapes, random weights (no download)")
    fields = dataclasses.fields(BenchConfig)
    add_arguments(s, BenchConfig, only=tuple(f.name for f in fields if f.type not in (bool, "bool")))
    for f in fields:
        if f.type in (bool, "bool"):
            s.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                           action=argparse.BooleanOptionalAction, help=f.metadata["help"])
    s.add_argument("--json", action="store_true", help="print the results JSON on stdout (rows go to stderr)")
    s.add_argument("--merge", nargs="+", metavar="FILE", help="combine result files of one device into --out; runs nothing")
    s.set_defaults(func=cmd_bench)


__all__ = ["SHAPES", "Shape", "BenchConfig", "bench_row", "run_bench", "merge_results", "main", "shape_config", "meta_param_count",
           "synthetic_batch", "toy_config", "quantize_4bit", "forward_flops", "training_flops", "peak_tflops"]


def main(argv: list[str] | None = None) -> int:
    """`python -m medln.bench ...`: the same command without the other CLI command modules (on
    a device machine that lacks their dependencies)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medln.bench")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.func(args)
    except (ConfigError, ScopeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
