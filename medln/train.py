"""Training: one plain loop on top of `accelerate` (device placement, bf16 autocast on GPU,
gradient accumulation, DDP under `accelerate launch`), written as a generator of log
records so the CLI prints them, the UI plots them and a stop flag ends it within one step.

Every record carries an `event` from EVENTS; readers dispatch on it, never on which keys
a record happens to have.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Iterator

from .backbones import Backbone, resolve
from .config import ConfigError, TrainConfig
from .data.sample import Sample
from .prompts import encode_for_training, question_text
from .machine import peak_memory_gb, reset_peak
from .runs import BaseSpec
from .scopes import Selection, apply_scope, get_scope, kept_unquantized, param_groups

EVENTS = {
    "start": "the run's set-up: backbone, scope, counts, notes (first record)",
    "step": "one optimizer step: loss, lr, throughput, memory",
    "stopped": "the stop flag ended training early (the adapter is still saved and scored)",
    "eval": "base or tuned metrics of every evaluation split",
    "failed": "an error ended the run; `error` says which (written to metrics.jsonl, then raised)",
    "done": "the run is saved and scored: eval.json's content (last record)",
}


@dataclass
class Tunable:
    """A loaded backbone with its scope applied: `model` is the (peft-)wrapped model and
    `base` how its base was built (recorded in config.json, used by medln.runs.load_run)."""

    backbone: Backbone
    model: object
    selection: Selection
    base: BaseSpec | None = None


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: TrainConfig, *, device: str | None = None, backbone: Backbone | None = None) -> Tunable:
    """Load the backbone (unless given) and apply the scope. Under 4-bit the attn/ffn scopes
    keep their projections unquantized, so their names are known before loading (meta count)."""
    scope = get_scope(cfg.scope)
    resolved = resolve(cfg.backbone)
    # A local folder is recorded by absolute path: the run reloads from any working folder.
    spec = BaseSpec(cfg.backbone if resolved.spec or not resolved.local else resolved.source, cfg.quant,
                    kept_unquantized(cfg.backbone, scope, cfg.quant, trust_remote_code=cfg.trust_remote_code),
                    trust_remote_code=cfg.trust_remote_code)
    if backbone is None:
        backbone = spec.load(device)
    device_kind = next(backbone.model.parameters()).device.type
    spec = BaseSpec(spec.backbone, backbone.quant, spec.keep, backbone.dtype,
                    "cuda" if device_kind == "cuda" else "cpu", spec.trust_remote_code)
    seed_everything(cfg.seed)  # LoRA's A matrices are initialised from the global RNG
    model, selection = apply_scope(backbone.model, backbone.model.config, backbone.family, scope, quant=cfg.quant,
                                   lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
    if cfg.grad_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (frozen embeddings).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Tunable(backbone, model, selection, spec)


def lr_lambda(steps: int, warmup: float):
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    warm = max(1, int(steps * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def make_accelerator(cfg: TrainConfig):
    """The Accelerator for a run: bf16 autocast on GPU; DDP under `accelerate launch`.

    cpu=True without CUDA: under `accelerate launch --multi_gpu --num_processes N` (torchrun)
    accelerate forms a gloo process group (MULTI_CPU) only when told it runs on the CPU;
    otherwise each process would train alone and all would race for the same run folder.
    Scope 'full' trains parameters that get no gradient (LLaVA's vision layers after
    vision_feature_layer): DDP must be told to look for unused parameters, or its second
    step fails ("Expected to have finished reduction in the prior iteration"). The other
    scopes train only parameters that get a gradient (dead norms are excluded), so they skip
    that per-step graph walk.
    """
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=get_scope(cfg.scope).how.wrap is None)],
    )


def fit(tunable: Tunable, cfg: TrainConfig, samples: list[Sample], *, stop=None, accelerator=None) -> Iterator[dict]:
    """Train `tunable.model` for cfg.steps optimizer steps; yields one record per step.

    `stop` is any object with is_set() (threading.Event): checked before every micro-batch.
    """
    import torch
    from torch.utils.data import DataLoader

    acc = accelerator or make_accelerator(cfg)
    seed_everything(cfg.seed)
    model = tunable.model
    params = [p for p in model.parameters() if p.requires_grad]
    groups = param_groups(model, get_scope(cfg.scope), cfg.effective_lr, cfg.effective_ln_lr)
    optimizer = torch.optim.AdamW(groups, lr=cfg.effective_lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.steps, cfg.warmup))
    loader = DataLoader(
        samples,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=lambda batch: encode_for_training(tunable.backbone, batch, cfg.max_length),
        drop_last=len(samples) >= cfg.batch_size * acc.num_processes,
    )
    model, optimizer, loader = acc.prepare(model, optimizer, loader)

    def cycle():
        epoch = 0
        while True:
            for batch in loader:
                yield epoch, batch
            epoch += 1

    data = cycle()
    model.train()
    reset_peak()  # this run's peak, not the process's earlier ones (a sweep trains many runs)
    started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        losses, n = [], 0
        for _ in range(cfg.grad_accum):
            if stop is not None and stop.is_set():
                yield {"event": "stopped", "step": step - 1}
                return
            epoch, batch = next(data)
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            n += batch["input_ids"].shape[0]
        scheduler.step()
        mean_loss = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
        dt = time.perf_counter() - t0
        yield {
            "event": "step",
            "step": step,
            "loss": round(mean_loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "epoch": epoch,
            "samples_per_s": round(n * acc.num_processes / dt, 3),
            "step_s": round(dt, 4),
            "elapsed_s": round(time.perf_counter() - started, 3),
            "peak_mem_gb": round(peak_memory_gb(), 4),
        }


def check_lengths(backbone: Backbone, samples: list[Sample], cfg: TrainConfig) -> None:
    """Encode the batch of longest texts before anything is written: a --max-length that
    cannot hold a sample (the image tokens alone may exceed it) is a config error, not a
    traceback after the run folder exists."""
    longest = sorted(samples, key=lambda s: len(question_text(s)) + len(s.answer))[-cfg.batch_size:]
    try:
        encode_for_training(backbone, longest, cfg.max_length)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"max_length: {e}") from None


def train_run(cfg: TrainConfig, out, *, stop=None, accelerator=None, tunable: Tunable | None = None,
              base_metrics: dict | None = None, extra_eval: dict[str, list[Sample]] | None = None) -> Iterator[dict]:
    """The whole `train` command as a generator: load data, apply the scope, train, save the
    adapter, evaluate base and tuned. Yields {"event": "start"}, the step records, then
    {"event": "done", ...}. Only the main process writes the run folder.

    For sweeps (medln.compare): `base_metrics` {split: metrics} already known for this base
    model are reused, not scored again; `extra_eval` {name: samples} adds evaluation sets
    (e.g. a second, out-of-domain dataset)."""
    from .data import DataError, load_samples
    from .evaluate import subsample
    from .runs import RunDir

    cfg.validate()
    acc = accelerator or make_accelerator(cfg)
    loaded = load_samples(cfg.data, cfg.split, skip_bad=cfg.skip_bad)
    eval_sets: dict[str, list[Sample]] = {}
    notes: list[str] = []
    for split in filter(None, (cfg.eval_split, cfg.ood_split)):
        try:
            eval_sets[split] = subsample(load_samples(cfg.data, split, skip_bad=cfg.skip_bad).samples, cfg.eval_limit)
        except DataError as e:
            if split == cfg.eval_split:
                raise
            notes.append(f"no out-of-domain evaluation: {e}")
    eval_sets.update(extra_eval or {})
    tunable = tunable or prepare(cfg, device=str(acc.device))
    sel = tunable.selection
    start = {
        "event": "start",
        "backbone": tunable.backbone.name,
        "family": tunable.backbone.family.name,
        "scope": cfg.scope,
        "quant": cfg.quant,
        "lr": cfg.effective_lr,
        **({"ln_lr": cfg.effective_ln_lr} if cfg.scope == "ln-lora" else {}),
        "num_processes": acc.num_processes,  # data-parallel processes: batch_size is per process
        "total": sel.total,
        "trainable": sel.trainable,
        "percent": round(sel.percent, 6),
        "dead": sel.dead,
        "n_modules": len(sel.modules),
        "n_train": len(loaded.samples),
        "skipped": loaded.skipped,
        "notes": sel.notes + notes,
    }
    check_lengths(tunable.backbone, loaded.samples, cfg)
    start["scope_description"] = get_scope(cfg.scope).description
    base_spec = tunable.base or BaseSpec(cfg.backbone, cfg.quant)
    run = None
    if acc.is_main_process:
        run = RunDir.create(out, {"config": cfg.to_dict(), "base": base_spec.to_dict(), **start,
                                  "source": tunable.backbone.source})
    yield start
    try:
        yield from _train_and_score(cfg, tunable, loaded.samples, eval_sets, acc, run, start, stop, base_metrics)
    except BaseException as e:  # recorded where the run's readers look, then raised as it was
        if run is not None:
            run.log({"event": "failed", "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__})
        raise


def _train_and_score(cfg, tunable, samples, eval_sets, acc, run, start, stop, base_metrics) -> Iterator[dict]:
    from .adapters import adapter_bytes, make_portable, write_card
    from .evaluate import evaluate

    sel = tunable.selection

    def run_eval(adapter: bool, skip: dict | None = None) -> dict:
        model = acc.unwrap_model(tunable.model)
        return {split: (skip or {}).get(split) or evaluate(tunable.backbone, model, split_samples, adapter=adapter,
                                                             batch_size=cfg.eval_batch_size)
                for split, split_samples in eval_sets.items()}

    base = None
    if get_scope(cfg.scope).how.wrap is None and acc.is_main_process:
        base = run_eval(adapter=True, skip=base_metrics)  # full fine-tuning overwrites the weights: score them first
    status, steps_done, t0 = "completed", 0, time.perf_counter()
    for record in fit(tunable, cfg, samples, stop=stop, accelerator=acc):
        if run:
            run.log(record)
        if record["event"] == "stopped":
            status = "stopped"
            yield record
            break
        steps_done = record["step"]
        yield record
    train_s = time.perf_counter() - t0
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return
    model = acc.unwrap_model(tunable.model)
    model.eval()
    run.save_adapter(model)
    make_portable(run.adapter_dir, tunable.backbone.portable_name or tunable.backbone.name)
    from .inspect import record_movement

    # Where the weights moved (inspect.json): cheap with the model in memory, read by `inspect` and the app.
    record_movement(run.path, model, tunable.backbone.family, {"run": str(run.path), "scope": cfg.scope,
                                                                "seed": cfg.seed, "backbone": tunable.backbone.name})
    if base is None:
        base = run_eval(adapter=False, skip=base_metrics)
    yield {"event": "eval", "which": "base", "metrics": base}
    tuned = run_eval(adapter=True)
    yield {"event": "eval", "which": "tuned", "metrics": tuned}
    result = {
        "status": status,
        "steps_done": steps_done,
        "train_s": round(train_s, 3),
        "trainable": sel.trainable,
        "total": sel.total,
        "percent": round(sel.percent, 6),
        "adapter_bytes": adapter_bytes(model),  # the saved tensors (adapter_model.safetensors less its header)
        "base": base,
        "tuned": tuned,
    }
    write_card(run.adapter_dir, base_name=tunable.backbone.portable_name or tunable.backbone.name,
               model_class=tunable.backbone.family.model_class, config=cfg.to_dict(), start=start, result=result,
               kept=tunable.base.keep if tunable.base else ())
    run.write_eval(result)
    yield {"event": "done", "run": str(run.path), **result}
