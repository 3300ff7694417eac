"""Judging a GPU proof result file (medln.bench.gpu_proof): each target met or missed with
its measured ratio, "not measured" where the run has no figure for it (a CPU, a part cut by
the time limit). Pure functions of the file: nothing here measures, and nothing is estimated.

MFU, as every medln.bench row counts it: model FLOPs per optimizer step / step seconds /
the device's peak dense bf16 FLOP/s (medln.bench.measure.PEAK_TFLOPS: 989 T for H100 SXM and
H200). Model FLOPs come from a forward pass with hooks, 2 x rows x in x out for every linear
layer (4-bit ones too) and the patch-embedding convolutions, plus one forward's worth for
input gradients in every part from the first one holding a trained tensor on, plus one for
weight gradients of trained whole weights (4·N·tokens for ln, 6·N·tokens for full).
Attention scores (the T² term) and recomputation are not counted.
"""

from __future__ import annotations

import math

DRY_DEVICE = "cpu-dry-run"

FLOPS_RULE = ("MFU = model FLOPs per step / step_s / peak dense bf16 FLOP/s; FLOPs: 2·rows·in·out per linear "
              "(4-bit too) and patch conv, x2 where gradients flow, x3 for trained whole weights; attention T² "
              "not counted")


def _rows(result: dict, part: str, **match) -> list[dict]:
    return [r for r in result.get("rows", []) if r.get("part") == part and not r.get("skipped")
            and all(r.get(k) == v for k, v in match.items())]


def _one(result, part, scope):
    rows = _rows(result, part, scope=scope)
    return rows[0] if rows else None


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _target(tid, what, value, op, threshold, detail, unit="x"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        status = "not measured"
    elif op == "<=":
        status = "met" if value <= threshold else "missed"
    else:
        status = "met" if value >= threshold else "missed"
    return {"id": tid, "what": what, "measured": None if value is None else round(value, 4), "op": op,
            "target": threshold, "unit": unit, "status": status, "detail": detail}


def _skipped_reason(result, part) -> str:
    why = result.get("parts_skipped", {}).get(part)
    if why:
        return f"part {part}: {why}"
    if part not in result.get("parts_done", []):
        return f"part {part} did not finish (time limit?)"
    rows = [r for r in result.get("rows", []) if r.get("part") == part and r.get("skipped")]
    return "; ".join(f"{r['scope']}: {r['skipped']}" for r in rows) or ""


def judge(result: dict) -> list[dict]:
    plan = result.get("plan", {})
    out = []
    ln, lora = _one(result, "llava", "ln"), _one(result, "llava", "lora")
    head = f"{plan.get('llava_shape')} 4bit b{plan.get('batch')} seq {plan.get('seq')}"
    gb = lambda r: f"{r['peak_mem_gb']} GB" if r and r.get("peak_mem_gb") is not None else "-"  # noqa: E731
    tps = lambda r: f"{r['tokens_per_s']:,.0f} tok/s" if r and r.get("tokens_per_s") else "-"  # noqa: E731
    miss = "" if ln and lora else _skipped_reason(result, "llava")
    ratio = lambda key, a, b: _ratio(a and a[key], b and b[key])  # noqa: E731
    out.append(_target("llava-memory", f"{head}: ln peak memory / lora's", ratio("peak_mem_gb", ln, lora),
                       "<=", 0.9, miss or f"ln {gb(ln)}, lora {gb(lora)} (torch.cuda.max_memory_allocated)"))
    out.append(_target("llava-speed", f"{head}: ln tokens/s / lora's", ratio("tokens_per_s", ln, lora),
                       ">=", 1.0, miss or f"ln {tps(ln)}, lora {tps(lora)}"))

    limit = plan.get("batch_limit_gb", 16.0)
    # measured peaks, and batches that ran out of memory (None); CPU rows have no peak: not counted
    tried = sorted([(r["batch"], r["peak_mem_gb"]) for r in _rows(result, "llava", scope="ln") + _rows(result, "batch")
                    if r["peak_mem_gb"] is not None]
                   + [(r["batch"], None) for r in result.get("rows", []) if r.get("part") == "batch"
                      and (r.get("skipped") or "").startswith("out of memory")])
    fits = [b for b, p in tried if p is not None and p <= limit]
    above = [b for b, p in tried if (p is None or p > limit) and (not fits or b > max(fits))]
    measured_any = any(p is not None for _, p in tried)
    detail = (", ".join(f"b{b}: {f'{p} GB' if p is not None else 'out of memory'}" for b, p in tried)
              or _skipped_reason(result, "batch") or "no GPU peak memory measured")
    if fits:
        detail += f"; largest measured within {limit:g} GB: b{max(fits)}" + (
            f" (b{min(above)} measured above)" if above else " (no larger batch measured)")
    out.append({"id": "llava-16gb", "what": f"{plan.get('llava_shape')} 4bit seq {plan.get('seq')}: largest ln batch "
                f"with peak memory <= {limit:g} GB", "measured": max(fits) if fits else None, "op": ">=", "target": 1,
                "unit": "batch", "status": ("met" if fits else "missed") if measured_any else "not measured",
                "detail": detail})

    qln, qfull = _one(result, "qwen", "ln"), _one(result, "qwen", "full")
    qhead = f"{plan.get('qwen_shape')} bf16 b{plan.get('batch')} seq {plan.get('seq')}"
    qmiss = "" if qln and qfull else _skipped_reason(result, "qwen")
    out.append(_target("qwen-speed", f"{qhead}: ln tokens/s / full's",
                       ratio("tokens_per_s", qln, qfull), ">=", 1.3,
                       qmiss or f"ln {tps(qln)}, full {tps(qfull)}"))
    out.append(_target("qwen-mfu", f"{qhead}: ln MFU", qln and qln.get("mfu"), ">=", 0.40,
                       (qmiss or f"{(qln or {}).get('flops_per_step') or 0:.3g} FLOPs/step, "
                        f"{(qln or {}).get('step_s')} s/step") + f"; {FLOPS_RULE}", unit=""))

    pc = result.get("precision_check") or {}
    runs = pc.get("runs", {})
    bf, fp = (runs.get("bf16") or {}).get("losses") or [], (runs.get("fp16") or {}).get("losses") or []
    rel = abs(fp[-1] - bf[-1]) / abs(bf[-1]) if bf and fp and len(bf) == len(fp) and bf[-1] else None
    if rel is not None and not all(math.isfinite(x) for x in bf + fp):
        rel = float("inf")
    out.append(_target("fp16-loss", f"fp16 + GradScaler vs bf16, {pc.get('steps')} steps "
                       f"({pc.get('backbone')} {pc.get('scope')} {pc.get('quant')}): "
                       "|loss diff| / bf16 loss at the last step",
                       rel, "<=", 0.02,
                       (f"bf16 {bf[-1]:.4f}, fp16 {fp[-1]:.4f}; scaler {pc.get('fp16_scaler')}" if bf and fp
                        else _skipped_reason(result, "fp16")), unit=""))

    demo = result.get("demo") or {}
    vs = demo.get("vs_reference") or {}
    compared = [m for r in vs.get("rows", []) for m in (r["base_match"], r["tuned_match"]) if m is not None]
    frac = sum(compared) / len(compared) if compared else None
    ddetail = (f"train {demo.get('train_wall_s')} s + ask {demo.get('ask_wall_s')} s wall, precision "
               f"{(demo.get('train') or {}).get('precision')}; {sum(compared)}/{len(compared)} greedy answers as the "
               f"CPU run's (base comparable: {vs.get('base_comparable')}, tuned: {vs.get('tuned_comparable')})"
               if demo else _skipped_reason(result, "demo"))
    if vs.get("error"):
        ddetail += "; " + vs["error"]
    out.append(_target("demo", "bundled demo end to end (medln train --quant 4bit, medln ask): answers equal to the "
                       "CPU run's", frac, ">=", 1.0, ddetail, unit="of answers"))

    app = result.get("app") or {}
    ft, ask = app.get("finetune") or {}, app.get("ask") or {}
    on_gpu = ft.get("precision") in ("bf16", "fp16") or result.get("dry_run")
    ok = ft.get("state") == "done" and bool(ask.get("base")) and bool(ask.get("tuned")) and on_gpu
    out.append({"id": "app", "what": "python app.py: one /finetune and one /ask through gradio_client",
                "measured": None, "op": "", "target": None, "unit": "",
                "status": ("met" if ok else "missed") if app else "not measured",
                "detail": (f"launch {app.get('launch_s')} s, finetune {ft.get('state')} in {ft.get('wall_s')} s "
                           f"({ft.get('steps')} steps, precision {ft.get('precision')}), ask {ask.get('wall_s')} s"
                           + (f"; error: {app['error']}" if app.get("error") else "")) if app
                else _skipped_reason(result, "app")})

    reference = next((r for r in _rows(result, "levers") if r.get("lever") == "reference"), None)
    for r in _rows(result, "levers"):
        if r.get("lever") in (None, "reference"):
            continue
        before, after = (r, reference) if r.get("lever_side") == "before" else (reference, r)
        speed = _ratio(after and after["tokens_per_s"], before and before["tokens_per_s"])
        mem = _ratio(after and after["peak_mem_gb"], before and before["peak_mem_gb"])
        out.append({"id": f"lever-{r['lever']}", "what": r.get("lever_what"),
                    "measured": None if speed is None else round(speed, 4),
                    "op": "", "target": None, "unit": "x tokens/s", "status": "measured" if speed else "not measured",
                    "detail": f"after/before: tokens/s {_fmt(speed)}, peak memory {_fmt(mem)}; "
                              f"before {tps(before)} {gb(before)}, after {tps(after)} {gb(after)}"})
    for lever, why in [(r.get("lever"), r.get("skipped")) for r in result.get("rows", [])
                       if r.get("part") == "levers" and r.get("skipped")]:
        out.append({"id": f"lever-{lever}", "what": lever, "measured": None, "op": "", "target": None, "unit": "",
                    "status": "not measured", "detail": why})
    if result.get("dry_run"):
        for t in out:
            t["dry_run"] = True
    return out


def _fmt(x):
    return f"{x:.3f}x" if x is not None else "-"


def summary_lines(result: dict) -> list[str]:
    dry = result.get("dry_run")
    tag = "DRY RUN (cpu, toy sizes: code paths only, not a GPU result) " if dry else ""
    lines = [f"{tag}GPU proof on {result.get('device')}: parts done {', '.join(result.get('parts_done', [])) or '-'}"
             + (f"; not done: {', '.join(result.get('parts_skipped', {}))}" if result.get("parts_skipped") else "")
             + f"; {result.get('wall_s')} s"]
    for t in result.get("targets") or judge(result):
        if t["measured"] is None:
            value = "-"
        elif t["unit"] == "x":
            value = f"{t['measured']:.3f}x"
        else:
            value = f"{t['measured']}" + (f" {t['unit']}" if t["unit"] else "")
        goal = f" (target {t['op']} {t['target']}{'x' if t['unit'] == 'x' else ''})" if t["op"] else ""
        lines.append(f"{tag}[{t['status']}] {t['id']}: {t['what']}: {value}{goal} -- {t['detail']}")
    return lines
