"""`medln bench`: the sweep over (shape, quant, batch, seq, scope), one row each, and its CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
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

from ..config import ConfigError, _f
from ..logs import console
from ..methods import ScopeError, apply_scope, get_scope, select, select_in_model
from ..methods.lora import RANK
from ..structure import count_params
from .inputs import image_block, image_tokens, synthetic_batch
from ..adapters import adapter_bytes
from ..kernels import fuse_norms
from .measure import (build_model, compile_blocks, forward_flops, peak_tflops, quantize_4bit,
                      time_generation, time_training, training_flops, _free, _peak_gb, _reset_peak, _sync)
from .shapes import SHAPES, shape_config

log = logging.getLogger("medln.bench")

# The columns of every row (the issue's contract); rows also carry the extras in EXTRA_KEYS.
# The columns of every row (the issue's contract); rows also carry the extras in EXTRA_KEYS.
ROW_KEYS = ("shape", "scope", "quant", "batch", "seq", "step_s", "tokens_per_s", "peak_mem_gb", "mfu", "trainable",
            "adapter_bytes", "gen_tokens_per_s_base", "gen_tokens_per_s_tuned")
EXTRA_KEYS = ("gen_first_token_s_base", "gen_first_token_s_tuned", "gen_peak_mem_gb_base", "gen_peak_mem_gb_tuned",
              "total_params", "flops_per_step", "image_tokens", "loss", "sdpa", "compile", "grad_ckpt", "fused_norms",
              "upcast_frozen", "toy",
              "lora_r", "steps", "warmup", "build_s", "notes", "skipped")



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
    lora_r: int = _f(RANK, "LoRA rank; LoRA targets every attention and MLP projection of the language model")
    sdpa: bool = _f(True, "PyTorch scaled-dot-product attention (flash/memory-efficient kernels); off: eager")
    compile: bool = _f(False, "torch.compile each transformer block (regional) for the training steps")
    grad_ckpt: bool = _f(False, "gradient checkpointing (recompute activations in backward)", flag="--grad-checkpointing",
                         aliases=("--grad-ckpt",))  # train's name for it; rows keep the key grad_ckpt
    compile_backend: str = _f("inductor", "torch.compile backend for --compile (eager: graph capture only, a CPU check)")
    fused_norms: bool = _f(False, "RMSNorm through the fused torch.nn.functional.rms_norm op (medln.kernels)")
    upcast_frozen: bool = _f(False, "cast every frozen non-4-bit tensor to fp32 first, as peft's "
                             "prepare_model_for_kbit_training does: the 'before' of keeping frozen tensors in their dtype")
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
                need = len(image_block(shape, config, family).ids) + 3
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
               grad_ckpt=cfg.grad_ckpt, fused_norms=cfg.fused_norms, upcast_frozen=cfg.upcast_frozen, toy=cfg.toy,
               lora_r=cfg.lora_r, steps=cfg.steps, warmup=cfg.warmup, notes=[])
    return row


def bench_row(cfg: BenchConfig, shape_name: str, scope_name: str, quant: str, batch: int, seq: int,
              device=None) -> dict:
    """One measurement; never raises for a scope that cannot run: the row says why in "skipped"."""
    import torch

    device = torch.device(device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    row = _empty_row(shape_name, scope_name, quant, batch, seq, cfg)
    # The precision training would use here (medln.precision: bf16 on a GPU with it, fp16 on
    # a T4, fp32 for a family that refuses fp16 there, fp32 on a CPU), or bf16 when asked for.
    # (Timing only: fp16 steps here are not loss-scaled.)
    from ..backbones import FAMILIES
    from ..precision import resolve_precision

    precision = resolve_precision("bf16" if quant == "bf16" else "auto", device=str(device),
                                  fp16_ok=FAMILIES[SHAPES[shape_name].family].fp16_ok, model=shape_name)
    dtype = precision.dtype
    quant_arg = "4bit" if quant == "4bit" else "none"  # medln.methods' vocabulary
    mixed = precision.autocast

    def autocast():  # as train.fit: fp32 trained tensors, matmuls in the precision's dtype
        return torch.autocast(device.type, dtype=dtype) if mixed else nullcontext()

    def eager():  # generation runs eager with or without --compile: base and tuned alike
        return torch.compiler.set_stance("force_eager") if cfg.compile else nullcontext()

    model = opt = inputs = gen_inputs = None
    try:
        scope = get_scope(scope_name)
        shape, config, family = shape_config(shape_name, toy=cfg.toy)
        if scope.refuses_4bit and quant_arg != "none":
            select([], [], family, scope, quant=quant_arg)  # scopes' own refusal, before anything is built
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(config, family, device, dtype, sdpa=cfg.sdpa)
        row["total_params"] = count_params(model)
        if quant == "4bit":
            keep = list(family.not_quantized)
            if scope.trains_whole_linears:  # attn/ffn train whole projections: keep them bf16 (methods/whole_linear.py)
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
            prompt_len = 1 + len(image_block(shape, config, family).ids) + cfg.gen_text
            gen_inputs = on_device(synthetic_batch(shape, config, family, cfg.gen_batch, prompt_len, labels=False,
                                                   seed=cfg.seed + 1))
            base = time_generation(model, gen_inputs, new_tokens=cfg.gen_tokens, device=device, autocast=autocast,
                                   eager=eager)
            row.update(gen_tokens_per_s_base=base["tokens_per_s"], gen_first_token_s_base=base["first_token_s"],
                       gen_peak_mem_gb_base=base["peak_mem_gb"])

        if cfg.upcast_frozen:  # the QLoRA recipe's step (it freezes everything first; the scope then unfreezes)
            from peft import prepare_model_for_kbit_training

            prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        torch.manual_seed(cfg.seed)  # LoRA's A matrices
        model, selection = apply_scope(model, model.config, family, scope, quant=quant_arg, lora_r=cfg.lora_r)
        row["notes"] += selection.notes
        row["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row["adapter_bytes"] = adapter_bytes(model)
        flops = training_flops(fwd, family, scope, selection.modules)
        row["flops_per_step"] = flops
        if cfg.grad_ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.fused_norms:
            row["notes"] += fuse_norms(model).notes
        if cfg.compile:
            row["notes"].append(f"compiled {compile_blocks(model, backend=cfg.compile_backend)} blocks "
                                f"({cfg.compile_backend})")

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
                                             "grad_ckpt", "fused_norms", "upcast_frozen", "toy"))
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
        log.info("wrote %s: %d rows from %d files", path, len(merged["rows"]), len(args.merge))
        return
    names = {f.name for f in dataclasses.fields(BenchConfig)}
    cfg = BenchConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = run_bench(cfg, on_row=lambda row: print(_fmt(row), file=sys.stderr if args.json else sys.stdout,
                                                     flush=True))
    if args.json:
        print(json.dumps(result), flush=True)
    if cfg.out:
        log.info("wrote %s", results_path(cfg.out, result["device"]))


@dataclass
class BenchArgs(BenchConfig):
    json: bool = _f(False, "print the results JSON on stdout (rows go to stderr)")
    merge: tuple[str, ...] = _f((), "result files of one device to combine into --out; runs nothing")


def add_cli(sub) -> None:
    from ..config import add_command

    add_command(sub, "bench", BenchArgs, cmd_bench,
                help="speed and memory per scope at real shapes, random weights (no download)")



def main(argv: list[str] | None = None) -> int:
    """`python -m medln.bench ...`: the same command without the other CLI command modules (on
    a device machine that lacks their dependencies)."""
    import argparse

    from ..config_files import parse_command_line

    parser = argparse.ArgumentParser(prog="python -m medln.bench")
    add_cli(parser.add_subparsers(dest="command"))
    try:
        args = parse_command_line(parser, ["bench", *(sys.argv[1:] if argv is None else argv)])
        console(quiet=args.quiet)
        args.func(args)
    except (ConfigError, ScopeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
