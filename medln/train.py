"""Training: one plain loop on top of `accelerate` (device placement, gradient accumulation,
DDP under `accelerate launch`), written as a generator of log records so the CLI prints them,
the UI plots them and a stop flag ends it within one step.

Mixed precision is ours, not accelerate's: the backbone was loaded for one resolved
medln.precision.Precision (bf16 / fp16 / fp32; it already honours `accelerate launch
--mixed_precision`), and the loop autocasts to that dtype and, for fp16, scales the loss with
torch.amp.GradScaler. One code path on GPU and CPU (accelerate applies no fp16 autocast on a
CPU), so the fp16 path is tested without a GPU.

Every record carries an `event` from EVENTS; readers dispatch on it, never on which keys
a record happens to have.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

from .backbones import Backbone, resolve
from .config import TrainConfig
from .cpu4bit import dequant_while_training, remember_loaded
from .kernels import compile_blocks, eager_if, fuse_norms
from .data.sample import Sample
from .prompts import encode_for_training
from .machine import peak_memory_gb, reset_peak
from .precision import autocast_context, from_dtype, grad_scaler, precision_notes
from .references import reference_records
from . import prediction_cache
from .revisions import data_revision
from .runs import BaseSpec
from .methods import Selection, apply_scope, get_scope, kept_unquantized

EVENTS = {
    "start": "the run's set-up: backbone, scope, counts, notes (first record)",
    "step": "one optimizer step: loss, lr, throughput, memory",
    "stopped": "the stop flag ended training early (the adapter is still saved and scored)",
    "score": "one batch of answers scored: which model, split, done of total, answers left in the run",
    "eval": "base, tuned, image-blind or probe-ceiling metrics of every evaluation split (which: base | tuned | blind | ceiling)",
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


def prepare(cfg: TrainConfig, *, device: str | None = None, backbone: Backbone | None = None) -> Tunable:
    """Load the backbone (unless given) and apply the scope. Under 4-bit the attn/ffn scopes
    keep their projections unquantized, so their names are known before loading (meta count)."""
    scope = get_scope(cfg.scope)
    resolved = resolve(cfg.backbone)
    # A local folder is recorded by absolute path: the run reloads from any working folder.
    spec = BaseSpec(cfg.backbone if resolved.spec or not resolved.local else resolved.source, cfg.quant,
                    kept_unquantized(cfg.backbone, scope, cfg.quant, trust_remote_code=cfg.trust_remote_code),
                    trust_remote_code=cfg.trust_remote_code, precision=cfg.precision)
    if backbone is None:
        backbone = spec.load(device)
    if backbone.quant == "4bit":  # the fused CPU kernel has no backward (medln.cpu4bit)
        remember_loaded(backbone.model)
    device_kind = next(backbone.model.parameters()).device.type
    spec = BaseSpec(spec.backbone, backbone.quant, spec.keep, backbone.dtype,
                    "cuda" if device_kind == "cuda" else "cpu", spec.trust_remote_code, cfg.precision)
    from transformers import set_seed

    set_seed(cfg.seed)  # Python, numpy and torch (every device): LoRA's A matrices come from the global RNG
    model, selection = apply_scope(backbone.model, backbone.model.config, backbone.family, scope, quant=cfg.quant,
                                   lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
    if cfg.grad_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (frozen embeddings).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.fused_norms:  # after the scope: peft's LN-tuning copies of the norms are fused too
        selection.notes += fuse_norms(model).notes
    if cfg.compile:
        selection.notes.append(f"torch.compile: {compile_blocks(model)} blocks (regional; generation runs eager)")
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
    """The Accelerator for a run: device placement and DDP under `accelerate launch`. Its own
    mixed precision stays off (mixed_precision="no"): fit() autocasts to the backbone's
    resolved precision, which already took accelerate's --mixed_precision into account.

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
        mixed_precision="no",
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=get_scope(cfg.scope).method.peft_type is None)],
    )


def fit(tunable: Tunable, cfg: TrainConfig, samples: list[Sample], *, stop=None, accelerator=None) -> Iterator[dict]:
    """Train `tunable.model` for cfg.steps optimizer steps; yields one record per step.
    `stop` is any object with is_set() (threading.Event): checked before every micro-batch."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import set_seed

    acc = accelerator or make_accelerator(cfg)
    set_seed(cfg.seed)
    model = tunable.model
    precision = tunable.backbone.precision or from_dtype(tunable.backbone.dtype)
    scaler = grad_scaler(precision, acc.device.type)  # fp16 only; otherwise a pass-through
    params = [p for p in model.parameters() if p.requires_grad]
    # The rate: cfg.lr as given, else the scope's default for this backbone (TrainConfig.effective_lr).
    groups = get_scope(cfg.scope).method.param_groups(model, cfg.effective_lr, cfg.effective_ln_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.steps, cfg.warmup))
    loader = DataLoader(
        samples,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=lambda batch: encode_for_training(tunable.backbone, batch, cfg.max_length),
        drop_last=len(samples) >= cfg.batch_size * acc.num_processes,
    )
    with dequant_while_training(model):  # before acc.prepare: DDP copies the main process's layers (cpu4bit)
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
                    with autocast_context(precision, acc.device.type):
                        loss = model(**batch).loss
                    acc.backward(scaler.scale(loss))
                    if acc.sync_gradients:
                        # The scaler steps only on the last micro-batch: unscaling earlier would
                        # divide gradients still being accumulated. A step whose fp16 gradients
                        # overflowed is skipped and the scale lowered.
                        scaler.unscale_(optimizer)
                        acc.clip_grad_norm_(params, 1.0)
                        scaler.step(optimizer)
                        scaler.update()
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


def fit_memory(cfg: TrainConfig, tunable: Tunable, samples: list[Sample], acc) -> tuple[TrainConfig, str | None]:
    """Check the batch against the memory the device has free (medln.memory): the config
    as it is, or with a smaller micro-batch and more accumulation (said in the note); a
    ConfigError when not even one sample fits. Encoding the longest records also refuses
    one that cannot fit max_length now, rather than at the step that draws it."""
    from . import memory

    probe = memory.probe_batch(samples, lambda batch: encode_for_training(tunable.backbone, batch, cfg.max_length))
    est = memory.estimate(tunable.model, probe, trainable=tunable.selection.trainable,
                          grad_checkpointing=cfg.grad_checkpointing, act_bytes=2 if acc.device.type == "cuda" else 4)
    available, where = memory.available_bytes(acc.device)
    if acc.num_processes > 1:  # every DDP process must take the same micro-batch: plan for the tightest
        import torch

        mins = acc.gather(torch.tensor([available or 0], device=acc.device))
        available = int(mins.min().item()) or None
    planned, note = memory.plan_batch(cfg, est, available, where)
    acc.gradient_accumulation_steps = planned.grad_accum
    return planned, note


def train_run(cfg: TrainConfig, out, *, stop=None, accelerator=None, tunable: Tunable | None = None,
              base_metrics: dict | None = None, extra_eval: dict[str, list[Sample]] | None = None,
              train_samples: list[Sample] | None = None, overwrite: bool = False, report_to: str = "none",
              run_name: str | None = None, group: str | None = None) -> Iterator[dict]:
    """The whole `train` command as a generator: load data, apply the scope, train, save the
    adapter, evaluate base and tuned. Yields {"event": "start"}, the step records, then
    {"event": "done", ...}. Only the main process writes the run folder.

    For sweeps (medln.compare): `base_metrics` {split: metrics} already known for this base model are
    reused, not scored again; `extra_eval` {name: samples} adds evaluation sets (e.g. a second,
    out-of-domain dataset); `train_samples` replaces the cfg.split split (e.g. train without the slice a
    sweep carved off for validation). `overwrite` replaces an existing MedLN run in `out` (never a
    folder MedLN did not write; see medln.runs). Scoring reports itself as "score" records, one per
    generated batch (Bars.score_records); `report_to`: a tracker (medln.trackers) mirrors the records."""
    from .data import DataError, load_samples
    from .evaluate import subsample
    from .runs import RunDir, check_out
    from .trackers import check, mirrored

    t_start = time.perf_counter()
    cfg.validate()
    check(report_to)  # a tracker that is not installed: one line, before anything loads
    check_out(out, overwrite=overwrite)  # before anything loads: a bad --out costs nothing
    if train_samples is not None:
        from .data.loaded import Loaded

        loaded = Loaded(list(train_samples))
    else:
        loaded = load_samples(cfg.data, cfg.split, skip_bad=cfg.skip_bad)  # bad data, too, before torch is imported
    acc = accelerator or make_accelerator(cfg)
    eval_sets: dict[str, list[Sample]] = {}
    eval_items: dict[str, dict] = {}  # split -> {"scored": n, "of": the split's size}
    notes: list[str] = []
    for split in filter(None, (cfg.eval_split, cfg.ood_split)):
        try:
            whole = load_samples(cfg.data, split, skip_bad=cfg.skip_bad).samples
        except DataError as e:
            if split == cfg.eval_split:
                raise
            notes.append(f"no out-of-domain evaluation: {e}")
            continue
        eval_sets[split] = subsample(whole, cfg.eval_limit)
        eval_items[split] = {"scored": len(eval_sets[split]), "of": len(whole)}
    eval_sets.update(extra_eval or {})
    eval_items.update({name: {"scored": len(s), "of": len(s)} for name, s in (extra_eval or {}).items()})
    tunable = tunable or prepare(cfg, device=str(acc.device))
    cfg, memory_note = fit_memory(cfg, tunable, loaded.samples, acc)
    notes += [memory_note] if memory_note else []
    sel = tunable.selection
    start = {
        "event": "start",
        "backbone": tunable.backbone.name,
        "family": tunable.backbone.family.name,
        "scope": cfg.scope,
        "quant": cfg.quant,
        "precision": (tunable.backbone.precision or from_dtype(tunable.backbone.dtype)).name,
        "lr": cfg.effective_lr,
        **({"ln_lr": cfg.effective_ln_lr} if cfg.scope == "ln-lora" else {}),
        "steps": cfg.steps, "batch_size": cfg.batch_size,  # after fit_memory, which may shrink the batch
        "num_processes": acc.num_processes,  # data-parallel processes: batch_size is per process
        "total": sel.total,
        "trainable": sel.trainable,
        "percent": round(sel.percent, 6),
        "dead": sel.dead,
        "n_modules": len(sel.modules),
        "n_train": len(loaded.samples),
        "skipped": loaded.skipped,
        "eval_items": eval_items,  # what base and tuned are scored on (--eval-limit per split)
        "eval_limit": cfg.eval_limit,
        "notes": sel.notes + list(getattr(tunable.backbone, "notes", [])) + notes + precision_notes(tunable.backbone.precision),
    }
    start["scope_description"] = tunable.selection.scope.description
    base_spec = tunable.base or BaseSpec(cfg.backbone, cfg.quant)
    run, base_keys = None, {}
    if acc.is_main_process:
        # What exactly was used: the hub commits, or content hashes of local model and data (medln.revisions)
        revisions = {"backbone": resolve(base_spec.backbone).revision_record(), "data": data_revision(loaded)}
        # The base's answers are cached under everything they depend on (medln.prediction_cache)
        base_keys = prediction_cache.base_keys(tunable.backbone, base_spec, revisions["backbone"], eval_sets,
                                               limit=cfg.eval_limit, batch_size=cfg.eval_batch_size,
                                               fused_norms=cfg.fused_norms)
        run = RunDir.create(out, {"config": cfg.to_dict(), "base": base_spec.to_dict(), **start,
                                  "source": tunable.backbone.source, "revisions": revisions}, overwrite=overwrite)
    yield start
    records = _train_and_score(cfg, tunable, loaded.samples, eval_sets, acc, run, stop, base_metrics, base_keys, t_start)
    try:  # a tracker mirrors what the main process records (the run folder stays the source of truth)
        yield from mirrored(records, report_to, run and run.path, cfg.to_dict(), start, run_name=run_name, group=group)
    except BaseException as e:  # recorded where the run's readers look, then raised as it was
        if run is not None:
            if not run.adapter_dir.exists():
                run.discard()  # nothing worth keeping: the same --out works again
            else:
                run.log({"event": "failed", "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__})
        raise


def _train_and_score(cfg, tunable, samples, eval_sets, acc, run, stop, base_metrics, base_keys, t_start) -> Iterator[dict]:
    from .adapters import adapter_bytes, make_portable
    from .card import write_adapter_card
    from .evaluate import Scoring, scored

    sel = tunable.selection
    refs = yield from reference_records(cfg, tunable.backbone, samples, eval_sets, run)  # before training: the base's vision tower
    metrics: dict[str, dict] = {"base": {k: v for k, v in (base_metrics or {}).items() if v}, "tuned": {}}
    eval_s, cached = 0.0, []

    def parts(which: str, adapter: bool) -> list:
        model = acc.unwrap_model(tunable.model)
        return [(which, split, Scoring(tunable.backbone, model, split_samples, adapter=adapter,
                                       batch_size=cfg.eval_batch_size,
                                       base_key=base_keys.get(split) if which == "base" else None))
                for split, split_samples in eval_sets.items() if split not in metrics[which]]

    def run_eval(which: str, adapter: bool, later: int = 0) -> Iterator[dict]:
        nonlocal eval_s
        t0, todo = time.perf_counter(), parts(which, adapter)
        with eager_if(cfg.compile):  # compiled blocks would recompile for every generated length
            yield from scored(todo, later=later)
        for _, split, scoring in todo:
            metrics[which][split] = scoring.metrics
            cached.extend([split] if scoring.cached else [])
        eval_s += time.perf_counter() - t0

    tuned_items = sum(len(s) for s in eval_sets.values())
    base_first = sel.scope.method.peft_type is None and acc.is_main_process
    if base_first:  # full fine-tuning overwrites the weights: score them first
        yield from run_eval("base", adapter=True, later=tuned_items)
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
    if not base_first:
        yield from run_eval("base", adapter=False, later=tuned_items)
    base = {split: metrics["base"][split] for split in eval_sets if split in metrics["base"]}
    yield {"event": "eval", "which": "base", "metrics": base}
    yield from run_eval("tuned", adapter=True)
    tuned = metrics["tuned"]
    yield {"event": "eval", "which": "tuned", "metrics": tuned}
    result = {
        "status": status,
        "steps_done": steps_done,
        "train_s": round(train_s, 3),
        "eval_s": round(eval_s, 3),  # scoring base and tuned (base answers read from the cache count as read)
        "base_cached": cached,  # splits whose base answers came from the prediction cache (medln.prediction_cache)
        "trainable": sel.trainable,
        "total": sel.total,
        "percent": round(sel.percent, 6),
        "adapter_bytes": adapter_bytes(model),  # the saved tensors (adapter_model.safetensors less its header)
        "base": base,
        "tuned": tuned,
        **({"blind": refs["blind"], "ceiling": refs["ceiling"], "references": refs["about"]} if refs else {}),
        "wall_s": round(time.perf_counter() - t_start, 3),  # the whole run: loading, training, scoring
    }
    write_adapter_card(run.adapter_dir, run.config(), result)
    run.write_eval(result)
    yield {"event": "done", "run": str(run.path), **result}
