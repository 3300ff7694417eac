"""Plotly figures for scope comparisons and training curves: builders only, no I/O.

Every builder takes the rows medln.compare produces (one dict per scope; a scope that could
not run carries `skipped`: reason) and returns a `plotly.graph_objects.Figure`. The CLI writes
them to HTML, the app shows them as they are. A scope keeps its colour in every figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .methods import ABSOLUTE_PARAMS, PARAMS, SCOPES
from .metrics import HEADLINE
from .point_labels import label_positions

# Each scope's colour is on its registry line (medln.methods.registry).
SCOPE_COLOURS: dict[str, str] = {s.name: s.colour for s in SCOPES if s.colour}
_FALLBACK = ["#7c3aed", "#b45309", "#0f766e", "#be123c", "#4d7c0f"]
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=60, b=50), height=420)



def scope_colour(scope: str) -> str:
    if scope in SCOPE_COLOURS:
        return SCOPE_COLOURS[scope]
    return _FALLBACK[sum(map(ord, scope)) % len(_FALLBACK)]  # stable across runs, unlike hash()


def ran(rows: Iterable[dict]) -> list[dict]:
    """The rows of scopes that trained (not skipped)."""
    return [r for r in rows if not r.get("skipped")]


def metric_value(metrics: dict | None, metric: str) -> float | None:
    return (metrics or {}).get(metric)


def pick_metric(rows: list[dict], metric: str = "overall") -> str:
    """`metric` if some trained row has it, else the first headline metric one has (medln.metrics)."""
    for name in (metric, *HEADLINE):
        if any(metric_value(r.get("tuned"), name) is not None for r in ran(rows)):
            return name
    return metric


def pareto_front(rows: list[dict], metric: str = "overall") -> list[dict]:
    """Rows not dominated in (fewer trainable parameters, higher tuned metric), by parameters.

    A row is dominated when another has no more parameters and no lower metric, and is
    strictly better in one of the two. Equal points do not dominate each other.
    """
    pts = [(r, r.get("trainable"), metric_value(r.get("tuned"), metric)) for r in ran(rows)]
    pts = [(r, p, m) for r, p, m in pts if p is not None and m is not None]
    front = [
        (r, p, m) for r, p, m in pts
        if not any(q <= p and n >= m and (q < p or n > m) for _, q, n in pts)
    ]
    return [r for r, _, _ in sorted(front, key=lambda t: (t[1], -t[2]))]


def _skipped_note(fig: go.Figure, rows: list[dict], extra: list[str] = ()) -> None:
    """Scopes that did not run are named under the title, with their reason, not left out silently."""
    lines = [f"{r['scope']}: skipped ({_short(r['skipped'])})" for r in rows if r.get("skipped")] + list(extra)
    if lines:
        fig.update_layout(title_subtitle=dict(text="<br>".join(lines), font=dict(size=11, color="#6b7280")),
                          margin_t=_LAYOUT["margin"]["t"] + 16 * len(lines))


def _short(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def trainable_params_fig(rows: list[dict]) -> go.Figure:
    """Trainable parameters per scope, log scale, labelled with the % of the base model."""
    rs = [r for r in ran(rows) if r.get("trainable")]
    fig = go.Figure(go.Bar(
        x=[r["scope"] for r in rs],
        y=[r["trainable"] for r in rs],
        marker_color=[scope_colour(r["scope"]) for r in rs],
        text=[f"{r['trainable']:,}<br>{r['percent']:.3g} %" for r in rs],
        textposition="outside",
        cliponaxis=False,
        hovertemplate="%{x}: %{y:,} trainable parameters<extra></extra>",
    ))
    fig.update_layout(title="Trainable parameters per scope", yaxis_type="log",
                      yaxis_title="trainable parameters (log)", xaxis_title="scope", **_LAYOUT)
    _skipped_note(fig, rows)
    return fig


REFERENCE_LINES = (("base", "base", "#9ca3af", "dash"), ("blind", "image-blind", "#dc2626", "dash"),
                   ("ceiling", "probe ceiling", "#059669", "dot"))


def reference_lines(fig: go.Figure, values: dict) -> None:
    """The reference rows as horizontal lines: the base model, the image-blind row (the
    question alone) and the probe ceiling (the frozen vision features), where known."""
    for name, label, colour, dash in REFERENCE_LINES:
        if values.get(name) is not None:
            fig.add_hline(y=values[name], line=dict(color=colour, dash=dash),
                          annotation_text=f"{label} {values[name]:.3f}", annotation_position="bottom right")


def metric_vs_params_fig(rows: list[dict], metric: str = "overall") -> go.Figure:
    """Tuned metric against trainable parameters (log x); the Pareto front is drawn as a
    line through ringed markers; the base model, the image-blind row and the probe ceiling
    (the same items, from the rows) are horizontal lines."""
    metric = pick_metric(rows, metric)
    fig = go.Figure()
    points = [r for r in ran(rows) if metric_value(r.get("tuned"), metric) is not None and r.get("trainable")]
    refs = {name: next((metric_value(r.get(name), metric) for r in ran(rows)
                        if metric_value(r.get(name), metric) is not None), None) for name, *_ in REFERENCE_LINES}
    ys = [metric_value(r["tuned"], metric) for r in points] + [v for v in refs.values() if v is not None]
    positions = label_positions([(r["trainable"], metric_value(r["tuned"], metric)) for r in points],
                                [r["scope"] for r in points], y_range=(min(ys), max(ys)) if ys else None)
    for r, position in zip(points, positions):
        value = metric_value(r.get("tuned"), metric)
        fig.add_trace(go.Scatter(
            x=[r["trainable"]], y=[value], mode="markers+text", name=r["scope"], text=[r["scope"]],
            textposition=position, marker=dict(size=13, color=scope_colour(r["scope"])),
            hovertemplate=f"{r['scope']}: %{{x:,}} parameters, {metric} %{{y:.3f}}<extra></extra>",
        ))
    front = pareto_front(rows, metric)
    if front:
        fig.add_trace(go.Scatter(
            x=[r["trainable"] for r in front], y=[metric_value(r["tuned"], metric) for r in front],
            mode="lines+markers", name="Pareto front", line=dict(color="#111827", dash="dot", width=1.5),
            marker=dict(size=22, symbol="circle-open", color="#111827", line=dict(width=2)),
            hoverinfo="skip",
        ))
    reference_lines(fig, refs)
    fig.update_layout(title=f"Tuned {metric} vs trainable parameters (Pareto front ringed)",
                      xaxis_type="log", xaxis_title="trainable parameters (log)", yaxis_title=f"tuned {metric}",
                      **_LAYOUT)
    _skipped_note(fig, rows)
    return fig


def retention_fig(rows: list[dict]) -> go.Figure:
    """Out-of-domain retention per scope: tuned OOD score as % of the base model's (100 % =
    nothing forgotten), with the change in points in the label."""
    rs = [r for r in ran(rows) if r.get("retention") is not None]
    fig = go.Figure(go.Bar(
        x=[r["scope"] for r in rs],
        y=[100 * r["retention"] for r in rs],
        marker_color=[scope_colour(r["scope"]) for r in rs],
        text=[f"{100 * r['retention']:.1f} %<br>{r.get('retention_pts') or 0:+.1f} pts" for r in rs],
        textposition="outside",
        cliponaxis=False,
        hovertemplate="%{x}: %{y:.1f} % of the base model's out-of-domain score<extra></extra>",
    ))
    fig.add_hline(y=100, line=dict(color="#9ca3af", dash="dash"))
    missing = [r["scope"] for r in ran(rows) if r.get("retention") is None]
    metric = next((r.get("metric") for r in rs if r.get("metric")), "score")
    fig.update_layout(title=f"Out-of-domain retention ({metric}: tuned / base)", yaxis_title="retention (%)",
                      xaxis_title="scope", **_LAYOUT)
    _skipped_note(fig, rows, [f"{', '.join(missing)}: no retention (no out-of-domain split, or a base score of 0)"]
                  if missing else [])
    return fig


def cost_fig(rows: list[dict]) -> go.Figure:
    """Seconds per training step and peak memory per scope, side by side."""
    rs = ran(rows)
    # Short subplot titles: at phone width two long ones run into each other.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("s / step", "peak GB"), horizontal_spacing=0.14)
    for col, key, fmt in ((1, "step_s", "{:.3g} s"), (2, "peak_mem_gb", "{:.3g} GB")):
        vals = [(r["scope"], r.get(key)) for r in rs if r.get(key) is not None]
        fig.add_trace(go.Bar(
            x=[s for s, _ in vals], y=[v for _, v in vals], marker_color=[scope_colour(s) for s, _ in vals],
            text=[fmt.format(v) for _, v in vals], textposition="outside", cliponaxis=False, showlegend=False,
            hovertemplate="%{x}: %{y:.4g}<extra></extra>",
        ), row=1, col=col)
    fig.update_layout(title="Cost per scope (median seconds per step; peak memory)", **_LAYOUT)
    _skipped_note(fig, rows)
    return fig


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing), so the
    first points are not pulled towards 0. `weight` defaults to one that spans ~5 % of the run."""
    if weight is None:
        weight = min(0.95, max(0.0, 1 - 1 / max(1.0, len(values) / 20)))
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i) if weight else v)
    return out


def _faint(colour: str | None) -> str | None:
    if not colour or not colour.startswith("#") or len(colour) != 7:
        return colour
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.28)"


def loss_curve_fig(records: Iterable[dict], *, group: str = "scope") -> go.Figure:
    """Training loss against step: the raw per-step losses as faint points, a smoothed line
    over them; one colour per value of `group` in the step records (several runs at once:
    tag each record with e.g. its scope). Non-step records are ignored."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("event") == "step" and r.get("loss") is not None:
            series.setdefault(str(r.get(group, "loss")), []).append((r["step"], r["loss"]))
    fig = go.Figure()
    for name, pts in series.items():
        colour = scope_colour(name) if name in SCOPE_COLOURS else "#1d4ed8"
        steps, losses = [s for s, _ in pts], [l for _, l in pts]
        fig.add_trace(go.Scatter(x=steps, y=losses, mode="markers", name=f"{name} (each step)", legendgroup=name,
                                 showlegend=False, marker=dict(size=4, color=_faint(colour)),
                                 hovertemplate=f"{name} step %{{x}}: loss %{{y:.4f}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=steps, y=smooth(losses), mode="lines", name=name, legendgroup=name,
                                 line=dict(color=colour, width=2.2),
                                 hovertemplate=f"{name} step %{{x}}: smoothed %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title="Training loss (points: each step; line: smoothed)", xaxis_title="step",
                      yaxis_title="loss", **_LAYOUT)
    return fig


# ------------------------------------------------------------------ where the weights moved (medln.inspect)

_PART_ORDER = ("vision", "connector", "llm", "other")
_PART_TITLE = {"vision": "vision tower", "connector": "connector", "llm": "language model", "other": "other"}
_BIAS = ABSOLUTE_PARAMS  # absolute change; the rest relative
_PARAM_MARK = {name: label for name, (label, _) in PARAMS.items()}


def _grid(rows: list[dict]) -> tuple[list[str], list[str], list[list[float | None]], list[list[str]]]:
    """Rows -> (x labels: layers then '·' for modules outside a layer, y labels: leaf + param,
    z, hover text)."""
    layers = sorted({r["layer"] for r in rows if r["layer"] is not None})
    xs = [f"L{i}" for i in layers] + (["no layer"] if any(r["layer"] is None for r in rows) else [])
    ys = sorted({f"{r['leaf']} {_PARAM_MARK.get(r['param'], r['param'])}" for r in rows})
    z = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for r in rows:
        y = ys.index(f"{r['leaf']} {_PARAM_MARK.get(r['param'], r['param'])}")
        x = xs.index(f"L{r['layer']}" if r["layer"] is not None else "no layer")
        bias = r["param"] in _BIAS
        z[y][x] = r["delta_norm"] if bias else r["rel"]
        text[y][x] = (f"{r['module']} {r['param']}<br>‖Δ‖ {r['delta_norm']:.3g}"
                      + (f"<br>‖Δ‖/‖base‖ {r['rel']:.3g}" if r["rel"] is not None else ""))
    return xs, ys, z, text


def movement_fig(result: dict) -> go.Figure:
    """Heatmaps of how far each trained tensor moved, one row per part (vision / connector /
    language model), columns = layers: left the relative change (‖Δγ‖/‖γ‖, ‖ΔW‖/‖W‖, ‖l−1‖/‖1‖),
    right the absolute bias change ‖Δβ‖. Input: medln.inspect's summary (inspect.json)."""
    rows = result.get("rows", [])
    parts = [p for p in _PART_ORDER if any(r["part"] == p for r in rows)]
    cols = 2 if any(r["param"] in _BIAS for r in rows) else 1
    has = {(p, b): any(r["part"] == p and (r["param"] in _BIAS) == b for r in rows) for p in parts for b in (False, True)}
    titles = [f"{_PART_TITLE[p]}: {t}" if has[(p, b)] else ""
              for p in parts for t, b in (("relative change ‖Δ‖/‖base‖", False), ("bias change ‖Δβ‖", True))[:cols]]
    n_rows = [max(1, *(len({(r["leaf"], r["param"]) for r in rows if r["part"] == p and (r["param"] in _BIAS) == b})
                       for b in (False, True))) for p in parts]
    top = {b: max([r["delta_norm"] if b else (r["rel"] or 0.0) for r in rows if (r["param"] in _BIAS) == b] or [1.0])
           for b in (False, True)}
    fig = make_subplots(rows=max(1, len(parts)), cols=cols, subplot_titles=titles or ["nothing trained"],
                        row_heights=n_rows or None, horizontal_spacing=0.22, vertical_spacing=0.16)
    for i, part in enumerate(parts, start=1):
        for col, biases in ((1, False), (2, True))[:cols]:
            sel = [r for r in rows if r["part"] == part and (r["param"] in _BIAS) == biases]
            if not sel:
                continue
            xs, ys, z, text = _grid(sel)
            fig.add_trace(go.Heatmap(x=xs, y=ys, z=z, text=text, hovertemplate="%{text}<extra></extra>",
                                     coloraxis="coloraxis2" if biases else "coloraxis", xgap=1, ygap=1),
                          row=i, col=col)
    bar = dict(orientation="h", len=0.4 if cols == 2 else 0.8, thickness=12, y=-0.06, yanchor="top")
    fig.update_layout(
        title=f"Where the weights moved: {result.get('scope', '?')} · {Path(str(result.get('run', ''))).name}",
        coloraxis=dict(colorscale="Blues", cmin=0, cmax=top[False] or 1.0, colorbar=dict(title="‖Δ‖/‖base‖", x=0.2 if cols == 2 else 0.5, **bar)),
        coloraxis2=dict(colorscale="Oranges", cmin=0, cmax=top[True] or 1.0, colorbar=dict(title="‖Δβ‖", x=0.8, **bar)),
        template="plotly_white", margin=dict(l=60, r=30, t=90, b=90),
        height=220 + 34 * sum(n_rows) + 70 * len(parts),
    )
    return fig


def profile_fig(result: dict) -> go.Figure:
    """Per language-model layer relative change of this run, its other seeds and other scopes
    (e.g. LoRA's ‖ΔW‖/‖W‖), each scaled to its own maximum: the shape, not the size, is compared
    (Spearman ρ of the unscaled profiles in the legend)."""
    fig = go.Figure()
    rhos = {c["run"]: c.get("spearman_llm_layers") for c in result.get("compare", [])}
    series = [(f"this run ({result.get('scope')}, seed {result.get('seed')})", result.get("layers", {}).get("llm", {}),
               result.get("scope"), "solid")]
    for c in result.get("compare", []):
        layers = result.get("others", {}).get(c["run"], {}).get("llm", {})
        rho = rhos.get(c["run"])
        series.append((f"{c['scope']} seed {c['seed']} (ρ {rho if rho is not None else 'n/a'})", layers,
                       c["scope"], "dot" if c["same_scope"] else "dash"))
    for name, layers, scope, dash in series:
        if not layers:
            continue
        top = max(layers.values()) or 1.0
        keys = sorted(layers, key=int)
        fig.add_trace(go.Scatter(x=[int(k) for k in keys], y=[layers[k] / top for k in keys], mode="lines+markers",
                                 name=name, line=dict(color=scope_colour(scope or ""), dash=dash)))
    fig.update_layout(title="Language-model layers: relative change, each profile scaled to its maximum",
                      xaxis=dict(title="layer", dtick=1), yaxis_title="relative change / max", **_LAYOUT)
    return fig


__all__ = [
    "SCOPE_COLOURS", "cost_fig", "loss_curve_fig", "metric_vs_params_fig", "movement_fig", "pareto_front",
    "pick_metric", "profile_fig", "retention_fig", "scope_colour", "smooth", "spread_fig", "trainable_params_fig",
]


def spread_fig(summary: list[dict], references: dict | None = None, metric: str = "overall",
               side: str = "test") -> go.Figure:
    """Every seed's score as a dot, the mean with its 95 % interval as a bar, per scope;
    the base model, the image-blind baseline and the probe ceiling as lines (`side`: test or ood)."""
    fig = go.Figure()
    entries = [e for e in summary if not e.get("skipped") and (e.get(side) or {}).get(metric)]
    for e in entries:
        s = e[side][metric]
        lo, hi = s["ci95"] if s.get("ci95") else (s["mean"], s["mean"])
        colour = scope_colour(e["scope"])
        fig.add_trace(go.Scatter(
            x=[e["scope"]] * len(s["values"]), y=s["values"], mode="markers", name=e["scope"], showlegend=False,
            marker=dict(size=8, color=colour, opacity=0.55),
            hovertemplate=f"{e['scope']}: %{{y:.3f}} (one seed)<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[e["scope"]], y=[s["mean"]], mode="markers", name=e["scope"], showlegend=False,
            marker=dict(size=15, symbol="line-ew-open", color=colour, line=dict(width=3)),
            error_y=dict(type="data", symmetric=False, array=[hi - s["mean"]], arrayminus=[s["mean"] - lo],
                         color=colour, thickness=2, width=10),
            hovertemplate=f"{e['scope']}: mean %{{y:.3f}}, 95 % interval {lo:.3f}–{hi:.3f} (n = {s['n']})<extra></extra>"))
    reference_lines(fig, {name: (((references or {}).get(name) or {}).get(side) or {}).get(metric)
                          for name, *_ in REFERENCE_LINES})
    where = "target test" if side == "test" else "source-style (retention)"
    fig.update_layout(title=f"{where} {metric} per scope: every seed (dots), mean and 95 % interval (bars)",
                      xaxis_title="scope", yaxis_title=metric, **_LAYOUT)
    return fig
