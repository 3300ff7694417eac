"""Spread over seeds: mean, sample sd, a 95 % interval, and whether two scopes differ.

A comparison trained once per scope reads meaning into gaps that a second seed would
reverse. Each metric is summarised over seeds as mean ± sd with a Student-t 95 % interval
for the mean; two scopes are "within noise" when the 95 % interval of the difference of
their means contains 0 (Welch's standard error, and the smaller of the two sample sizes
minus one as degrees of freedom — conservative for the few seeds a CPU allows).
"""

from __future__ import annotations

import math
import statistics

# Two-sided 95 % Student-t quantiles t_{0.975, df}; beyond 30 the normal 1.96 is close enough.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t975(df: int) -> float:
    """t_{0.975, df}: the tabulated value at or below df (larger, so conservative)."""
    if df < 1:
        raise ValueError("a 95 % interval needs at least 2 values")
    if df > 30:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def summarize(values: list[float | None]) -> dict | None:
    """{"mean", "sd", "n", "ci95": [lo, hi] | None, "values"} over the non-missing values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals)) if sd is not None else None
    r = lambda x: round(x, 6)  # noqa: E731
    return {"mean": r(mean), "sd": None if sd is None else r(sd), "n": len(vals),
            "ci95": None if half is None else [r(mean - half), r(mean + half)], "values": [r(v) for v in vals]}


def difference(a: dict | None, b: dict | None) -> dict | None:
    """a - b of two summaries: {"diff", "ci95": [lo, hi], "within_noise"}; None if either lacks a spread."""
    if not a or not b or a.get("sd") is None or b.get("sd") is None:
        return None
    d = a["mean"] - b["mean"]
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    half = t975(min(a["n"], b["n"]) - 1) * se
    return {"diff": round(d, 6), "ci95": [round(d - half, 6), round(d + half, 6)],
            "within_noise": bool(d - half <= 0 <= d + half)}


def versus(a: dict | None, value: float | None) -> dict | None:
    """A scope's summary against a fixed reference value (the image-blind row, the probe
    ceiling: deterministic, no spread of their own): {"diff": mean - value, "ci95" of the
    mean minus value, "side": "above" | "below" | "within noise" | "unknown" (one seed)}."""
    if not a or value is None:
        return None
    d = a["mean"] - value
    if not a.get("ci95"):
        side = "unknown"
    else:
        lo, hi = a["ci95"][0] - value, a["ci95"][1] - value
        side = "above" if lo > 0 else "below" if hi < 0 else "within noise"
    return {"diff": round(d, 6), "ci95": [round(a["ci95"][0] - value, 6), round(a["ci95"][1] - value, 6)]
            if a.get("ci95") else None, "side": side}


def fmt(s: dict | None, digits: int = 3) -> str:
    """'0.712 ± 0.021' (mean ± sd), or the single value, or '–'."""
    if not s:
        return "–"
    if s.get("sd") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


__all__ = ["difference", "fmt", "summarize", "t975", "versus"]
