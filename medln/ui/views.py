"""Pure functions from job records and run results to what the page shows (HTML, table
rows, markdown). No gradio here, so they are tested as plain functions."""

from __future__ import annotations

import html

from medln import DISCLAIMER
from medln.compare.report import format_bytes as fmt_bytes  # one formatter for CLI and app
from medln.metrics import METRICS

from .errors import web_words

METRIC_HEADERS = ["split", "wording", "metric", "n", "base", "tuned", "change", "image-blind", "probe ceiling"]
MIN_N = 20  # a metric on fewer items is shown greyed, with its n: too few to read much into
FEW_NOTE = f"Rows resting on fewer than {MIN_N} items are greyed: too few to read much into."


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


def status_html(snap: dict | None, position: int = 0, idle: str = IDLE_FINETUNE, wait_s: float | None = None) -> str:
    """The progress panel: a bar with ETA (training and scoring) while a job runs, the place
    in the server's queue while it waits, a result line when it ends."""
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
    if state in ("loading", "training", "evaluating", "stopping") and snap.get("eta_s") is not None:
        covers = "training + scoring" if snap.get("eta_covers_scoring") else "training; scoring not yet timed here"
        pieces.append(f"ETA {fmt_duration(snap['eta_s'])} ({covers})")
    pieces.append(f"elapsed {fmt_duration(snap.get('elapsed_s'))}")
    css = {"failed": "medln-failed", "done": "medln-done", "stopped": "medln-stopped",
           "cancelled": "medln-stopped"}.get(state, "medln-running")
    phase = html.escape(snap.get("phase") or state)
    if state == "queued":
        wait = f", about {fmt_duration(wait_s)} to wait" if wait_s is not None else ""
        place = f"place {position} in the queue" if position else "next in the queue"
        phase = (f"waiting: {place}{wait}. One training worker serves every user of this server, "
                 "one job at a time.")
    head = f'<div class="medln-status-head"><span class="medln-state">{html.escape(state)}</span> {phase}</div>'
    bar = (f'<div class="medln-bar" role="progressbar" aria-valuenow="{int(frac * 100)}" aria-valuemin="0" '
           f'aria-valuemax="100"><div class="medln-bar-fill" style="width:{frac * 100:.1f}%"></div></div>')
    body = f'<div class="medln-status-line">{" · ".join(pieces)}</div>'
    err = f'<div class="medln-error">{html.escape(web_words(snap["error"]))}</div>' if snap.get("error") else ""
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in snap.get("notes") or [])
    notes = f'<ul class="medln-notes">{notes}</ul>' if notes else ""
    return f'<div class="medln-status {css}"><div class="medln-title">{title}</div>{head}{bar}{body}{err}{notes}</div>'


PAPER_CLAIMS = [
    ("accuracy", "Training only the LayerNorm parameters (about 0.005–0.05 % of the weights) matches or beats "
                 "LoRA, attention-only, MLP-only and full fine-tuning."),
    ("retention", "It keeps more of the model's zero-shot / out-of-domain ability: it forgets less."),
]


def measured_claims(rows: list[dict]) -> dict[str, str]:
    """What a comparison's rows say about each of the paper's claims, in one sentence each
    (empty when the rows cannot say: no `ln` row, or no other scope to compare with)."""
    ran = [r for r in rows if not r.get("skipped") and r.get("tuned")]
    ln = next((r for r in ran if r["scope"] == "ln"), None)
    others = [r for r in ran if r["scope"] != "ln"]
    if ln is None or not others:
        return {}
    metric = ln.get("metric") or "overall"
    out = {}
    value = lambda r: (r.get("tuned") or {}).get(metric)  # noqa: E731
    n = (ln.get("tuned") or {}).get(METRICS[metric].n_key if metric in METRICS else "n")
    scored = [r for r in others if value(r) is not None]
    if value(ln) is not None and scored:
        best = max(scored, key=value)
        gap = 100 * (value(ln) - value(best))
        verb = "above" if gap > 0 else "below" if gap < 0 else "level with"
        verdict = ""
        if metric == "overall" and n:  # a proportion: its standard error says what a gap means
            se = 100 * (value(best) * (1 - value(best)) / n) ** 0.5
            verdict = (" That is within two standard errors (±{:.1f} points): consistent with the claim.".format(2 * se)
                       if abs(gap) <= 2 * se else " This run supports the claim." if gap > 0 else
                       " This run does not support the claim.")
        out["accuracy"] = (f"ln reached {metric} {value(ln):.3f} training {ln.get('trainable', 0):,} parameters "
                           f"({ln.get('percent', 0):.3g} %); the best other scope, {best['scope']} "
                           f"({best.get('trainable', 0):,} parameters), {value(best):.3f}: ln is "
                           f"{abs(gap):.1f} points {verb} it{f' (n = {n})' if n else ''}.{verdict}")
    kept = [r for r in ran if r.get("retention") is not None]
    if any(r["scope"] == "ln" for r in kept) and len(kept) > 1:
        order = sorted(kept, key=lambda r: r["retention"], reverse=True)
        rank = next(i for i, r in enumerate(order) if r["scope"] == "ln") + 1
        best = order[0]
        lead = ("ln kept the most" if rank == 1 else
                f"ln kept the least of {len(order)} scopes" if rank == len(order) else
                f"ln ranks {rank} of {len(order)}")
        out["retention"] = (f"Out-of-domain retention: {lead}: {100 * ln['retention']:.1f} % of the base score"
                            + ("" if rank == 1 else f" (best: {best['scope']}, {100 * best['retention']:.1f} %)")
                            + ". " + ("This run supports the claim." if rank == 1 else
                                      "This run does not support the claim."))
    return out


def claims_html(rows: list[dict] | None, *, where: str = "this run", verdict: str | None = None,
                verdicts: list[tuple[str, str]] | None = None) -> str:
    """The paper's claims beside what `where` measured, never the claim as a fact. `verdict`:
    the comparison's own generated verdict (medln.compare.summary), shown instead of ours when given;
    `verdicts`: several comparisons' (what, verdict), one item each."""
    measured = measured_claims(rows or [])
    left = "".join(f"<li>{html.escape(text)}</li>" for _, text in PAPER_CLAIMS)
    if verdicts:
        right = "".join(f"<li><b>{html.escape(what)}</b>: {html.escape(text)}</li>" for what, text in verdicts)
    elif verdict:
        right = f"<li>{html.escape(verdict)}</li>"
    elif measured:
        right = "".join(f"<li>{html.escape(measured.get(k, 'not measured here'))}</li>" for k, _ in PAPER_CLAIMS)
    else:
        right = ("<li>Nothing yet: run a comparison that includes <code>ln</code> and at least one other scope "
                 "(with an out-of-domain split for retention).</li>")
    return (f'<div class="medln-claims"><div><h4>The paper claims (Chen et al. 2024)</h4><ul>{left}</ul></div>'
            f'<div><h4>What {html.escape(where)} measured</h4><ul>{right}</ul></div></div>')


def estimate_html(est, *, what: str = "this fine-tune", n_items: int | None = None) -> str:
    """The line under Start: the whole job's expected time and where the figure comes from."""
    if est is None:
        return (f'<div class="medln-estimate">No recorded speed for {what} on this server yet: the first run '
                "measures it, and the ETA appears after its first steps.</div>")
    parts = [f"training {fmt_duration(est.train_s)}"]
    if est.load_s:
        parts.insert(0, f"loading {fmt_duration(est.load_s)}")
    if est.score_s is not None:
        items = f" of {n_items:,} answers" if n_items else ""
        parts.append(f"scoring {fmt_duration(est.score_s)}{items}")
    else:
        parts.append("scoring: not yet timed")
    return (f'<div class="medln-estimate">Estimated time for {what}: <b>~{fmt_duration(est.total_s)}</b> '
            f"({' + '.join(parts)}); {html.escape(est.source)}.</div>")


def metric_n(metrics: dict | None, n_key: str) -> int | None:
    n = (metrics or {}).get(n_key)
    return int(n) if isinstance(n, (int, float)) else None


def metric_rows(result: dict | None) -> list[list]:
    """[split, questions, metric, n, base, tuned, change, image-blind, probe ceiling] for every
    split, metric and kind of question phrasing scored (medln.references.score_table): the
    blind row and the ceiling on the same items as base and tuned."""
    from medln.references import score_table

    out = []
    for r in score_table(result or {}):
        m = METRICS[r["metric"]]
        b, t = r["base"], r["tuned"]
        change = "–" if t is None or b is None else f"{t - b:+.3f}"
        out.append([r["split"], PHRASING_WORDS[r["phrasing"]], m.label, "–" if r["n"] is None else r["n"],
                    m.format(b), m.format(t), change, m.format(r["blind"]), m.format(r["ceiling"])])
    return out


PHRASING_WORDS = {"all": "all", "seen": "seen", "held-out": "held-out"}  # of the questions, in train or not


def references_note(result: dict | None) -> str:
    """Under the metrics table: what the two reference columns are, and the phrasing split."""
    from medln.references import NO_PHRASING, has_phrasing

    if not result or not result.get("tuned"):
        return ""
    about = result.get("references") or {}
    parts = [f"<b>image-blind</b>: {html.escape(about.get('blind', 'not computed for this run'))}"
             + (f"; fitted on {html.escape(about['fitted_on'])}" if about.get("fitted_on") else ""),
             f"<b>probe ceiling</b>: {html.escape(about.get('ceiling', 'not computed for this run'))}",
             "split by question wording (seen in train / held out): "
             + ("rows marked seen / held-out wording" if has_phrasing(result) else html.escape(NO_PHRASING))]
    return '<div class="medln-table-note">' + "<br>".join(parts) + "</div>"


def table_html(headers: list[str], rows: list[list], *, few: list[bool] | None = None, elem_class: str = "",
               note: str = "") -> str:
    """A plain HTML table (every row shown, no inner scroll; it scrolls sideways on a narrow
    screen instead of breaking numbers). Rows flagged in `few` are greyed."""
    if not rows:
        return ""
    few = few or [False] * len(rows)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    greyed = f' class="medln-few" title="fewer than {MIN_N} items"'
    body = "".join(f"<tr{greyed if f else ''}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row, f in zip(rows, few))
    foot = f'<div class="medln-table-note">{note}</div>' if note and any(few) else ""
    return (f'<div class="medln-table-wrap {elem_class}"><table class="medln-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{foot}")


def metric_table_html(result: dict | None) -> str:
    """The base-vs-tuned table with n per row and the reference columns; rows on fewer than
    MIN_N items greyed."""
    rows = metric_rows(result)
    few = [isinstance(r[3], int) and r[3] < MIN_N for r in rows]
    return (table_html(METRIC_HEADERS, rows, few=few, elem_class="medln-metrics", note=FEW_NOTE)
            + (references_note(result) if rows else ""))


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
            out.append([mark + r["scope"], "–", "–", "cannot run: " + web_words(r["skipped"])])
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
        return f"⚠️ **{selected}** cannot run here: {web_words(row['skipped'])}"
    dead = f"; {row['dead']:,} norm parameters get no gradient and are left out" if row.get("dead") else ""
    q = " (4-bit)" if quant == "4bit" else ""
    return (f"**{selected}** trains **{row['trainable']:,}** of {row['total']:,} parameters "
            f"(**{row['percent']:.4g} %**) of `{backbone}`{q}{dead}.")
