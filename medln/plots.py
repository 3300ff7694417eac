"""Plotly figures for scope comparisons and training curves: builders only, no I/O.

Every builder takes the rows medln.compare produces (one dict per scope; a scope that could
not run carries `skipped`: reason) and returns a `plotly.graph_objects.Figure`. The CLI writes
them to HTML, the app shows them as they are. A scope keeps its colour in every figure.
"""

from __future__ import annotations

from typing import Iterable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# The LayerNorm scopes in blues (the paper's method), the baselines in other hues.
SCOPE_COLOURS: dict[str, str] = {
    "ln": "#1d4ed8",
    "ln-vision": "#60a5fa",
    "ln-llm": "#0e7490",
    "attn": "#d97706",
    "ffn": "#16a34a",
    "lora": "#db2777",
    "full": "#4b5563",
}
_FALLBACK = ["#7c3aed", "#b45309", "#0f766e", "#be123c", "#4d7c0f"]
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=60, b=50), height=420)

from .evaluate import HEADLINE_METRICS as FALLBACK_METRICS  # tried in order when the asked-for one is missing


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
    """`metric` if some trained row has it, else the first of FALLBACK_METRICS that one has."""
    for name in (metric, *FALLBACK_METRICS):
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


def metric_vs_params_fig(rows: list[dict], metric: str = "overall") -> go.Figure:
    """Tuned metric against trainable parameters (log x); the Pareto front is drawn as a
    line through ringed markers; the base model's score is a dashed line."""
    metric = pick_metric(rows, metric)
    fig = go.Figure()
    for r in ran(rows):
        value = metric_value(r.get("tuned"), metric)
        if value is None or not r.get("trainable"):
            continue
        fig.add_trace(go.Scatter(
            x=[r["trainable"]], y=[value], mode="markers+text", name=r["scope"], text=[r["scope"]],
            textposition="top center", marker=dict(size=13, color=scope_colour(r["scope"])),
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
    base = next((metric_value(r.get("base"), metric) for r in ran(rows)
                 if metric_value(r.get("base"), metric) is not None), None)
    if base is not None:
        fig.add_hline(y=base, line=dict(color="#9ca3af", dash="dash"), annotation_text=f"base {base:.3f}",
                      annotation_position="bottom right")
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
    fig = make_subplots(rows=1, cols=2, subplot_titles=("seconds per step (median)", "peak memory (GB)"))
    for col, key, fmt in ((1, "step_s", "{:.3g} s"), (2, "peak_mem_gb", "{:.3g} GB")):
        vals = [(r["scope"], r.get(key)) for r in rs if r.get(key) is not None]
        fig.add_trace(go.Bar(
            x=[s for s, _ in vals], y=[v for _, v in vals], marker_color=[scope_colour(s) for s, _ in vals],
            text=[fmt.format(v) for _, v in vals], textposition="outside", cliponaxis=False, showlegend=False,
            hovertemplate="%{x}: %{y:.4g}<extra></extra>",
        ), row=1, col=col)
    fig.update_layout(title="Cost per scope", **_LAYOUT)
    _skipped_note(fig, rows)
    return fig


def loss_curve_fig(records: Iterable[dict], *, group: str = "scope") -> go.Figure:
    """Training loss against step; one line per value of `group` in the step records
    (several runs at once: tag each record with e.g. its scope). Non-step records are ignored."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("event") == "step" and r.get("loss") is not None:
            series.setdefault(str(r.get(group, "loss")), []).append((r["step"], r["loss"]))
    fig = go.Figure()
    for name, pts in series.items():
        fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[l for _, l in pts], mode="lines+markers", name=name,
                                 line=dict(color=scope_colour(name) if name in SCOPE_COLOURS else None),
                                 marker=dict(size=4)))
    fig.update_layout(title="Training loss", xaxis_title="step", yaxis_title="loss", **_LAYOUT)
    return fig


__all__ = [
    "SCOPE_COLOURS", "cost_fig", "loss_curve_fig", "metric_vs_params_fig", "pareto_front", "pick_metric",
    "retention_fig", "scope_colour", "trainable_params_fig",
]
