"""The GPU proof: every target of the GPU benchmark issues measured in one call, on random
weights at real shapes and on the bundled demo (bench/gpu_proof.sh runs it; bench/README.md).

    python -m medln.bench.gpu_proof run --out FILE [--dry-run] [--budget-s S]
    python -m medln.bench.gpu_proof summary FILE          # targets met/missed, one line each
    python -m medln.bench.gpu_proof reference             # the CPU demo answers (committed)
    python -m medln.bench.gpu_proof wheels --out .whl     # the wheel folder the device needs

Parts, in the order they run (the most important first, so a time limit cuts the least):
  llava   llava-7b, 4-bit NF4, batch 4, ~1k tokens: scopes ln and lora (medln.bench rows)
  qwen    qwen2-vl-2b, bf16: scopes ln and full (tokens/s, MFU)
  fp16    medln-tiny on the sample: 20 steps fp16 + GradScaler vs bf16 (medln.train, in process)
  demo    `medln train --data sample --quant 4bit`, then `medln ask` base and tuned
  app     `python app.py`, one /finetune and one /ask through gradio_client
  batch   the largest ln batch of the llava part whose peak memory is within 16 GB
  levers  before/after rows: SDPA, frozen tensors in their dtype, torch.compile, fused norms

The result file is rewritten after every part, so a run stopped at its time limit keeps what
it measured; `summary` judges whatever is there. A dry run (--dry-run) is the same code on the
CPU at toy sizes: its device is "cpu-dry-run" and it can never be written into bench/results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .proof_parts import run_app, run_demo, run_precision
from .proof_targets import DRY_DEVICE, judge, summary_lines

ROOT = Path(__file__).resolve().parents[2]  # the repository (app.py, assets/, requirements.txt)
RESULTS = ROOT / "bench" / "results"
REFERENCE = RESULTS / "demo-cpu-reference.json"
PARTS = ("llava", "qwen", "fp16", "demo", "app", "batch", "levers")


@dataclass
class Plan:
    """What each part measures. The GPU plan is the issue's; the dry plan keeps every code
    path at toy sizes (shape `tiny` stands in for both real shapes: a 2-layer LLaVA)."""

    dry_run: bool = False
    llava_shape: str = "llava-7b"
    qwen_shape: str = "qwen2-vl-2b"
    batch: int = 4
    seq: int = 1024  # tokens per sample, the 576 image tokens included
    steps: int = 10
    warmup: int = 3
    gen_tokens: int = 32
    batch_limit_gb: float = 16.0
    batch_rows: int = 4  # at most this many extra llava rows to find the largest batch
    lever_steps: int = 5
    lever_warmup: int = 3  # torch.compile compiles in the warm-up steps
    compile_backend: str = "inductor"
    precision_steps: int = 20
    precision_batch: int = 8  # fixed, not the backbone's default: bf16 and fp32 train the same batches
    demo_steps: int | None = None  # None: train's default (the demo as a user runs it)
    demo_eval_limit: int | None = None
    demo_questions: int = 4
    demo_batch: int | None = None
    app_steps: int = 20
    app_eval_limit: int = 8
    app_batch: int = 8

    @classmethod
    def dry(cls) -> "Plan":
        return cls(dry_run=True, llava_shape="tiny", qwen_shape="tiny", batch=2, seq=64, steps=2, warmup=1,
                   gen_tokens=4, batch_rows=0, lever_steps=2, lever_warmup=1, compile_backend="eager",
                   precision_steps=2,
                   precision_batch=1, demo_steps=2, demo_eval_limit=2, demo_batch=1, demo_questions=1, app_steps=2,
                   app_eval_limit=2, app_batch=1)


def bench_cfg(plan: Plan, **over):
    from .command import BenchConfig

    base = dict(shape=plan.llava_shape, scopes="ln", quant="4bit", batch=str(plan.batch), seq=str(plan.seq),
                steps=plan.steps, warmup=plan.warmup, gen_tokens=plan.gen_tokens, toy=False,
                compile_backend=plan.compile_backend)
    return BenchConfig(**{**base, **over})


_DEADLINE: float | None = None  # no row starts that would not end before it (time.time())
_ROW_WALL: dict[str, float] = {}  # the longest row so far per shape: the cost of the next one


def _row(plan: Plan, part: str, scope: str, **over) -> dict:
    from .command import _empty_row, bench_row

    cfg = bench_cfg(plan, scopes=scope, **over)
    if _DEADLINE is not None and time.time() + _ROW_WALL.get(cfg.shape, 0.0) > _DEADLINE:
        row = _empty_row(cfg.shape, scope, cfg.quant, int(cfg.batch), int(cfg.seq), cfg)
        row.update(part=part, skipped="time budget: not started")
        return row
    t0 = time.perf_counter()
    row = bench_row(cfg, cfg.shape, scope, cfg.quant, int(cfg.batch), int(cfg.seq))
    row.update(part=part, wall_s=round(time.perf_counter() - t0, 2))
    _ROW_WALL[cfg.shape] = max(_ROW_WALL.get(cfg.shape, 0.0), row["wall_s"])
    print(f"  {part}: {cfg.shape} {scope} {cfg.quant} b={cfg.batch}: "
          + (f"skipped: {row['skipped']}" if row["skipped"] else
             f"{row['tokens_per_s']} tok/s, peak {row['peak_mem_gb']} GB, mfu {row['mfu']}"), flush=True)
    return row


def part_llava(plan, result):
    for scope in ("ln", "lora"):
        result["rows"].append(_row(plan, "llava", scope))


def part_qwen(plan, result):
    for scope in ("ln", "full"):
        result["rows"].append(_row(plan, "qwen", scope, shape=plan.qwen_shape, quant="bf16"))


def next_batch(measured: dict[int, float | None], limit: float) -> int | None:
    """The next batch to measure in the search for the largest batch whose peak memory is
    within `limit` GB, from {batch: peak GB, or None for out of memory}: double while every
    batch fits, halve while none does, then bisect between the largest fit and the smallest
    misfit. None once they are neighbours (or batch 1 does not fit)."""
    fits = sorted(b for b, p in measured.items() if p is not None and p <= limit)
    over = sorted(b for b, p in measured.items() if p is None or p > limit)
    if not fits:
        return over[0] // 2 if over[0] > 1 else None
    bigger = [b for b in over if b > fits[-1]]
    if not bigger:
        return fits[-1] * 2
    lo, hi = fits[-1], bigger[0]
    return (lo + hi) // 2 if hi - lo > 1 else None


def part_batch(plan, result):
    """Measured, never extrapolated: each candidate batch is a training row of its own."""
    base = next((r for r in result["rows"] if r.get("part") == "llava" and r["scope"] == "ln"
                 and not r["skipped"]), None)
    if base is None or base["peak_mem_gb"] is None:
        result["notes"].append("batch: no GPU peak memory measured for the llava ln row; no search")
        return
    measured = {base["batch"]: base["peak_mem_gb"]}
    for _ in range(plan.batch_rows):
        b = next_batch(measured, plan.batch_limit_gb)
        if b is None:
            break
        row = _row(plan, "batch", "ln", batch=str(b), gen_tokens=0, steps=3, warmup=1)
        result["rows"].append(row)
        measured[b] = None if row["skipped"] else row["peak_mem_gb"]
        _save(result)


# Each lever: the row that differs from the llava ln row (all levers at their defaults:
# SDPA on, frozen tensors kept, no compile, no fused norms), and which side of it that is.
LEVERS = [
    ("sdpa", "SDPA/flash attention vs eager attention", {"sdpa": False}, "before"),
    ("frozen-dtype", "frozen tensors kept in their dtype vs upcast to fp32 (prepare_model_for_kbit_training)",
     {"upcast_frozen": True}, "before"),
    ("compile", "regional torch.compile vs eager", {"compile": True}, "after"),
    ("fused-norms", "fused RMSNorm (torch.nn.functional.rms_norm) vs transformers' eager norm",
     {"fused_norms": True}, "after"),
]


def part_levers(plan, result):
    reference = _row(plan, "levers", "ln", gen_tokens=0, steps=plan.lever_steps, warmup=plan.lever_warmup)
    reference["lever"] = "reference"
    result["rows"].append(reference)
    _save(result)
    for name, what, over, side in LEVERS:
        row = _row(plan, "levers", "ln", gen_tokens=0, steps=plan.lever_steps, warmup=plan.lever_warmup, **over)
        row.update(lever=name, lever_side=side, lever_what=what)
        result["rows"].append(row)
        _save(result)


def part_fp16(plan, result):
    result["precision_check"] = run_precision(plan)


def part_demo(plan, result):
    result["demo"] = run_demo(plan, reference=REFERENCE)


def part_app(plan, result):
    result["app"] = run_app(plan, root=ROOT)


RUNNERS = {"llava": part_llava, "qwen": part_qwen, "fp16": part_fp16, "demo": part_demo, "app": part_app,
           "batch": part_batch, "levers": part_levers}

_OUT: Path | None = None


def _save(result: dict) -> None:
    if _OUT is not None:
        from .command import write_results

        write_results(result, _OUT)


def check_out(path: Path, dry_run: bool) -> None:
    """A dry run never lands where GPU results live (nor is mistaken for one)."""
    inside = RESULTS.resolve() in path.resolve().parents or path.resolve() == RESULTS.resolve()
    if dry_run and inside:
        raise SystemExit(f"error: a dry run does not write into {RESULTS}: pass --out elsewhere (a temp folder)")


def run(plan: Plan, out: Path, *, parts=PARTS, budget_s: float = 570.0) -> dict:
    global _OUT, _DEADLINE
    check_out(out, plan.dry_run)  # before anything is imported or measured
    import torch

    from .command import device_name, environment
    from .proof_wheels import pins_report

    if not plan.dry_run and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: run the GPU proof on a GPU, or pass --dry-run for the CPU check")
    _OUT = out
    started = time.time()
    _DEADLINE = started + budget_s
    result = {"device": DRY_DEVICE if plan.dry_run else device_name(torch.device("cuda")),
              "dry_run": plan.dry_run,
              "what": ("DRY RUN on the CPU at toy sizes: checks the proof's code paths; no figure in it is a GPU "
                       "result" if plan.dry_run else "GPU proof: measured on this device in one run"),
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "env": environment(), "pins": pins_report(ROOT / "requirements.txt"),
              "plan": dataclasses.asdict(plan), "parts_done": [], "parts_skipped": {}, "rows": [], "notes": []}
    _save(result)
    for part in parts:
        left = budget_s - (time.time() - started)
        if left < 20:
            result["parts_skipped"][part] = f"time budget ({budget_s:.0f} s) spent before it started"
            continue
        print(f"[{time.time() - started:6.1f} s] part {part}", flush=True)
        t0 = time.time()
        try:
            RUNNERS[part](plan, result)
            result["parts_done"].append(part)
        except Exception as e:  # noqa: BLE001 - one broken part must not cost the others their GPU minutes
            import traceback

            traceback.print_exc()
            result["parts_skipped"][part] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        result.setdefault("part_wall_s", {})[part] = round(time.time() - t0, 1)
        result["wall_s"] = round(time.time() - started, 1)
        _save(result)
    result["targets"] = judge(result)
    _save(result)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m medln.bench.gpu_proof", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure every part; write the result file after each")
    r.add_argument("--out", required=True, help="result file (GPU: bench/results/<device>.json)")
    r.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: the code paths, no GPU figure")
    r.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    r.add_argument("--budget-s", type=float, default=570.0, help="no part starts after this many seconds")
    s = sub.add_parser("summary", help="judge a result file: one line per target (and write the targets into it)")
    s.add_argument("file")
    f = sub.add_parser("reference", help="run the demo part on the CPU and write the committed reference answers")
    f.add_argument("--out", default=str(REFERENCE))
    w = sub.add_parser("wheels", help="(here, with a package index) the wheel archive the device installs from")
    w.add_argument("--out", default=str(ROOT / ".whl"))
    w.add_argument("--python-version", default="3.12")
    w.add_argument("--cuda", default="130", help="bitsandbytes CUDA library to keep (the device torch's CUDA)")
    args = p.parse_args(argv)

    if args.command == "run":
        parts = [x for x in args.parts.split(",") if x]
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            print(f"error: unknown parts {unknown}; choose from {', '.join(PARTS)}", file=sys.stderr)
            return 2
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights and the bundled model: nothing to fetch
        run(Plan.dry() if args.dry_run else Plan(), Path(args.out), parts=parts, budget_s=args.budget_s)
        return 0
    if args.command == "summary":
        path = Path(args.file)
        if not path.exists():
            print(f"error: {path}: no result file (the run wrote nothing)", file=sys.stderr)
            return 2
        result = json.loads(path.read_text())
        result["targets"] = judge(result)
        from .command import write_results

        write_results(result, path)
        for line in summary_lines(result):
            print(line)
        return 0
    if args.command == "reference":
        from .proof_parts import write_reference

        write_reference(Plan(), Path(args.out))
        return 0
    from .proof_wheels import build_wheels

    return build_wheels(Path(args.out), python_version=args.python_version, cuda=args.cuda, root=ROOT)


if __name__ == "__main__":
    sys.exit(main())
