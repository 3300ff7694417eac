"""What a comparison writes beside its sweep (medln.compare.sweep): results.csv (flat rows),
TABLE.md (protocol, per-scope spread, reference rows, chosen rates, verdict), figures.html
(and PNGs with kaleido), and the table the CLI prints. Pure formatting, no training here."""

from __future__ import annotations

import csv
import io
import logging
from html import escape as html_escape
from pathlib import Path

from ..data.sample import PHRASINGS
from ..metrics import METRICS
from ..storage import write_text_atomic
from .stats import fmt, versus
from .tuning import at_limit


_CSV_FIRST = ["scope", "seed", "status", "skipped", "lr", "trainable", "total", "percent", "adapter_bytes", "steps_done",
              "step_s", "samples_per_s", "peak_mem_gb", "train_s", "wall_s", "final_loss", "metric",
              "retention", "retention_pts"]


def flat_row(row: dict) -> dict:
    """One CSV line: scalar fields as they are, metric dicts as <prefix>_<metric>."""
    flat = {k: row.get(k) for k in _CSV_FIRST}
    for prefix in ("base", "tuned", "ood_base", "ood_tuned", "blind", "ceiling", "ood_blind", "ood_ceiling"):
        for k, v in (row.get(prefix) or {}).items():
            if not isinstance(v, (dict, list)):
                flat[f"{prefix}_{k}"] = v
    flat["run"] = row.get("run")
    flat["notes"] = " | ".join(row.get("notes") or [])
    return flat


SWEEP_FILES = ("sweep.json", "results.json", "results.csv", "TABLE.md", "figures.html", "runs", "tune")


def check_sweep_out(out: Path, *, resume: bool = False) -> None:
    """A sweep writes into a new or empty --out only: never beside files it did not write
    (its own names included: an earlier sweep's results are not replaced either). `resume`
    (finishing a sweep in its own folder, medln.compare.folder.check_free): the folder must hold
    that sweep's sweep.json and nothing but what a sweep writes; whether its options match is
    the sweep record's check (folder.claim)."""
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"--out {out}: {parent} is a file, not a folder")
            break
    if out.is_symlink():
        raise FileExistsError(f"--out {out}: a link; give the folder itself")
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()) if out.is_dir() else []
    if resume:
        if not (out / "sweep.json").is_file() or (out / "sweep.json").is_symlink():
            raise FileNotFoundError(f"--out {out}: no sweep.json there, so no sweep to resume (a new sweep needs "
                                    "no --resume)")
        foreign = [h for h in held if h.rstrip("/") not in SWEEP_FILES and not _own_extra(h)]
        if foreign:
            raise FileExistsError(f"--out {out} holds files a sweep does not write ({', '.join(h[:60] for h in foreign[:5])}"
                                  f"{', ...' if len(foreign) > 5 else ''}); a resumed sweep writes only beside its own")
        return
    if held:
        earlier = " (an earlier sweep's)" if any(h.rstrip("/") in SWEEP_FILES for h in held) else ""
        raise FileExistsError(f"--out {out} already holds files{earlier} ({', '.join(h[:60] for h in held[:5])}"
                              f"{', ...' if len(held) > 5 else ''}); choose a new or empty folder: a sweep never "
                              "writes beside files, so nothing there is replaced")


def _own_extra(name: str) -> bool:
    """The figures' PNGs and the atomic writes' temporary files (.NAME.*.tmp) are a sweep's own too."""
    return (name.endswith(".png") and "/" not in name) or (name.startswith(".") and name.endswith(".tmp"))


def write_csv(path: Path, rows: list[dict]) -> None:
    flat = [flat_row(r) for r in rows]
    columns = list(dict.fromkeys(k for f in flat for k in f))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in flat)
    write_text_atomic(path, text.getvalue())


def first_per_scope(rows: list[dict]) -> list[dict]:
    """One row per scope (its first seed; a skipped row if none ran): for size and cost plots."""
    seen: dict[str, dict] = {}
    for r in rows:
        if r["scope"] not in seen or (seen[r["scope"]].get("skipped") and not r.get("skipped")):
            seen[r["scope"]] = r
    return list(seen.values())


def build_figures(rows: list[dict], results: dict | None = None) -> dict:
    """Sizes and costs from one row per scope; scores from every seed (the spread)."""
    from .. import plots

    one = first_per_scope(rows)
    figs = {}
    if results and results.get("summary"):
        metric = results.get("metric") or "overall"
        figs["spread_test"] = plots.spread_fig(results["summary"], results.get("references"), metric, "test")
        if any((e.get("ood") or {}).get("overall") for e in results["summary"] if not e.get("skipped")):
            figs["spread_ood"] = plots.spread_fig(results["summary"], results.get("references"), "overall", "ood")
    seeded = len({r.get("seed") for r in rows if not r.get("skipped")}) > 1  # a skipped row has no seed
    figs.update({
        "trainable_params": plots.trainable_params_fig(one),
        "metric_vs_params": plots.metric_vs_params_fig(rows),
        # one bar per row: with several seeds spread_ood shows retention with its spread instead
        **({} if seeded and "spread_ood" in figs else {"retention": plots.retention_fig(rows)}),
        "cost": plots.cost_fig(one),
        "loss": plots.loss_curve_fig({"event": "step", "scope": f"{r['scope']} s{r.get('seed')}" if seeded else r["scope"],
                                      "step": i, "loss": loss}
                                     for r in rows for i, loss in enumerate(r.get("losses") or [], start=1)),
    })
    return figs


def write_figures(out: Path, rows: list[dict], results: dict | None = None) -> list[Path]:
    """figures.html: every figure, plotly.js embedded once (works offline, ~5 MB); plus PNGs
    when kaleido happens to be installed (it is not a dependency)."""
    import importlib.util

    figs = build_figures(rows, results)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%")
             for i, fig in enumerate(figs.values())]
    html = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>MedLN scope comparison</title></head>"
            "<body style=\"font-family: sans-serif; max-width: 1100px; margin: auto\">\n"
            "<h1>MedLN scope comparison</h1>\n"
            + (f"<p>{html_escape(results['verdict'])}</p>\n" if results and results.get("verdict") else "")
            + "\n".join(f"<div id=\"{name}\">{part}</div>"
                                                           for name, part in zip(figs, parts)) + "\n</body></html>\n")
    path = out / "figures.html"
    write_text_atomic(path, html)
    written = [path]
    if importlib.util.find_spec("kaleido") is not None:
        for name, fig in figs.items():
            try:
                fig.write_image(out / f"{name}.png")
                written.append(out / f"{name}.png")
            except Exception as e:  # kaleido needs a browser; PNGs are a bonus, the HTML is the output
                logging.getLogger("medln.compare").warning("no PNG export (%s: %s)", type(e).__name__, e)
                break
    return written


# ----------------------------------------------------------------------------- CLI


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
             f"{metric + ' base->tuned':>24} {'image-blind':>11} {'OOD retention':>16}"]
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
                     f"{num(r['peak_mem_gb'], '.2f'):>7} {num(b, '.3f') + ' -> ' + num(t, '.3f'):>24} "
                     f"{num((r.get('blind') or {}).get(metric), '.3f'):>11} {ret:>16}"
                     + ("  (stopped)" if r.get("status") == "stopped" else ""))
    return "\n".join(lines)




def _vs_best(v: dict | None) -> str:
    if not v:
        return "–"
    if v["is_best"]:
        return "best"
    if v["within_noise"] is None:
        return f"{100 * v['diff']:+.1f} pts (1 seed: noise unknown)"
    return (f"{100 * v['diff']:+.1f} pts, within noise" if v["within_noise"] else f"{100 * v['diff']:+.1f} pts, below")


def _ci(s: dict | None) -> str:
    return f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s and s.get("ci95") else "–"


def _value(metrics: dict | None, key: str) -> str:
    v = (metrics or {}).get(key)
    return METRICS[key].format(v) if key in METRICS else "–" if v is None else f"{v:.3f}"


REFERENCE_LABELS = {"base": "base model (no tuning)", "blind": "image-blind baseline",
                    "ceiling": "probe ceiling (frozen vision features)"}


def _vs_ref(v: dict | None) -> str:
    if v is None:
        return "–"
    pts = f"{100 * v['diff']:+.1f} pts"
    return {"above": f"{pts}, above", "below": f"{pts}, **below**", "within noise": f"{pts}, within noise",
            "unknown": f"{pts} (1 seed)"}[v["side"]]


def phrasing_md(results: dict, metric: str) -> list[str]:
    """TABLE.md's split by question wording: every scope and reference row on the items whose
    wording train holds ("seen") and those it never used ("held-out"); "n/a" for data whose
    records do not say."""
    summary = [e for e in results.get("summary") or [] if not e.get("skipped")]
    refs = results.get("references") or {}
    lines = ["", f"## By question wording (target test {metric})", ""]
    if not any(e.get("by_phrasing") for e in summary):
        return lines + ["n/a: the records do not say which question wordings train holds."]
    ns = next((e.get("n_by_phrasing") for e in summary if e.get("n_by_phrasing")), {})
    kinds = [k for k in PHRASINGS if k in ns]
    lines += ["| row | " + " | ".join(f"{k} wording (n = {ns[k]})" for k in kinds) + " |",
              "|---|" + "---|" * len(kinds)]
    for e in summary:
        lines.append(f"| {e['scope']} | " + " | ".join(fmt((e.get("by_phrasing") or {}).get(k)) for k in kinds) + " |")
    for name, label in REFERENCE_LABELS.items():
        split = ((refs.get(name) or {}).get("test") or {}).get("by_phrasing") or {}
        if split:
            lines.append(f"| *{label}* | " + " | ".join(_value(split.get(k), metric) for k in kinds) + " |")
    return lines


def _edge_note(rec: dict, step: float | None) -> str:
    """Why a chosen rate may not be the optimum: the search stopped while it sat on an edge.
    Records from before `at_limit` existed are judged from their scores and the grid's step."""
    if rec.get("capped"):
        return " (edge, capped)"
    edge = rec.get("at_limit")
    if edge is None and step:
        edge = at_limit(rec.get("chosen"), {float(lr): v for lr, v in (rec.get("scores") or {}).items()}, step)
    return " (edge, the highest rate allowed)" if edge else ""


def _score_or_why(score: float | None, why: str | None) -> str:
    """A tuning rate's validation score, or that its run failed and why (kept short, table-safe)."""
    if score is not None:
        return format(score, ".3f")
    return f"failed ({why[:80].replace('|', '/')})" if why else "failed"


def table_md(results: dict) -> str:
    """TABLE.md: the protocol, the per-scope table with the reference rows, the chosen rates, the verdict."""
    metric = results.get("metric") or "overall"
    summary = results.get("summary") or []
    refs = results.get("references") or {}
    seeds = results.get("seeds") or []
    val = (results.get("splits") or {}).get("validation") or {}
    cfg = results.get("config") or {}
    first = next((e for e in summary if not e.get("skipped")), {})
    # beside the headline metric, the other one-line metrics (medln.metrics, `brief`)
    columns = [m for m in METRICS.values() if m.brief and m.name != metric]
    lines = [f"# Scope comparison: {results.get('backbone')} on {results.get('data')}", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    m = results.get("machine") or {}
    lines += [
        f"Wall time {results.get('wall_s', 0):.0f} s on {m.get('cpus')} CPU cores"
        + (f" ({m['threads']} thread{'s' * (m['threads'] > 1)} per run)" if m.get("threads") else "")
        + (f", {m['gpu']}" if m.get("gpu") else "")
        + f" (torch {m.get('torch')}, transformers {m.get('transformers')}, peft {m.get('peft')}); started {results.get('started')}.",
        "",
        f"Protocol: every scope trains {results.get('steps')} steps (batch {cfg.get('batch_size')}, quant {results.get('quant')}) "
        f"on the `{(results.get('splits') or {}).get('train', {}).get('split')}` split "
        f"({(results.get('splits') or {}).get('train', {}).get('n')} items), once per seed ({', '.join(map(str, seeds))}); "
        f"learning rates: {results.get('lr_source')}; validation: {val.get('text')} (n = {val.get('n')}). "
        f"Scores: target `{results.get('eval_split')}` split (n = {first.get('n_test')}), scored once per run after "
        f"training; retention on `{(results.get('ood') or {}).get('split')}` (n = {first.get('n_ood')}). "
        "Cells are mean ± sd over seeds; 95 % interval of the mean (Student t); \"within noise\": the 95 % interval of "
        "the difference from the best contains 0.",
        "",
        f"| scope | lr | trainable | % | adapter | target {metric} | 95 % interval | vs best | vs image-blind | "
        + "".join(f"{m.short} | " for m in columns) + f"source-style {metric} | vs best (source) | retention | s/step |",
        "|---|---:|---:|---:|---:|---|---|---|---|" + "---|" * len(columns) + "---|---|---|---:|",
    ]
    blind = ((refs.get("blind") or {}).get("test") or {}).get(metric)
    for e in summary:
        if e.get("skipped"):
            lines.append(f"| {e['scope']} | | | | | skipped: {e['skipped']} | | | | " + "| " * len(columns) + "| | | |")
            continue
        t, o = e["test"], e["ood"]
        lines.append(
            f"| {e['scope']} | {e['lr']:g} | {e['trainable']:,} | {e['percent']:.4g} | {format_bytes(e['adapter_bytes'])} "
            f"| **{fmt(t.get(metric))}** | {_ci(t.get(metric))} | {_vs_best(e.get('test_vs_best'))} "
            f"| {_vs_ref(versus(t.get(metric), blind))} "
            + "".join(f"| {fmt(t.get(m.name))} " for m in columns)
            + f"| {fmt(o.get(metric))} | {_vs_best(e.get('ood_vs_best'))} "
            f"| {fmt(e.get('retention'))} | {'–' if e.get('step_s') is None else format(e['step_s'], '.3f')} |")
    for name, label in REFERENCE_LABELS.items():
        r = refs.get(name)
        if not r or not r.get("test"):
            continue
        t, o = r.get("test") or {}, r.get("ood") or {}
        lines.append(f"| *{label}* | | 0 | 0 | | {_value(t, metric)} | | | | "
                     + "".join(f"{_value(t, m.name)} | " for m in columns) + f"{_value(o, metric)} | | | |")
    if refs.get("blind"):
        lines += ["", f"Image-blind baseline: {refs['blind'].get('rule')}; fitted on {refs['blind'].get('fitted_on')}."]
    if refs.get("ceiling"):
        lines += ["", f"Image-aware probe ceiling: {refs['ceiling'].get('rule')}."]
    lines += phrasing_md(results, metric)
    if results.get("missing"):  # collect on a partial sweep folder (medln.compare.jobs)
        missing, planned = results["missing"], len(results.get("scopes") or []) * len(seeds)
        lines += ["", f"Missing cells ({len(missing)} of {planned}), no finished run: "
                  + ", ".join(f"`{m}`" for m in missing) + ". Run them (`compare --resume`, or `--cell`), then collect again."]
    tuning = results.get("tuning")
    if tuning and tuning.get("scopes"):
        g = tuning.get("grid") or {}
        lines += ["", "## Learning rates, chosen on validation", "",
                  f"Grid: {g.get('points')} rates per scope, ×{g.get('step')} apart, centred on the scope's default; "
                  f"{g.get('rule')}; cap {g.get('cap')} rates. Seed {tuning.get('seed')}, validation n = {tuning.get('n')} "
                  "(the test split is not read while tuning).", "",
                  "| scope | validation score per rate | chosen | base (validation) |", "|---|---|---:|---:|"]
        for scope, rec in tuning["scopes"].items():
            why = rec.get("failed") or {}
            scores = ", ".join(f"{float(lr):g}: {_score_or_why(v, why.get(lr))}" for lr, v in (rec.get("scores") or {}).items())
            base = (rec.get("base") or {}).get(rec.get("metric") or "overall")
            chosen = "–" if rec.get("chosen") is None else f"{rec['chosen']:g}" + _edge_note(rec, g.get("step"))
            name = f"{scope} (earlier sweep)" if rec.get("reused") else scope
            lines.append(f"| {name} | {scores} | {chosen} | {'–' if base is None else format(base, '.3f')} |")
        if any(rec.get("reused") for rec in tuning["scopes"].values()):
            lines += ["", f"Rows marked (earlier sweep) were tuned by {tuning['reused_from']} with the same grid, seed "
                          "and validation items; the others here."]
    if results.get("verdict"):
        lines += ["", "## Verdict (generated from the numbers above)", "", results["verdict"]]
    return "\n".join(lines) + "\n"


def write_table(path: Path, results: dict) -> None:
    write_text_atomic(path, table_md(results))
