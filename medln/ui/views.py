"""Pure functions from job records and run results to what the page shows (HTML, table
rows, markdown). No gradio here, so they are tested as plain functions."""

from __future__ import annotations

import html

from medln import DISCLAIMER
from medln.compare_report import format_bytes as fmt_bytes  # one formatter for CLI and app

# Metrics shown in the base-vs-tuned table, in this order, with their display names.
METRICS = [
    ("overall", "VQA overall accuracy"),
    ("closed_accuracy", "closed (yes/no) accuracy"),
    ("open_recall", "open recall"),
    ("open_f1", "open token F1"),
    ("bleu_4", "report BLEU-4"),
    ("rouge_l", "report ROUGE-L"),
    ("meteor", "report METEOR"),
    ("cider", "report CIDEr-D"),
]
METRIC_HEADERS = ["split", "metric", "base", "tuned", "change"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def notice_html(text: str, *, error: bool = False) -> str:
    """A one-line notice; error text is escaped (it may quote user input), others are trusted HTML."""
    if error:
        return f'<div class="medln-notice medln-notice-error">⚠️ {html.escape(text)}</div>'
    return f'<div class="medln-notice">{text}</div>'


def disclaimer_html() -> str:
    return f'<div class="medln-disclaimer">⚠️ {html.escape(DISCLAIMER)}</div>'


IDLE_FINETUNE = ("No fine-tune yet in this browser session. Choose the settings on the left and press "
                 "<b>Start fine-tune</b>.")
IDLE_COMPARE = "No comparison yet in this browser session. Choose the scopes and press <b>Run comparison</b>."


def status_html(snap: dict | None, position: int = 0, idle: str = IDLE_FINETUNE) -> str:
    """The progress panel: a bar with ETA while a job runs, a result line when it ends."""
    if not snap:
        return f'<div class="medln-status medln-idle">{idle}</div>'
    state, steps, step = snap["state"], max(1, snap["steps"]), snap["step"]
    frac = min(1.0, step / steps)
    if state in ("done", "stopped"):
        frac = 1.0 if state == "done" else frac
    title = html.escape(snap.get("title") or "")
    pieces = [f"step {step} / {snap['steps']}"]
    if snap.get("loss") is not None:
        pieces.append(f"loss {snap['loss']:.4f}")
    if state == "training" and snap.get("eta_s") is not None:
        pieces.append(f"ETA {fmt_duration(snap['eta_s'])} (training)")
    pieces.append(f"elapsed {fmt_duration(snap.get('elapsed_s'))}")
    css = {"failed": "medln-failed", "done": "medln-done", "stopped": "medln-stopped",
           "cancelled": "medln-stopped"}.get(state, "medln-running")
    phase = html.escape(snap.get("phase") or state)
    if state == "queued":
        phase = f"waiting for a free slot (place {position} in the queue)" if position else "waiting for a free slot"
    head = f'<div class="medln-status-head"><span class="medln-state">{html.escape(state)}</span> {phase}</div>'
    bar = (f'<div class="medln-bar" role="progressbar" aria-valuenow="{int(frac * 100)}" aria-valuemin="0" '
           f'aria-valuemax="100"><div class="medln-bar-fill" style="width:{frac * 100:.1f}%"></div></div>')
    body = f'<div class="medln-status-line">{" · ".join(pieces)}</div>'
    err = f'<div class="medln-error">{html.escape(snap["error"])}</div>' if snap.get("error") else ""
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in snap.get("notes") or [])
    notes = f'<ul class="medln-notes">{notes}</ul>' if notes else ""
    return f'<div class="medln-status {css}"><div class="medln-title">{title}</div>{head}{bar}{body}{err}{notes}</div>'


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def metric_rows(result: dict | None) -> list[list]:
    """[split, metric, base, tuned, change] for every split scored and every metric present."""
    if not result:
        return []
    rows = []
    base, tuned = result.get("base") or {}, result.get("tuned") or {}
    for split in tuned:
        b, t = base.get(split, {}), tuned.get(split, {})
        for key, name in METRICS:
            if t.get(key) is None and b.get(key) is None:
                continue
            change = None if t.get(key) is None or b.get(key) is None else t[key] - b[key]
            rows.append([split, name, _num(b.get(key)), _num(t.get(key)),
                         "–" if change is None else f"{change:+.3f}"])
    return rows


def result_markdown(snap: dict | None) -> str:
    """One paragraph under the metrics: what was trained, how long, how big the adapter is."""
    if not snap or not snap.get("result"):
        return ""
    r, start = snap["result"], snap.get("start") or {}
    parts = [f"**{'Stopped early' if r.get('status') == 'stopped' else 'Done'}**: trained "
             f"{r.get('trainable', 0):,} of {r.get('total', 0):,} parameters ({r.get('percent', 0):.4g} %) "
             f"for {r.get('steps_done', 0)} steps in {fmt_duration(r.get('train_s'))}",
             f"adapter {fmt_bytes(r.get('adapter_bytes'))}"]
    if start.get("scope"):
        parts.append(f"scope `{start['scope']}`, lr {start.get('lr', 0):g}")
    if snap.get("run_id"):
        parts.append(f"run `{snap['run_id']}`")
    return " · ".join(parts) + ". Try it in the **Ask** tab."


def param_table_rows(rows: list[dict], selected: str, scopes: dict) -> list[list]:
    """Rows for the per-scope parameter table (from medln.accounting.param_rows)."""
    out = []
    for r in rows:
        scope = scopes.get(r["scope"])
        mark = "▶ " if r["scope"] == selected else ""
        if r.get("skipped"):
            out.append([mark + r["scope"], "–", "–", "cannot run: " + r["skipped"]])
            continue
        out.append([mark + r["scope"], f"{r['trainable']:,}", f"{r['percent']:.4g} %",
                    short_quant_note(scope.quant_4bit) if scope else ""])
    return out


def short_quant_note(note: str) -> str:
    """A scope's 4-bit behaviour in a few words (the full sentence is shown for the chosen scope)."""
    if note.startswith("refused"):
        return "cannot run"
    if "unquantized" in note:
        return "trains (kept unquantized)"
    return "trains"


def scope_summary(rows: list[dict], selected: str, backbone: str, quant: str) -> str:
    row = next((r for r in rows if r["scope"] == selected), None)
    if row is None:
        return ""
    if row.get("skipped"):
        return f"⚠️ **{selected}** cannot run here: {row['skipped']}"
    dead = f"; {row['dead']:,} norm parameters get no gradient and are left out" if row.get("dead") else ""
    q = " (4-bit)" if quant == "4bit" else ""
    return (f"**{selected}** trains **{row['trainable']:,}** of {row['total']:,} parameters "
            f"(**{row['percent']:.4g} %**) of `{backbone}`{q}{dead}.")
