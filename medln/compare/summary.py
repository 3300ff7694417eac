"""A sweep's rows (one per scope x seed) -> per-scope spread, and the verdict in words.

`summarize_rows` gives each scope mean ± sd and a 95 % interval per metric over its seeds,
on the target test split and on the out-of-domain split, and whether it is within noise of
the best scope (medln.compare.stats). `verdict(results)` turns a results.json dict into the text
docs/results.md, the Compare tab and the About tab show: every claim in it is computed from the
numbers beside it, none is written by hand. Pure functions: no torch, no gradio.
"""

from __future__ import annotations

import statistics

from ..data.sample import PHRASINGS
from ..metrics import HEADLINE, METRICS
from .stats import difference, fmt, summarize, versus

TEST_METRICS = tuple(m.name for m in METRICS.values() if m.spread)  # summarised over seeds
PAPER_CLAIM = ("the paper (Chen et al., ACM MM 2024) reports that tuning only the LayerNorms matches or beats LoRA, "
               "prompt/prefix tuning and attention/FFN tuning with about 0.005-0.05 % of the parameters, and keeps "
               "more of the model's out-of-domain ability")


def _completed(rows: list[dict], scope: str) -> list[dict]:
    return [r for r in rows if r["scope"] == scope and not r.get("skipped") and r.get("tuned")]


def summarize_rows(rows: list[dict], scopes: list[str], metric: str | None, references: dict | None = None) -> list[dict]:
    """One entry per scope: its rate and size, per-metric summaries, its place vs the best, and
    (with `references`) vs the image-blind row and the probe ceiling on the same items; the
    headline metric also per kind of question phrasing (`by_phrasing`), where the records say it."""
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
            "by_phrasing": {k: v for k in PHRASINGS if (v := summarize(
                [(((r.get("tuned") or {}).get("by_phrasing") or {}).get(k) or {}).get(metric) for r in rs]))},
            "n_by_phrasing": {k: n for k in PHRASINGS if (n := (((first.get("tuned") or {}).get("by_phrasing") or {})
                                                                .get(k) or {}).get("n")) is not None},
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
    refs = references or {}
    for e in ran:
        for name in ("blind", "ceiling"):
            value = (((refs.get(name) or {}).get("test")) or {}).get(metric)
            e[f"test_vs_{name}"] = versus(e["test"].get(metric), value)
    return out


def _pct(p: float | None) -> str:
    return "?" if p is None else f"{p:.3g} %"


def _names(entries: list[dict], flag=lambda e: "") -> str:
    return ", ".join(f"{e['scope']} ({e['trainable']:,} params, {_pct(e['percent'])}{flag(e)})" for e in entries) or "none"


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
             f"{fmt(best['test'].get(metric))}" + (" (mean ± sd over seeds)." if len(seeds) > 1 else ".")]
    if len(seeds) < 2:
        parts.append("With one seed there is no spread: no difference between scopes can be told from noise.")
    else:
        tied = [e for e in ran if (e.get("test_vs_best") or {}).get("within_noise")]
        below = [e for e in ran if (e.get("test_vs_best") or {}).get("within_noise") is False]
        blind = _ref(refs, "blind", metric)

        def flag(e):  # "within noise of the best" must not hide "below the image-blind row"
            v = versus(e["test"].get(metric), blind)
            return "; BELOW the image-blind row" if v and v["side"] == "below" else ""

        parts.append(f"Within noise of it (the 95 % interval of the difference contains 0): {_names(tied, flag)}.")
        if below:
            parts.append("Below it: " + ", ".join(f"{e['scope']} ({fmt(e['test'].get(metric))})" for e in below) + ".")
    parts += reference_sentences(ran, refs, metric, n_test)
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
        vs_blind = versus(ln["test"].get(metric), _ref(refs, "blind", metric))
        blind_words = "" if vs_blind is None else "; against the image-blind row it is " + _side_words(vs_blind)
        parts.append(f"Beside the paper's claim — {PAPER_CLAIM} — here ln, with {ln['trainable']:,} trainable parameters "
                     f"({_pct(ln['percent'])}), is {here} on the target test{keeps}{blind_words}.")
    return " ".join(parts)


def _ref(refs: dict, name: str, metric: str, side: str = "test") -> float | None:
    return (((refs.get(name) or {}).get(side)) or {}).get(metric)


def _side_words(v: dict) -> str:
    pts = f"{100 * v['diff']:+.1f} points"
    return {"above": f"above it ({pts}, the 95 % interval clear of it)",
            "below": f"BELOW it ({pts}, the 95 % interval below it)",
            "within noise": f"within noise of it ({pts})",
            "unknown": f"{pts} from it (one seed: noise unknown)"}[v["side"]]


def reference_sentences(ran: list[dict], refs: dict, metric: str, n_test) -> list[str]:
    """Every scope against the image-blind row (and the probe ceiling, and the base model), so
    that "within noise of the best" never hides "below what the question alone gives"; then
    the held-out question wordings, where a model that only matched train wordings shows."""
    blind, ceiling, base = (_ref(refs, k, metric) for k in ("blind", "ceiling", "base"))
    out = []
    if base is not None:
        out.append(f"The untuned base model scores {base:.3f}.")
    if blind is not None:
        groups: dict[str, list[str]] = {}
        for e in ran:
            v = versus(e["test"].get(metric), blind)
            if v is not None:  # one seed: which side it fell on, said as such, not hidden as "unknown"
                side = v["side"] if v["side"] != "unknown" else "under" if v["diff"] < 0 else "over"
                groups.setdefault(side, []).append(f"{e['scope']} ({fmt(e['test'].get(metric))}, "
                                                   f"{100 * v['diff']:+.1f} pts)")
        words = {"above": "above it (95 % interval clear of it)", "within noise": "within noise of it",
                 "below": "BELOW it (95 % interval below it)", "over": "over it on one seed (noise unknown)",
                 "under": "UNDER it on one seed (noise unknown)"}
        listed = "; ".join(f"{words[k]}: {', '.join(groups[k])}" for k in words if groups.get(k))
        out.append(f"Against the image-blind row (most frequent train answer per question, no image; {blind:.3f} on "
                   f"the same {n_test} items), every scope: {listed}.")
        if groups.get("below"):
            out.append(f"{len(groups['below'])} of {len(ran)} scopes score below a model that never looks at the image.")
        if groups.get("under"):
            out.append(f"{len(groups['under'])} of {len(ran)} scopes scored under a model that never looks at the image "
                       "on this one seed; more seeds tell whether that is noise.")
    if ceiling is not None:
        top = max((e["test"][metric]["mean"] for e in ran if e["test"].get(metric)), default=None)
        gap = "" if top is None else f": the best scope is {100 * (top - ceiling):+.1f} points from it"
        out.append(f"An image-aware probe ceiling (linear classifiers on the frozen vision features, fitted on train) "
                   f"scores {ceiling:.3f}{gap}.")
    for kind in ("held-out",):
        b = (((refs.get("blind") or {}).get("test") or {}).get("by_phrasing") or {}).get(kind, {}).get(metric)
        scored = [e for e in ran if (e.get("by_phrasing") or {}).get(kind)]
        if scored:
            n = next((e["n_by_phrasing"].get(kind) for e in scored if (e.get("n_by_phrasing") or {}).get(kind)), "?")
            scopes = ", ".join(f"{e['scope']} {fmt(e['by_phrasing'][kind])}" for e in scored)
            out.append(f"On questions whose wording train never used (n = {n}): {scopes}"
                       + (f"; image-blind {b:.3f}." if b is not None else "."))
    return out


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


__all__ = ["PAPER_CLAIM", "TEST_METRICS", "reference_sentences", "summarize_rows", "verdict", "verdict_from_file"]
