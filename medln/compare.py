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
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from .config import ConfigError, TrainConfig, _f, add_command, from_args
from .compare_report import flat_row, format_table, write_csv, write_figures
from .evaluate import headline_metric
from .machine import free_memory, machine_info
from .runs import write_json_atomic
from .scopes import SCOPES, ScopeError, get_scope

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


def _empty_row(scope: str, reason: str | None = None) -> dict:
    return {
        "scope": scope, "status": "skipped" if reason else None, "skipped": reason, "lr": None,
        "trainable": None, "total": None, "percent": None, "dead": None, "adapter_bytes": None,
        "steps_done": 0, "step_s": None, "samples_per_s": None, "peak_mem_gb": None, "train_s": None,
        "wall_s": None, "final_loss": None, "metric": None, "base": None, "tuned": None,
        "ood_base": None, "ood_tuned": None, "retention": None, "retention_pts": None,
        "run": None, "notes": [], "losses": [],
    }


def compare(cfg_base: TrainConfig, scopes: list[str] | str | None, out_dir, *, ood: str | None = None,
            stop=None, progress: Callable[[float, str], None] | None = None,
            run_scope: Callable[..., Iterator[dict]] | None = None) -> Iterator[dict]:
    """Train each scope of `scopes` with `cfg_base`'s budget into out_dir/runs/<scope>/.

    `ood`: a data spec whose `cfg_base.eval_split` split is the out-of-domain set (default:
    the `cfg_base.ood_split` split of the training data). `stop`: anything with is_set().
    `progress(fraction, message)`: optional callback (gr.Progress fits). `run_scope`: what
    trains one scope, called as train_run is (the app passes a ZeroGPU call per scope).

    Yields {"event": "compare_start"}, per scope {"event": "scope_start"}, that run's records
    (train_run's, tagged with "scope"; its start/done events renamed run_start/run_done),
    {"event": "scope_done" or "scope_skipped", "row": ...}; at the end
    {"event": "done", "rows": [...], "results": path, ...}. results.json is rewritten after
    every scope, so an interrupted sweep keeps what it finished.
    """
    import torch

    from .data import load_samples
    from .train import train_run

    scopes = parse_scopes(scopes)
    # The shared fields, checked once ('ln' runs under any quant; each scope is checked again).
    cfg_base = dataclasses.replace(cfg_base, scope="ln").validate()
    out = Path(out_dir)
    taken = [s for s in scopes if (out / "runs" / s / "config.json").exists()]
    if taken:
        raise FileExistsError(f"{out} already holds runs for {', '.join(taken)}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    extra_eval, ood_info = None, {"data": cfg_base.data, "split": cfg_base.ood_split or None, "key": cfg_base.ood_split or None}
    if ood:
        from .evaluate import subsample

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
    bases: dict[tuple, dict] = {}  # base_key -> {split: metrics}
    backbone_name = cfg_base.backbone
    status = "completed"
    machine = machine_info()

    def results(final: bool) -> dict:
        from .plots import pick_metric

        return {
            "backbone": backbone_name, "data": cfg_base.data, "eval_split": cfg_base.eval_split, "ood": ood_info,
            "scopes": scopes, "quant": cfg_base.quant, "steps": cfg_base.steps,
            "config": {k: v for k, v in cfg_base.to_dict().items() if k != "scope"},
            "metric": pick_metric(rows), "memory_measure": memory_measure, "status": status if final else "running",
            "started": started, "wall_s": round(time.perf_counter() - t_sweep, 3), "machine": machine,
            "rows": rows,
        }

    yield {"event": "compare_start", "scopes": scopes, "out": str(out), "backbone": cfg_base.backbone,
           "data": cfg_base.data, "ood": ood_info, "steps": cfg_base.steps, "quant": cfg_base.quant}
    for index, scope in enumerate(scopes):
        if stop is not None and stop.is_set():
            status = "stopped"
            rows.extend(_empty_row(s, "stopped before it ran") for s in scopes[index:])
            break
        if progress:
            progress(index / len(scopes), f"{scope}: loading")
        yield {"event": "scope_start", "scope": scope, "index": index, "of": len(scopes)}
        row, steps, t0 = _empty_row(scope), [], time.perf_counter()
        row["status"] = "running"
        run = None
        try:
            cfg = dataclasses.replace(cfg_base, scope=scope).validate()
            key = base_key(cfg)
            row["lr"] = cfg.effective_lr
            run = (run_scope or train_run)(cfg, out / "runs" / scope, stop=stop, base_metrics=bases.get(key),
                                           extra_eval=extra_eval)
            for record in run:
                event = record.get("event")
                # train_run's start/done become run_start/run_done: "done" ends the whole sweep
                record = {**record, "scope": scope}
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
                        progress((index + record["step"] / cfg.steps) / len(scopes),
                                 f"{scope}: step {record['step']}/{cfg.steps}, loss {record['loss']:.4f}")
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
        write_json_atomic(out / "results.json", results(final=False))
        if row["skipped"]:
            yield {"event": "scope_skipped", "scope": scope, "reason": row["skipped"], "row": row}
        else:
            yield {"event": "scope_done", "scope": scope, "row": row}
        if row["status"] == "stopped":  # train_run saved and scored what it had; the rest do not run
            status = "stopped"
            rows.extend(_empty_row(s, "stopped before it ran") for s in scopes[index + 1:])
            break

    final = results(final=True)
    write_json_atomic(out / "results.json", final)
    write_csv(out / "results.csv", rows)
    figures = write_figures(out, rows)
    if progress:
        progress(1.0, "done")
    yield {"event": "done", "status": status, "results": str(out / "results.json"), "csv": str(out / "results.csv"),
           "figures": [str(p) for p in figures], "wall_s": final["wall_s"], "metric": final["metric"], "rows": rows}


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


def cmd_compare(args) -> None:
    import signal
    import threading

    cfg = from_args(args)
    stop = threading.Event()

    def on_interrupt(signum, frame):
        # First Ctrl-C: finish gracefully (the current scope stops within a step, is saved and
        # scored, the rest are skipped, the files are written). Second: abort.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping after the current step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        for record in compare(cfg, args.scopes, args.out, ood=args.ood or None, stop=stop):
            event = record.get("event")
            if args.json:
                print(json.dumps(record, default=str), flush=True)
            elif event == "compare_start":
                print(f"compare {', '.join(record['scopes'])} on {record['backbone']} / {record['data']} "
                      f"({record['steps']} steps, quant {record['quant']}) -> {record['out']}", flush=True)
            elif event == "run_start":
                print(f"[{record['scope']}] lr={record['lr']:g}: trains {record['trainable']:,} of "
                      f"{record['total']:,} parameters ({record['percent']:.4f} %)", flush=True)
            elif event == "scope_skipped":
                print(f"[{record['scope']}] skipped: {record['reason']}", flush=True)
            elif event == "scope_done":
                r = record["row"]
                print(f"[{r['scope']}] {r['status']} in {r['wall_s']:.1f} s ({r['train_s']:.1f} s training)", flush=True)
            elif event == "done":
                print()
                print(format_table(record["rows"], record["metric"]))
                print(f"\nresults: {record['results']}\ncsv:     {record['csv']}\nfigures: "
                      + ", ".join(record["figures"]) + f"\n({record['wall_s']:.1f} s)")
            elif event == "step" and (record["step"] % 10 == 0 or record["step"] == 1):
                print(f"[{record['scope']}] step {record['step']:>5}  loss {record['loss']:.4f}  "
                      f"{record['samples_per_s']:.1f} samples/s", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass(kw_only=True)
class CompareArgs(TrainConfig):
    """TrainConfig's shared budget (its `scope` is not an option: --scopes lists them)."""

    scopes: str = _f(",".join(ALL_SCOPES), "comma-separated scopes")
    ood: str = _f("", "data spec of a second dataset for out-of-domain retention (its --eval-split split); "
                      "default: the --ood-split split of --data")
    out: str = _f(help="folder for results.json, results.csv, figures.html and runs/")
    json: bool = _f(False, "one JSON object per progress record; the last holds the rows")


def add_cli(sub) -> None:
    add_command(sub, "compare", CompareArgs, cmd_compare, exclude=("scope",),
                help="train several scopes with the same budget; table, CSV and plots")


__all__ = ["ALL_SCOPES", "add_cli", "base_key", "compare", "flat_row", "parse_scopes", "retention", "write_csv",
           "write_figures"]
