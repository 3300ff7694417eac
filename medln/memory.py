"""Memory per training job: how much a batch will need, checked against what the device has
free before the first step, so that a batch too big for the machine is lowered or refused
with a reason, instead of the kernel's OOM killer taking the whole process (and, in the app,
every session's job) with it.

The estimate counts the activations a training step keeps for backward, per token and per
layer, in the spirit of Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", eq. 1: about 34·h bytes per token per layer at 16 bits for a
4h MLP). Written per tensor kept: the norm and projection inputs and the q/k/v/attention
outputs (~8·h) and the MLP's up/gate/activation/product (~4·i), i.e. (8·h + 4·i) elements;
`eager` attention also keeps the (heads × seq) probabilities. With gradient checkpointing
only each layer's input (h) is kept, plus one layer's worth recomputed in backward. The
logits are upcast to fp32 for the loss (seq × vocab × 4 bytes, twice with their gradient).
Sequence lengths come from encoding the longest records of the data, image tokens included;
the trainable parameters add their gradient and AdamW's two moments (fp32).

It is an estimate (allocator slack, temporary buffers): the budget is a fraction of what
is free, and an out-of-memory error that still happens is caught by the caller.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

BUDGET_FRACTION = 0.8  # of the free memory: allocator fragmentation, evaluation, temporaries
PROBE_RECORDS = 8  # the longest records by text length are encoded to measure sequence lengths
ENV_CAP = "MEDLN_JOB_MEMORY_GB"  # a deployment's cap on the memory one training job may take


def is_out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError, torch's (CUDA) OutOfMemoryError, or an allocator RuntimeError saying so."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def available_bytes(device) -> tuple[int | None, str]:
    """(bytes free for this job, where) — None when it cannot be told."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        avail, where = int(free), f"free on GPU {device.index or 0}"
    else:
        avail, where = _mem_available(), "available RAM"
    cap = os.environ.get(ENV_CAP)
    if cap:
        try:
            cap_bytes = int(float(cap) * 1e9)
        except ValueError:
            cap_bytes = None
        if cap_bytes is not None and (avail is None or cap_bytes < avail):
            avail, where = cap_bytes, f"the per-job cap ({ENV_CAP}={cap})"
    return avail, where


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


@dataclass(frozen=True)
class Estimate:
    per_sample: int  # activation bytes one sample adds to a micro-batch
    fixed: int  # gradients + optimizer state of the trainable parameters
    seq_len: int  # tokens of the longest probed record (image tokens included)
    vision_tokens: int  # vision-encoder tokens per sample

    def need(self, batch: int) -> int:
        return self.fixed + batch * self.per_sample


def _dims(cfg) -> tuple[int, int, int, int, int]:
    """(layers, width, MLP width, heads, vocab) of a text or vision sub-config."""
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "depth", None) or 0
    width = getattr(cfg, "embed_dim", None) or getattr(cfg, "hidden_size", None) or 0  # Qwen2-VL vision: embed_dim
    mlp = getattr(cfg, "intermediate_size", None) or int((getattr(cfg, "mlp_ratio", None) or 4) * width)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None) or 1
    return int(layers), int(width), int(mlp), int(heads), int(getattr(cfg, "vocab_size", 0) or 0)


def _vision_tokens(batch: dict, vision_cfg) -> int:
    """Vision-encoder tokens per sample, from the encoded batch (crops and resolution as the
    processor made them)."""
    n = batch["input_ids"].shape[0]
    if "image_grid_thw" in batch:  # Qwen2-VL: patches per image before the 2x2 merge
        return int(batch["image_grid_thw"].prod(dim=-1).sum().item()) // max(n, 1)
    pixels = batch.get("pixel_values")
    patch = getattr(vision_cfg, "patch_size", None)
    if pixels is None or pixels.ndim < 4 or not patch:
        return 0
    c, h, w = pixels.shape[-3:]
    crops = pixels.numel() // (c * h * w) // max(n, 1)
    return crops * ((h // patch) * (w // patch) + 1)


def estimate(model, batch: dict, *, trainable: int, grad_checkpointing: bool, act_bytes: int) -> Estimate:
    """Bytes a training step needs on top of the loaded weights, from an encoded probe batch."""
    config = model.config
    text_cfg = getattr(config, "text_config", None) or config
    vision_cfg = getattr(config, "vision_config", None)
    eager = getattr(config, "_attn_implementation", "sdpa") == "eager"
    seq = int(batch["input_ids"].shape[1])
    layers, h, i, heads, vocab = _dims(text_cfg)
    if "decoder_input_ids" in batch:  # BLIP: the question through the text encoder, the answer through the decoder
        seq += int(batch["decoder_input_ids"].shape[1])

    def stack(n_layers, width, mlp, n_heads, tokens) -> int:
        per_layer = tokens * (8 * width + 4 * mlp) + (2 * n_heads * tokens * tokens if eager else 0)
        if grad_checkpointing:  # each layer's input, plus one layer recomputed in backward
            return n_layers * tokens * width + per_layer
        return n_layers * per_layer

    elements = stack(layers, h, i, heads, seq)
    vis_tokens = 0
    if vision_cfg is not None:
        vis_tokens = _vision_tokens(batch, vision_cfg)
        v_layers, vh, vi, v_heads, _ = _dims(vision_cfg)
        elements += stack(v_layers, vh, vi, v_heads, vis_tokens)
    logits = 2 * seq * vocab * 4  # fp32 logits for the loss, and their gradient
    fixed = trainable * 12  # fp32 gradient + AdamW's exp_avg and exp_avg_sq
    return Estimate(elements * act_bytes + logits, fixed, seq, vis_tokens)


def probe_batch(samples: list, encode, k: int = PROBE_RECORDS) -> dict:
    """Encode the k records with the longest text (reports before one-word answers): the
    padded length of a training batch is its longest record's. Also surfaces a record that
    cannot fit max_length before any training starts."""
    longest = sorted(samples, key=lambda s: len(s.question or "") + len(s.answer), reverse=True)[:k]
    return encode(longest)


def plan_batch(cfg, est: Estimate, available: int | None, where: str):
    """(cfg, note): cfg as given when its micro-batch fits the budget; else a smaller
    micro-batch with more accumulation (about the same samples per optimizer step), said
    in the note; a ConfigError when not even one sample fits."""
    from .config import ConfigError

    if available is None:
        return cfg, None
    budget = int(available * BUDGET_FRACTION)
    if est.need(cfg.batch_size) <= budget:
        return cfg, None
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    what = (f"~{gb(est.per_sample)} of activations per sample ({est.seq_len} tokens"
            f"{f', {est.vision_tokens} vision tokens' if est.vision_tokens else ''})")
    if est.need(1) > budget:
        hints = ["a shorter --max-length", "--quant 4bit", "a smaller backbone"]
        if not cfg.grad_checkpointing:
            hints.insert(0, "--grad-checkpointing")
        raise ConfigError(f"not enough memory to train: one sample needs {what}"
                          f"{f' plus {gb(est.fixed)} of gradients and optimizer state' if est.fixed else ''}, "
                          f"and {gb(available)} is {where} (budget {gb(budget)}). Try {', '.join(hints)}.")
    micro = max(1, (budget - est.fixed) // est.per_sample)
    total = cfg.batch_size * cfg.grad_accum
    accum = math.ceil(total / micro)
    micro = math.ceil(total / accum)  # spread evenly: 9 x 57 rather than 64 x 8 + a remainder
    note = (f"batch_size {cfg.batch_size} would need ~{gb(est.need(cfg.batch_size))} ({what}); {gb(available)} is "
            f"{where}: lowered to micro-batches of {micro} with grad_accum {accum} "
            f"({micro * accum} samples per optimizer step, was {total})")
    return replace(cfg, batch_size=micro, grad_accum=accum), note
