"""What a comparison writes beside its sweep (medln.compare): results.csv (flat rows),
figures.html (and PNGs with kaleido), and the table the CLI prints."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

_CSV_FIRST = ["scope", "status", "skipped", "lr", "trainable", "total", "percent", "adapter_bytes", "steps_done",
              "step_s", "samples_per_s", "peak_mem_gb", "train_s", "wall_s", "final_loss", "metric",
              "retention", "retention_pts"]


def flat_row(row: dict) -> dict:
    """One CSV line: scalar fields as they are, metric dicts as <prefix>_<metric>."""
    flat = {k: row.get(k) for k in _CSV_FIRST}
    for prefix in ("base", "tuned", "ood_base", "ood_tuned"):
        for k, v in (row.get(prefix) or {}).items():
            if not isinstance(v, (dict, list)):
                flat[f"{prefix}_{k}"] = v
    flat["run"] = row.get("run")
    flat["notes"] = " | ".join(row.get("notes") or [])
    return flat


def write_csv(path: Path, rows: list[dict]) -> None:
    flat = [flat_row(r) for r in rows]
    columns = list(dict.fromkeys(k for f in flat for k in f))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in flat)
    os.replace(tmp, path)


def build_figures(rows: list[dict]) -> dict:
    from . import plots

    return {
        "trainable_params": plots.trainable_params_fig(rows),
        "metric_vs_params": plots.metric_vs_params_fig(rows),
        "retention": plots.retention_fig(rows),
        "cost": plots.cost_fig(rows),
        "loss": plots.loss_curve_fig({"event": "step", "scope": r["scope"], "step": i, "loss": loss}
                                     for r in rows for i, loss in enumerate(r.get("losses") or [], start=1)),
    }


def write_figures(out: Path, rows: list[dict]) -> list[Path]:
    """figures.html: every figure, plotly.js embedded once (works offline, ~5 MB); plus PNGs
    when kaleido happens to be installed (it is not a dependency)."""
    import importlib.util

    figs = build_figures(rows)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%")
             for i, fig in enumerate(figs.values())]
    html = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>MedLN scope comparison</title></head>"
            "<body style=\"font-family: sans-serif; max-width: 1100px; margin: auto\">\n"
            "<h1>MedLN scope comparison</h1>\n" + "\n".join(f"<div id=\"{name}\">{part}</div>"
                                                           for name, part in zip(figs, parts)) + "\n</body></html>\n")
    path = out / "figures.html"
    path.write_text(html, encoding="utf-8")
    written = [path]
    if importlib.util.find_spec("kaleido") is not None:
        for name, fig in figs.items():
            try:
                fig.write_image(out / f"{name}.png")
                written.append(out / f"{name}.png")
            except Exception as e:  # kaleido needs a browser; PNGs are a bonus, the HTML is the output
                print(f"note: no PNG export ({type(e).__name__}: {e})", file=sys.stderr)
                break
    return written


def format_bytes(n: int | None) -> str:
    """Binary units, labelled as such (the CLI table and the app show the same figure)."""
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_table(rows: list[dict], metric: str) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [f"{'scope':<10} {'trainable':>12} {'%':>9} {'adapter':>9} {'s/step':>7} {'samp/s':>7} {'peak GB':>7} "
             f"{metric + ' base->tuned':>24} {'OOD retention':>16}"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"{r['scope']:<10} skipped: {r['skipped']}")
            continue
        b, t = (r.get("base") or {}).get(metric), (r.get("tuned") or {}).get(metric)
        ret = "-" if r.get("retention") is None else f"{100 * r['retention']:.1f} % ({r['retention_pts']:+.1f})"
        if r.get("retention") is None and r.get("retention_pts") is not None:
            ret = f"({r['retention_pts']:+.1f} pts)"
        lines.append(f"{r['scope']:<10} {num(r['trainable'], ',d'):>12} {num(r['percent'], '.4f'):>9} "
                     f"{format_bytes(r['adapter_bytes']):>9} {num(r['step_s'], '.3f'):>7} {num(r['samples_per_s'], '.1f'):>7} "
                     f"{num(r['peak_mem_gb'], '.2f'):>7} {num(b, '.3f') + ' -> ' + num(t, '.3f'):>24} {ret:>16}"
                     + ("  (stopped)" if r.get("status") == "stopped" else ""))
    return "\n".join(lines)
