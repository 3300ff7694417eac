"""Sweep tuning scopes on one backbone and one dataset with the same budget: a table and plots.

Every scope trains with the same seed, steps, batch and data (each with its own default
learning rate unless --lr is given: LayerNorm-only needs a far higher one than LoRA, docs/design.md
"Traps") into OUT/runs/<scope>/, an ordinary run folder. The sweep writes

  results.json   one row per scope, the shared config, the backbone, wall time, the machine
  results.csv    the same rows, flat columns (nested metrics become base_overall, tuned_...)
  figures.html   trainable parameters, metric vs parameters (Pareto front), retention, cost;
                 plotly.js embedded once, so it opens offline (PNG files too when kaleido is
                 installed)

The base model is scored once and its metrics reused for every scope that loads the same
base weights (under 4-bit, attn/ffn keep their projections unquantized: a different base
model, scored on its own). Retention is the tuned out-of-domain score as a fraction of the
base model's (the paper's claim: LN-tuning keeps zero-shot / OOD ability), on the data's
held-out source-style split (--ood-split) or on a second dataset (--ood SPEC).

A scope that cannot run (full under 4-bit, out of memory, any runtime failure) becomes a
row with `skipped`: reason, and the sweep goes on. `compare()` is a generator of progress
records, so the app can show progress and stop it (stop flag checked every micro-batch).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator

from .config import ConfigError, TrainConfig
from .metrics import headline_for, headline_metric
from .machine import free_memory, machine_info
from .storage import write_json_atomic
from .methods import SCOPES, ScopeError, get_scope
from .protocol import reference_rows, split_validation
from .compare_report import format_bytes, format_table, write_csv, write_figures, write_table
from .summary import summarize_rows, verdict
from .tuning import Grid, tune_scope

ALL_SCOPES: list[str] = [s.name for s in SCOPES]
OOD_KEY = "ood"  # evaluation-set name of a second dataset given with ood=SPEC


# ------------------------------------------------------------------------ helpers


def parse_scopes(text: str | list[str] | None) -> list[str]:
    """'ln,lora' or ['ln', 'lora'] (or 'all' / None) -> validated names, duplicates dropped."""
    if text is None or text == "all":
        return list(ALL_SCOPES)
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for name in (n.strip() for n in names):
        if name and name not in out:
            get_scope(name)  # ScopeError names the valid ones
            out.append(name)
    if not out:
        raise ScopeError("no scopes given")
    return out


def base_key(cfg: TrainConfig) -> tuple[str, str]:
    """Scopes with equal keys load identical base weights, so share base metrics. Under 4-bit
    the attn/ffn scopes keep their projections unquantized: their base model differs."""
    scope = get_scope(cfg.scope)
    return (cfg.quant, scope.name if cfg.quant == "4bit" and scope.trains_whole_linears else "")


def retention(base: dict | None, tuned: dict | None, metric: str | None) -> tuple[float | None, float | None]:
    """(tuned / base, tuned - base in points of 100) on `metric`; ratio None when base is 0."""
    if not metric or not base or not tuned or base.get(metric) is None or tuned.get(metric) is None:
        return None, None
    b, t = base[metric], tuned[metric]
    return (round(t / b, 6) if b else None), round(100 * (t - b), 4)


def steady(values: list[float]) -> float | None:
    """Median over steps, leaving out the first (warm-up: allocation, kernel selection)."""
    vals = [v for v in values if v is not None]
    vals = vals[1:] if len(vals) > 1 else vals
    return round(statistics.median(vals), 6) if vals else None


def _reason(e: BaseException) -> str:
    import torch

    text = str(e).removeprefix("invalid config:").strip()
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__
    text = text if len(text) <= 300 else text[:299] + "…"
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {text}"
    if isinstance(e, (ConfigError, ScopeError)):
        return text
    return f"{type(e).__name__}: {text}"


# ----------------------------------------------------------------------- the sweep


def _empty_row(scope: str, reason: str | None = None, seed: int | None = None) -> dict:
    return {
        "scope": scope, "seed": seed, "status": "skipped" if reason else None, "skipped": reason, "lr": None,
        "trainable": None, "total": None, "percent": None, "dead": None, "adapter_bytes": None,
        "steps_done": 0, "step_s": None, "samples_per_s": None, "peak_mem_gb": None, "train_s": None,
        "wall_s": None, "final_loss": None, "metric": None, "base": None, "tuned": None,
        "ood_base": None, "ood_tuned": None, "retention": None, "retention_pts": None,
        "run": None, "notes": [], "losses": [],
    }


def compare(cfg_base: TrainConfig, scopes: list[str] | str | None, out_dir, *, ood: str | None = None,
            seeds: list[int] | None = None, tune_lr: bool = False, grid: Grid = Grid(),
            stop=None, progress: Callable[[float, str], None] | None = None, command: str | None = None,
            tuned: dict | None = None, run_scope: Callable[..., Iterator[dict]] | None = None) -> Iterator[dict]:
    """Train each scope of `scopes` with `cfg_base`'s budget, once per seed, into
    out_dir/runs/<scope>/seed<k>/; with `tune_lr`, first choose each scope's rate on the
    validation split (medln.tuning; runs in out_dir/tune/<scope>/) — test is never read then.

    `ood`: a data spec whose `cfg_base.eval_split` split is the out-of-domain set (default:
    the `cfg_base.ood_split` split of the training data). `seeds`: default [cfg_base.seed].
    `stop`: anything with is_set(). `progress(fraction, message)`: optional callback.
    `tuned`: the "tuning" record of an earlier sweep's results.json on the same backbone,
    data and budget (`--lrs-from`): its chosen rates are used, and the record is kept.
    `run_scope`: what trains one run, called as train_run is (the app passes a ZeroGPU call).

    Yields {"event": "compare_start"}, with tune_lr per scope {"event": "tune_start"}, the
    tuning runs' records (event "tune_run"), {"event": "tune_done"}, then per scope and seed
    {"event": "scope_start"}, that run's records (train_run's, tagged with "scope" and
    "seed"; its start/done renamed run_start/run_done), {"event": "scope_done" or
    "scope_skipped", "row": ...}; at the end {"event": "done", "rows", "summary",
    "references", "verdict", "results", ...}. results.json is rewritten after every run, so
    an interrupted sweep keeps what it finished.
    """
    import torch

    from .data import load_samples
    from .evaluate import subsample
    from .train import train_run

    scopes = parse_scopes(scopes)
    seeds = list(dict.fromkeys(seeds)) if seeds else [cfg_base.seed]
    # The shared fields, checked once ('ln' runs under any quant; each scope is checked again).
    cfg_base = dataclasses.replace(cfg_base, scope="ln").validate()
    out = Path(out_dir)
    taken = [s for s in scopes if (out / "runs" / s).exists()]
    if taken:
        raise FileExistsError(f"{out} already holds runs for {', '.join(taken)}; choose another --out")

    if tune_lr:
        train, validation, val_info = split_validation(cfg_base)
    else:
        train = load_samples(cfg_base.data, cfg_base.split, skip_bad=cfg_base.skip_bad).samples
        validation, val_info = [], {"source": None, "n": 0, "text": "not used: learning rates not tuned here"}
    # Tuning scores the headline metric only: VQA items when there are any (no report generation).
    val_tune = subsample([s for s in validation if s.task == "vqa"] or validation, cfg_base.eval_limit)
    if tune_lr and tuned and (tuned.get("seed") != seeds[0] or tuned.get("n") != len(val_tune)
                              or (tuned.get("split") or {}).get("n") != val_info.get("n")):
        raise ConfigError(f"{tuned.get('reused_from')}: tuned with seed {tuned.get('seed')} on {tuned.get('n')} "
                          f"validation items; this sweep has seed {seeds[0]} and {len(val_tune)}")
    out.mkdir(parents=True, exist_ok=True)
    extra_eval, ood_info = None, {"data": cfg_base.data, "split": cfg_base.ood_split or None, "key": cfg_base.ood_split or None}
    if ood:
        samples = subsample(load_samples(ood, cfg_base.eval_split or "test", skip_bad=cfg_base.skip_bad).samples,
                            cfg_base.eval_limit)  # as train_run limits its own splits
        extra_eval = {OOD_KEY: samples}
        ood_info = {"data": ood, "split": cfg_base.eval_split or "test", "key": OOD_KEY, "n": len(samples)}
        cfg_base = dataclasses.replace(cfg_base, ood_split="")  # the second dataset replaces it
    ood_key = ood_info["key"]

    cuda = torch.cuda.is_available()
    memory_measure = ("torch.cuda.max_memory_allocated during training" if cuda else
                      "process peak resident memory (VmHWM) during training, model included")
    started, t_sweep = time.strftime("%Y-%m-%dT%H:%M:%S"), time.perf_counter()
    rows: list[dict] = []
    tuning: dict[str, dict] = {}
    reused: list[str] = []  # scopes whose validation-chosen rate comes from `tuned` (tune_lr with tuned)
    bases: dict[tuple, dict] = {}  # base_key -> {split: metrics}
    backbone_name = cfg_base.backbone
    status = "completed"
    machine = machine_info()
    references: dict = {}
    total_runs = len(scopes) * len(seeds)

    def results(final: bool) -> dict:
        from .plots import pick_metric

        res = {
            "command": command, "backbone": backbone_name, "data": cfg_base.data, "eval_split": cfg_base.eval_split,
            "ood": ood_info, "splits": {"train": {"split": cfg_base.split, "n": len(train)}, "validation": val_info,
                       "test": {"split": cfg_base.eval_split}},
            "scopes": scopes, "seeds": seeds, "quant": cfg_base.quant, "steps": cfg_base.steps,
            "config": {k: v for k, v in cfg_base.to_dict().items() if k not in ("scope", "seed", "lr")},
            "lr_source": (_tuned_source([s for s in tuning if not tuning[s].get("reused")], reused,
                                        tuned.get("reused_from") if tuned else None)
                          if tune_lr else
                          f"tuned on validation (--tune-lr) by an earlier sweep, reused ({tuned.get('reused_from')})"
                          if tuned else
                          f"given (--lr {cfg_base.lr:g})" if cfg_base.lr is not None else "the backbone's registry defaults"),
            "tuning": {"grid": grid.describe(), "seed": seeds[0], "split": val_info, "n": len(val_tune),
                       "scopes": tuning, **({"reused_from": tuned.get("reused_from")} if reused else {})}
                      if tune_lr else tuned,
            "metric": pick_metric(rows), "memory_measure": memory_measure, "status": status if final else "running",
            "started": started, "wall_s": round(time.perf_counter() - t_sweep, 3), "machine": machine,
            "rows": rows,
        }
        if final:
            res["references"] = references
            res["summary"] = summarize_rows(rows, scopes, res["metric"])
            res["verdict"] = verdict(res)
        return res

    yield {"event": "compare_start", "scopes": scopes, "seeds": seeds, "out": str(out), "backbone": cfg_base.backbone,
           "data": cfg_base.data, "ood": ood_info, "steps": cfg_base.steps, "quant": cfg_base.quant, "tune_lr": tune_lr}

    # Scopes that cannot run at all (full under 4-bit) are one skipped row, not tried per seed.
    runnable, unrunnable = [], {}
    for scope in scopes:
        try:
            dataclasses.replace(cfg_base, scope=scope).validate()
            runnable.append(scope)
        except (ConfigError, ScopeError) as e:
            unrunnable[scope] = _reason(e)

    # ---- 1. learning rates, chosen on validation (the test split is not loaded here)
    lrs: dict[str, float] = {}
    if tuned and not tune_lr:
        lrs = {scope: rec["chosen"] for scope, rec in (tuned.get("scopes") or {}).items() if rec.get("chosen")}
        val_info = tuned.get("split") or val_info
    if tune_lr and tuned:
        # Tune only what the earlier sweep lacks; its rates came from the same grid, seed and
        # validation items (checked above and in tuning.reusable_tuning), so the effort is equal.
        for scope in runnable:
            rec = (tuned.get("scopes") or {}).get(scope)
            if rec and rec.get("chosen"):
                tuning[scope], lrs[scope] = {**rec, "reused": True}, rec["chosen"]
                reused.append(scope)
    if tune_lr:
        tune_bases: dict[tuple, dict] = {}
        for scope in (s for s in runnable if s not in reused):
            if stop is not None and stop.is_set():
                break
            cfg_s = dataclasses.replace(cfg_base, scope=scope, seed=seeds[0], eval_split="", ood_split="")
            yield {"event": "tune_start", "scope": scope, "centre": cfg_s.effective_lr, "n": len(val_tune)}

            def run_one(lr: float, cfg_s=cfg_s):
                cfg = dataclasses.replace(cfg_s, lr=lr).validate()
                key, score = base_key(cfg), None
                run = (run_scope or train_run)(cfg, out / "tune" / cfg.scope / f"lr{lr:g}", stop=stop, base_metrics=tune_bases.get(key),
                                extra_eval={"validation": val_tune}, train_samples=train)
                try:
                    for record in run:
                        if record.get("event") == "done":
                            tune_bases.setdefault(key, record["base"])
                            metric = headline_metric(record["tuned"]["validation"])
                            score = record["tuned"]["validation"].get(metric) if metric else None
                        if progress and record.get("event") == "step" and record["step"] == cfg.steps:
                            progress(0.0, f"tuning {cfg.scope}: lr {lr:g} trained")
                        yield {**record, "event": "tune_run", "run_event": record.get("event"), "scope": cfg.scope,
                               "lr": lr}
                except (ValueError, RuntimeError, MemoryError) as e:
                    from .backbones import BackboneError
                    from .data import DataError

                    if isinstance(e, (BackboneError, DataError)):
                        raise
                    yield {"event": "tune_run", "run_event": "failed", "scope": cfg.scope, "lr": lr, "reason": _reason(e)}
                finally:
                    run.close()
                    free_memory()
                yield {"event": "tune_point", "scope": cfg.scope, "lr": lr, "score": score}
                return score

            record = yield from tune_scope(run_one, cfg_s.effective_lr, grid, stop=stop)
            record.update(centre=cfg_s.effective_lr, metric=headline_for(s.task for s in val_tune),
                          split=val_info.get("split"), n=len(val_tune), base=(tune_bases.get(base_key(cfg_s)) or {}).get("validation"))
            tuning[scope] = record
            if record["chosen"] is not None:
                lrs[scope] = record["chosen"]
            yield {"event": "tune_done", "scope": scope, **record}
            write_json_atomic(out / "results.json", results(final=False))

    # ---- 2. every scope x seed at its rate, scored once on test (and the out-of-domain set)
    done_runs = 0
    for seed in seeds:
        for scope in scopes:
            if scope in unrunnable:
                if seed == seeds[0]:
                    row = _empty_row(scope, unrunnable[scope])
                    rows.append(row)
                    yield {"event": "scope_skipped", "scope": scope, "reason": row["skipped"], "row": row}
                continue
            if stop is not None and stop.is_set():
                status = "stopped"
                rows.append(_empty_row(scope, "stopped before it ran", seed))
                continue
            if progress:
                progress(done_runs / total_runs, f"{scope} (seed {seed}): loading")
            yield {"event": "scope_start", "scope": scope, "seed": seed, "index": done_runs, "of": total_runs}
            row, steps, t0 = _empty_row(scope, seed=seed), [], time.perf_counter()
            row["status"] = "running"
            run = None
            try:
                cfg = dataclasses.replace(cfg_base, scope=scope, seed=seed, lr=lrs.get(scope, cfg_base.lr)).validate()
                key = base_key(cfg)
                row["lr"] = cfg.effective_lr
                run = (run_scope or train_run)(cfg, out / "runs" / scope / f"seed{seed}", stop=stop, base_metrics=bases.get(key),
                                extra_eval=extra_eval, train_samples=train)
                for record in run:
                    event = record.get("event")
                    # train_run's start/done become run_start/run_done: "done" ends the whole sweep
                    record = {**record, "scope": scope, "seed": seed}
                    if event in ("start", "done"):
                        record["event"] = f"run_{event}"
                    if event == "start":
                        backbone_name = record["backbone"]
                        row.update({k: record[k] for k in ("trainable", "total", "percent", "dead", "notes")})
                    elif event == "stopped":
                        row["status"] = "stopped"
                    elif event == "done":
                        row.update(_finish(record, cfg.eval_split, ood_key))
                        bases.setdefault(key, record["base"])
                    elif event == "step":
                        steps.append(record)
                        row["peak_mem_gb"] = max(r["peak_mem_gb"] for r in steps)  # fit() starts a new peak window
                        if progress:
                            progress((done_runs + record["step"] / cfg.steps) / total_runs,
                                     f"{scope} (seed {seed}): step {record['step']}/{cfg.steps}, loss {record['loss']:.4f}")
                    yield record
            except (ValueError, RuntimeError, MemoryError) as e:  # ConfigError, ScopeError, torch.OutOfMemoryError, ...
                from .backbones import BackboneError
                from .data import DataError

                if isinstance(e, (BackboneError, DataError)):
                    raise  # the same for every scope: the user's to fix, not a row
                row.update(status="skipped", skipped=_reason(e), steps_done=len(steps))
            finally:
                if run is not None:
                    run.close()
                run = None
                free_memory()
            if row["status"] == "running":  # no done record: a non-main process under `accelerate launch`
                row["status"] = "incomplete"
            row.update(
                step_s=steady([r["step_s"] for r in steps]),
                samples_per_s=steady([r["samples_per_s"] for r in steps]),
                final_loss=steps[-1]["loss"] if steps else None,
                losses=[r["loss"] for r in steps],
                wall_s=round(time.perf_counter() - t0, 3),
            )
            rows.append(row)
            done_runs += 1
            write_json_atomic(out / "results.json", results(final=False))
            if row["skipped"]:
                yield {"event": "scope_skipped", "scope": scope, "seed": seed, "reason": row["skipped"], "row": row}
            else:
                yield {"event": "scope_done", "scope": scope, "seed": seed, "row": row}
            if row["status"] == "stopped":  # train_run saved and scored what it had; the rest do not run
                status = "stopped"

    # ---- 3. reference rows: the base model, and a model that never looks at the image
    references.update(reference_rows(cfg_base, train, bases, extra_eval, ood_key))

    final = results(final=True)
    write_json_atomic(out / "results.json", final)
    write_csv(out / "results.csv", rows)
    write_table(out / "TABLE.md", final)
    figures = write_figures(out, rows, final)
    if progress:
        progress(1.0, "done")
    yield {"event": "done", "status": status, "results": str(out / "results.json"), "csv": str(out / "results.csv"),
           "figures": [str(p) for p in figures], "wall_s": final["wall_s"], "metric": final["metric"], "rows": rows,
           "summary": final["summary"], "references": references, "verdict": final["verdict"]}


def _tuned_source(here: list[str], reused: list[str], source: str | None) -> str:
    """lr_source of a --tune-lr sweep, saying which scopes were tuned by this sweep."""
    if not reused:
        return "tuned on validation (--tune-lr)"
    if not here:
        return f"tuned on validation (--tune-lr) by an earlier sweep with the same grid ({source}); none here"
    return (f"tuned on validation (--tune-lr); {', '.join(here)} here, the others by an earlier sweep with the "
            f"same grid ({source})")


def _finish(done: dict, eval_split: str, ood_key: str | None) -> dict:
    """The row fields that come from train_run's done record."""
    base, tuned = done["base"], done["tuned"]
    ood_base = base.get(ood_key) if ood_key else None
    ood_tuned = tuned.get(ood_key) if ood_key else None
    metric = headline_metric(ood_base) or headline_metric(base.get(eval_split))
    ratio, pts = retention(ood_base, ood_tuned, headline_metric(ood_base))
    return {
        "status": done["status"], "steps_done": done["steps_done"], "train_s": done["train_s"],
        "trainable": done["trainable"], "total": done["total"], "percent": done["percent"],
        "adapter_bytes": done["adapter_bytes"], "run": done["run"], "metric": metric,
        "base": base.get(eval_split), "tuned": tuned.get(eval_split),
        "ood_base": ood_base, "ood_tuned": ood_tuned, "retention": ratio, "retention_pts": pts,
    }


__all__ = ["ALL_SCOPES", "base_key", "compare", "format_bytes", "format_table", "parse_scopes", "retention",
           "split_validation", "write_csv", "write_figures"]
