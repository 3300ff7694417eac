"""A sweep's rows (one per scope x seed) -> per-scope spread, and the verdict in words.

`summarize_rows` gives each scope mean ± sd and a 95 % interval per metric over its seeds,
on the target test split and on the out-of-domain split, and whether it is within noise of
the best scope (medln.compare.stats). `verdict(results)` turns a results.json dict into the text
docs/results.md, the Compare tab and the About tab show: every claim in it is computed from the
numbers beside it, none is written by hand. Pure functions: no torch, no gradio.
"""

from __future__ import annotations

import statistics

from ..metrics import HEADLINE, METRICS
from .stats import difference, fmt, summarize

TEST_METRICS = tuple(m.name for m in METRICS.values() if m.spread)  # summarised over seeds
PAPER_CLAIM = ("the paper (Chen et al., ACM MM 2024) reports that tuning only the LayerNorms matches or beats LoRA, "
               "prompt/prefix tuning and attention/FFN tuning with about 0.005-0.05 % of the parameters, and keeps "
               "more of the model's out-of-domain ability")


def _completed(rows: list[dict], scope: str) -> list[dict]:
    return [r for r in rows if r["scope"] == scope and not r.get("skipped") and r.get("tuned")]


def summarize_rows(rows: list[dict], scopes: list[str], metric: str | None) -> list[dict]:
    """One entry per scope: its rate and size, per-metric summaries, and its place vs the best."""
    metric = metric or "overall"
    out = []
    for scope in scopes:
        rs = _completed(rows, scope)
        if not rs:
            reason = next((r.get("skipped") for r in rows if r["scope"] == scope and r.get("skipped")), None)
            out.append({"scope": scope, "skipped": reason or "no completed run", "n_seeds": 0})
            continue
        first = rs[0]
        entry = {
            "scope": scope, "skipped": None, "lr": first.get("lr"), "trainable": first.get("trainable"),
            "percent": first.get("percent"), "adapter_bytes": first.get("adapter_bytes"),
            "n_seeds": len(rs), "seeds": [r.get("seed") for r in rs],
            "n_test": (first.get("tuned") or {}).get("n"), "n_ood": (first.get("ood_tuned") or {}).get("n"),
            "test": {m: summarize([(r.get("tuned") or {}).get(m) for r in rs]) for m in TEST_METRICS},
            "ood": {m: summarize([(r.get("ood_tuned") or {}).get(m) for r in rs]) for m in TEST_METRICS},
            "retention": summarize([r.get("retention") for r in rs]),
            "step_s": round(statistics.median(v), 6) if (v := [r["step_s"] for r in rs if r.get("step_s")]) else None,
            "peak_mem_gb": max((r["peak_mem_gb"] for r in rs if r.get("peak_mem_gb")), default=None),
        }
        out.append(entry)
    ran = [e for e in out if not e["skipped"]]
    ood_metric = next((m for m in (metric, *HEADLINE) if any(e["ood"].get(m) for e in ran)), None)
    for side, key in (("test", metric), ("ood", ood_metric)):
        scored = [e for e in ran if key and e[side].get(key)]
        if not scored:
            continue
        sign = 1 if key not in METRICS or METRICS[key].higher_is_better else -1  # the metric's direction
        best = max(scored, key=lambda e: sign * e[side][key]["mean"])
        for e in scored:
            d = None if e is best else difference(e[side][key], best[side][key])
            e[f"{side}_vs_best"] = {"metric": key, "best": best["scope"], "is_best": e is best,
                                    "diff": d["diff"] if d else 0.0, "ci95": d["ci95"] if d else None,
                                    # one seed: no spread, so no difference can be told from noise
                                    "within_noise": True if e is best else (d["within_noise"] if d else None)}
    return out


def _pct(p: float | None) -> str:
    return "?" if p is None else f"{p:.3g} %"


def _names(entries: list[dict]) -> str:
    return ", ".join(f"{e['scope']} ({e['trainable']:,} params, {_pct(e['percent'])})" for e in entries) or "none"


def verdict(results: dict) -> str:
    """The comparison in a few sentences, every figure taken from `results`."""
    summary = results.get("summary") or []
    ran = [e for e in summary if not e.get("skipped")]
    if not ran:
        return "No scope completed a run, so there is nothing to compare."
    metric = results.get("metric") or "overall"
    seeds = results.get("seeds") or []
    refs = results.get("references") or {}
    best = next((e for e in ran if (e.get("test_vs_best") or {}).get("is_best")), ran[0])
    n_test = best.get("n_test")
    lr_note = results.get("lr_source") or "default learning rates"
    parts = [f"Target test {metric} (n = {n_test}, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
             f"{results.get('steps')} steps, learning rates {lr_note}): best {best['scope']} "
             f"{fmt(best['test'].get(metric))} (mean ± sd over seeds)."]
    if len(seeds) < 2:
        parts.append("With one seed there is no spread: no difference between scopes can be told from noise.")
    else:
        tied = [e for e in ran if (e.get("test_vs_best") or {}).get("within_noise")]
        below = [e for e in ran if (e.get("test_vs_best") or {}).get("within_noise") is False]
        parts.append(f"Within noise of it (the 95 % interval of the difference contains 0): {_names(tied)}.")
        if below:
            parts.append("Below it: " + ", ".join(f"{e['scope']} ({fmt(e['test'].get(metric))})" for e in below) + ".")
    blind = ((refs.get("blind") or {}).get("test") or {}).get(metric)
    base = ((refs.get("base") or {}).get("test") or {}).get(metric)
    if blind is not None or base is not None:
        ref = []
        if base is not None:
            ref.append(f"the untuned base model scores {base:.3f}")
        if blind is not None:
            ref.append(f"an image-blind baseline (most frequent train answer per question) {blind:.3f}")
        gain = best["test"][metric]["mean"] - blind if blind is not None and best["test"].get(metric) else None
        parts.append("For reference, " + " and ".join(ref) + "" + (
            f": the best scope is {100 * gain:+.1f} points from what the question alone gives." if gain is not None else "."))
    ood_best = next((e for e in ran if (e.get("ood_vs_best") or {}).get("is_best")), None)
    if ood_best is not None:
        om = ood_best["ood_vs_best"]["metric"]
        ood_tied = [e for e in ran if (e.get("ood_vs_best") or {}).get("within_noise")]
        base_ood = ((refs.get("base") or {}).get("ood") or {}).get(om)
        parts.append(f"Retention on the source-style split (n = {ood_best.get('n_ood')}"
                     + (f", base {base_ood:.3f}" if base_ood is not None else "") + f"): best {ood_best['scope']} "
                     f"{fmt(ood_best['ood'].get(om))}" + (f"; within noise of it: {', '.join(e['scope'] for e in ood_tied)}."
                                                         if len(seeds) > 1 else "."))
    ln = next((e for e in ran if e["scope"] == "ln"), None)
    if ln is not None:
        on_test = (ln.get("test_vs_best") or {}).get("within_noise")
        on_ood = (ln.get("ood_vs_best") or {}).get("within_noise")
        here = ("within noise of the best" if on_test else "below the best" if on_test is False else "not separable from the others")
        keeps = ("" if on_ood is None else " and its retention is " + ("within noise of the best" if on_ood else "below the best"))
        parts.append(f"Beside the paper's claim — {PAPER_CLAIM} — here ln, with {ln['trainable']:,} trainable parameters "
                     f"({_pct(ln['percent'])}), is {here} on the target test{keeps}.")
    return " ".join(parts)


def verdict_from_file(path) -> str | None:
    """The verdict of a results.json (recomputed from its numbers); None when absent or unreadable."""
    import json
    from pathlib import Path

    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not results.get("summary"):
        return None
    return verdict(results)


__all__ = ["PAPER_CLAIM", "TEST_METRICS", "summarize_rows", "verdict", "verdict_from_file"]
