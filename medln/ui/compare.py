"""Tab 3, Compare scopes: every chosen scope trained with the same budget on the same data
(medln.compare), as a background job like a fine-tune; the table fills in scope by scope and
the plots show trainable parameters (log scale), metric vs parameters, out-of-domain
retention and time / memory per scope.
"""

from __future__ import annotations

import dataclasses
import html
import os
import time
from pathlib import Path

from medln.compare.options import CompareConfig
from medln.config import TrainConfig
from medln.data.sample import PHRASINGS
from medln.metrics import METRICS
from medln.methods import SCOPES, default_batch

from . import views
from .context import AppContext, CompareTab, Handler
from .downloads import served_copy
from .errors import UserError, private_errors, quiet, user_message, web_words
from .finetune import DATA_SOURCES, backbone_choices, train_records
from .form import build_config, config_fields, follow_batch
from .jobs import Job
from .uploads import DataChoice, prepare_dataset

TABLE_HEADERS = ["scope", "trainable", "%", "base → tuned", "n", "vs image-blind", "seen / held-out wording",
                 "retention", "n (ood)", "s/step", "GB", "adapter", "status"]
SHORT_TITLES = ("Trainable parameters (log scale)", "Tuned {metric} vs trainable parameters", "Out-of-domain retention",
                "", "Training loss per scope (lines: smoothed)")  # cost: its two subplot titles say it
COMPARE_STEPS = 40  # the same budget for every scope; a short sweep by default


# ------------------------------------------------------------------ plain handlers

def scope_on_gpu(cfg: TrainConfig, out, **kwargs):
    """One scope of a sweep as one GPU call (train_records): on ZeroGPU no single call has to
    fit the whole comparison into its duration."""
    return train_records(cfg.to_dict(), str(out), **kwargs)


def compare_records(options: dict, stop=None):
    """medln.compare.compare, folded into records a Job understands. The sweep itself (tables,
    files, figures) runs here; each scope's training is a GPU call (scope_on_gpu).
    `options`: a CompareConfig as a dict (plain data: it may cross to a GPU worker)."""
    from medln.compare import compare

    # The app's sweeps run here, each scope one GPU call in this process: the local executor,
    # always (a Ray cluster, a resume or a tracker are the CLI's), whatever the dict says.
    cfg = dataclasses.replace(CompareConfig.from_dict(options), executor="local", ray_address="", resume=False,
                              report_to="none")
    scopes = [s for s in cfg.scopes.split(",") if s]
    index, of, scope, seed = 0, len(scopes) * cfg.seeds, scopes[0] if scopes else "", cfg.seed

    def where() -> str:  # with seeds, one run per scope and seed
        return f"run {index + 1}/{of} · {scope} · seed {seed}" if cfg.seeds > 1 else f"scope {index + 1}/{of} · {scope}"

    for rec in compare(cfg, stop=stop, run_scope=scope_on_gpu):
        event = rec.get("event")
        if event == "scope_start":
            index, of, scope, seed = rec["index"], rec["of"], rec["scope"], rec.get("seed", cfg.seed)
            yield {"event": "phase", "state": "loading", "phase": f"{where()}: loading"}
        elif event == "run_start":
            yield {"event": "phase", "state": "training", "phase": f"{where()}: training"}
        elif event == "stopped":
            yield {"event": "phase", "state": "evaluating", "phase": f"{where()}: stopped; scoring what it trained"}
        elif event in ("scope_done", "scope_skipped"):
            yield {"event": "row", "row": rec["row"]}
        elif event == "done":
            yield {"event": "done", "status": rec["status"], "rows": rec["rows"], "metric": rec["metric"],
                   "csv": rec["csv"], "results": rec["results"], "wall_s": rec["wall_s"], "verdict": rec.get("verdict")}
        elif event == "step":
            yield {**rec, "global_step": index * cfg.steps + rec["step"]}
            if rec["step"] == cfg.steps:
                yield {"event": "phase", "state": "evaluating", "phase": f"{where()}: scoring base and tuned"}


def estimate_for(ctx: AppContext, cfg: TrainConfig, scopes: list[str]):
    """(Estimate or None, answers scored) for a comparison: the sum over its scopes; `full`
    under 4-bit is skipped and costs nothing. None when a scope has no recorded speed."""
    from medln.methods import get_scope

    from . import eta

    n_items = eta.scored_items(cfg.data, [cfg.eval_split, cfg.ood_split], cfg.eval_limit)
    per_scope, missing = [], []
    for name in scopes:
        if cfg.quant == "4bit" and get_scope(name).refuses_4bit:
            continue
        speed = ctx.jobs.speed.lookup(cfg.backbone, name, cfg.quant, cfg.batch_size) if ctx.jobs.speed else None
        est = eta.estimate(speed, cfg.steps, n_items // 2 if n_items else None)  # base is scored once
        (per_scope.append(est) if est is not None else missing.append(name))
    if not per_scope:
        return None, n_items
    total = eta.Estimate(sum(e.train_s for e in per_scope), None, sum(e.load_s for e in per_scope),
                         per_scope[0].source)
    if all(e.score_s is not None for e in per_scope):
        total.score_s = sum(e.score_s for e in per_scope)
    if missing:  # no figure for these scopes: count them like the average of the others
        k = len(missing) / len(per_scope)
        total.train_s, total.load_s = total.train_s * (1 + k), total.load_s * (1 + k)
        total.score_s = None if total.score_s is None else total.score_s * (1 + k)
        total.source += f"; {', '.join(missing)} not timed yet, counted like the average scope"
    return total, n_items


def estimate_view(ctx: AppContext, backbone, scopes, quant4, steps, batch_size, data_source, eval_limit,
                  seeds=1) -> str:
    if not scopes:
        return ""
    try:
        data = (DataChoice("sample", "test", "source-test") if data_source == "sample"
                else DataChoice("upload", "test", ""))
        cfg = build_config(config_fields(backbone, "ln", quant4, steps, None, batch_size, eval_limit, 0), data,
                           ctx.settings)
    except Exception:
        return ""
    seeds = max(1, int(seeds or 1))
    runs = list(scopes) * seeds  # every scope once per seed
    est, n_items = estimate_for(ctx, cfg, runs)
    what = f"this comparison ({len(scopes)} scopes{f' × {seeds} seeds' if seeds > 1 else ''})"
    return views.estimate_html(est, what=what, n_items=n_items // 2 * len(runs) if n_items else None)


def start(ctx: AppContext, session: str, backbone, scopes, quant4, steps, batch_size, data_source, data_file,
          hub_id, eval_limit, seeds=1) -> Job:
    if not scopes:
        raise UserError("choose at least one scope to compare")
    # checked (once) before an upload is touched, so a bad number fails fast
    cfg = build_config(config_fields(backbone, "ln", quant4, steps, None, batch_size, eval_limit, 0), DataChoice("sample"),
                       ctx.settings)
    data = prepare_dataset(data_source, data_file, hub_id, ctx.settings.session_dir(session) / "uploads",
                           max_upload_bytes=ctx.settings.max_upload_bytes,
                           max_unzip_bytes=ctx.settings.max_unzip_bytes)
    cfg = dataclasses.replace(cfg, data=data.spec, eval_split=data.eval_split, ood_split=data.ood_split)
    out = ctx.settings.session_dir(session) / "compare" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
    scopes = list(scopes)

    # seeds: CompareConfig's own bounds, as the CLI's --seeds (2 or more give mean ± sd and "below" vs noise)
    options = CompareConfig.from_dict({**cfg.to_dict(), "scopes": ",".join(scopes), "out": str(out),
                                       "seeds": int(seeds or 1)}).validate()

    def run(job: Job):
        records = compare_records(options.to_dict(), stop=job.stop)
        return private_errors(records, ctx.settings.session_dir(session))

    quant = " · 4-bit" if cfg.quant == "4bit" else " · full precision"
    title = (f"{len(scopes)} scopes on {Path(cfg.backbone).name}{quant} · {cfg.steps} steps each"
             f"{f' · {options.seeds} seeds' if options.seeds > 1 else ''} · {data.label or cfg.data}")
    est, _ = estimate_for(ctx, cfg, scopes * options.seeds)
    job = ctx.jobs.submit(session, "compare", title, out, cfg.steps * len(scopes) * options.seeds, run,
                          config=cfg.to_dict(), estimate=est)
    job.notes.extend(data.notes)
    if ctx.jobs.inline:  # ZeroGPU: run it here, in the request (medln.ui.gpu)
        ctx.jobs.run_here(job)
    return job


def _phrasing_cell(metrics: dict | None, metric: str) -> str:
    """"0.61 (n 112) / 0.39 (n 142)": the score on seen and on held-out question wordings."""
    split = (metrics or {}).get("by_phrasing") or {}
    if not split:
        return "n/a"
    return " / ".join("–" if (m := split.get(k)) is None or m.get(metric) is None else f"{m[metric]:.3f} (n {m.get('n')})"
                      for k in PHRASINGS)


def table_rows(rows: list[dict]) -> list[list]:
    """One row per scope; every metric with the number of items it rests on; its distance from
    the image-blind row on the same items; then the reference rows (image-blind, probe ceiling)."""
    out = []
    for r in rows:
        if r.get("skipped"):
            out.append([r["scope"], *["–"] * (len(TABLE_HEADERS) - 2), "skipped: " + web_words(r["skipped"])])
            continue
        metric = r.get("metric") or "overall"
        n_key = METRICS[metric].n_key if metric in METRICS else "n"
        tuned, ood = r.get("tuned") or {}, r.get("ood_tuned") or {}
        b, t = (r.get("base") or {}).get(metric), tuned.get(metric)
        blind = (r.get("blind") or {}).get(metric)
        change = "–" if b is None or t is None else f"{b:.3f} → {t:.3f} ({metric})"
        vs_blind = "–" if blind is None or t is None else f"{100 * (t - blind):+.1f} pts"
        ret = "–" if r.get("retention") is None else f"{100 * r['retention']:.1f} %"
        n_ood = ood.get(n_key) if r.get("retention") is not None else None
        out.append([r["scope"], f"{r['trainable']:,}" if r.get("trainable") else "–",
                    f"{r['percent']:.4g} %" if r.get("percent") is not None else "–", change,
                    "–" if tuned.get(n_key) is None else tuned[n_key], vs_blind, _phrasing_cell(tuned, metric), ret,
                    "–" if n_ood is None else n_ood,
                    "–" if r.get("step_s") is None else f"{r['step_s']:.3g}",
                    "–" if r.get("peak_mem_gb") is None else f"{r['peak_mem_gb']:.2f}",
                    views.fmt_bytes(r.get("adapter_bytes")), r.get("status") or ""])
    return out + reference_rows(rows)


def reference_rows(rows: list[dict]) -> list[list]:
    """The image-blind row and the probe ceiling, from the first row that carries them (every
    run of a comparison scores them on the same items: medln.references)."""
    done = next((r for r in rows if not r.get("skipped") and r.get("blind")), None)
    if done is None:
        return []
    metric = done.get("metric") or "overall"
    n_key = METRICS[metric].n_key if metric in METRICS else "n"
    out = []
    for name, label in (("blind", "image-blind (question only)"), ("ceiling", "probe ceiling (frozen vision)")):
        m = done.get(name) or {}
        if m.get(metric) is None:
            continue
        out.append([label, "0", "0 %", f"{m[metric]:.3f} ({metric})", m.get(n_key, "–"),
                    "±0.0 pts" if name == "blind" else f"{100 * (m[metric] - done['blind'][metric]):+.1f} pts",
                    _phrasing_cell(m, metric), "–", "–", "–", "–", "–", "reference"])
    return out


def table_html(rows: list[dict]) -> str:
    """The results table; a scope whose metric rests on fewer than MIN_N items is greyed."""
    cells = table_rows(rows)
    few = [any(isinstance(c[TABLE_HEADERS.index(h)], int) and c[TABLE_HEADERS.index(h)] < views.MIN_N
               for h in ("n", "n (ood)")) for c in cells]
    return views.table_html(TABLE_HEADERS, cells, few=few, elem_class="medln-compare", note=views.FEW_NOTE)


def figures(rows: list[dict], records: list[dict]) -> tuple:
    from medln import plots

    # the reasons a scope was skipped, in the page's words (no CLI flags)
    rows = [dict(r, skipped=web_words(r["skipped"])) if r.get("skipped") else r for r in rows]
    figs = (plots.trainable_params_fig(rows), plots.metric_vs_params_fig(rows), plots.retention_fig(rows),
            plots.cost_fig(rows), plots.loss_curve_fig(records))
    metric = plots.pick_metric(rows) if rows else "overall"
    for f, title in zip(figs, SHORT_TITLES):  # half-width panels: shorter titles than the HTML report's
        f.update_layout(height=360, margin=dict(l=55, r=20, t=50, b=45), title=title.format(metric=metric))
    figs[1].update_layout(showlegend=False)  # every point carries its scope's name
    return figs


def param_figure(backbone: str, quant4: bool, settings=None):
    """Before any run: the trainable-parameter plot straight from config.json (with the app's
    `settings`, only of a backbone a visitor may name: Settings.app_backbone)."""
    from medln import plots
    from medln.accounting import param_rows

    backbone = settings.app_backbone(backbone) if settings is not None else backbone
    rows = param_rows(backbone, quant="4bit" if quant4 else "none")
    fig = plots.trainable_params_fig(rows)
    fig.update_layout(height=360, margin=dict(l=55, r=20, t=50, b=45), title=SHORT_TITLES[0])
    return fig


# ------------------------------------------------------------------ layout and wiring

def build(ctx: AppContext) -> CompareTab:
    import gradio as gr

    s = ctx.settings
    gr.Markdown("Train every chosen scope with **the same budget** (steps, batch, data, seed; each scope at its own "
                "default learning rate) and compare what they cost and what they buy. Retention is measured on a "
                "held-out, out-of-domain split.", elem_classes="medln-hint")
    claims = gr.HTML(views.claims_html(None), elem_id="cmp-claims")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            backbone = gr.Dropdown(backbone_choices(s.default_backbone), value=s.default_backbone,
                                   allow_custom_value=True, label="Backbone", elem_id="cmp-backbone")
            scopes = gr.CheckboxGroup([sc.name for sc in SCOPES], value=[sc.name for sc in SCOPES], label="Scopes",
                                      elem_id="cmp-scopes")
            quant4 = gr.Checkbox(False, label="4-bit (NF4): 'full' is then skipped and says why", elem_id="cmp-quant")
            with gr.Row():
                steps = gr.Number(value=COMPARE_STEPS, precision=0, label="Steps per scope", elem_id="cmp-steps")
                batch = gr.Number(value=default_batch(s.default_backbone), precision=0, label="Batch size",
                                  elem_id="cmp-batch")
                eval_limit = gr.Number(value=s.eval_limit, precision=0, label="Samples scored per split",
                                       elem_id="cmp-eval-limit")
                seeds = gr.Number(value=1, precision=0, label="Seeds (2+: spread, noise)", elem_id="cmp-seeds")
            data_source = gr.Radio(DATA_SOURCES, value="sample", label="Dataset")
            data_file = gr.File(label="Dataset file (.zip or .jsonl)", file_types=[".zip", ".jsonl"], visible=False)
            hub_id = gr.Textbox(label="Hugging Face dataset id", visible=False)
            with gr.Row():
                start_btn = gr.Button("Run comparison", variant="primary", elem_id="cmp-start")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
            estimate = gr.HTML(elem_id="cmp-estimate")
            notice = gr.HTML(elem_id="cmp-notice")
            status = gr.HTML(views.status_html(None, idle=views.IDLE_COMPARE), elem_id="cmp-status")
            download = gr.DownloadButton("Download results (.csv)", visible=False)
        with gr.Column(scale=8, min_width=300):  # fits a 390 px phone; wider screens put it beside the form
            table = gr.HTML(elem_id="cmp-table")  # every row, n per metric, sideways scroll when narrow
            with gr.Row(elem_classes="medln-plot-row"):  # one plot per row on a narrow screen (CSS)
                params_plot = gr.Plot(show_label=False, elem_id="cmp-params")
                metric_plot = gr.Plot(show_label=False, elem_id="cmp-metric", visible=False)
            with gr.Row(elem_classes="medln-plot-row"):
                retention_plot = gr.Plot(show_label=False, elem_id="cmp-retention", visible=False)
                cost_plot = gr.Plot(show_label=False, elem_id="cmp-cost", visible=False)
            loss_plot = gr.Plot(show_label=False, elem_id="cmp-loss", visible=False)
            move_scope = gr.Dropdown([sc.name for sc in SCOPES], value="ln", elem_id="cmp-move-scope",
                                     label="Where the weights moved: scope (after its run)")
            move_plot = gr.Plot(show_label=False, elem_id="cmp-movement", visible=False)
    seen = gr.State(None)

    def on_params(backbone_v, quant_v):
        try:
            return param_figure(backbone_v or "", bool(quant_v), s)
        except Exception:
            return None

    def on_data(src):
        return gr.update(visible=src == "upload"), gr.update(visible=src == "hub")

    def on_start(session, *values):
        try:
            job = start(ctx, session, *values)
        except Exception as e:
            return (views.notice_html(web_words(user_message(e)), error=True), gr.skip(), gr.skip())
        if ctx.jobs.inline:  # ZeroGPU: it ran in this request and has finished; the poll drew the buttons
            return views.notice_html(f"{html.escape(job.title)}: {job.state}."), gr.skip(), gr.skip()
        return (views.notice_html(f"Started: {html.escape(job.title)}. You may reload the page."),
                gr.update(interactive=False), gr.update(interactive=True))

    def on_stop(session):
        job = ctx.jobs.latest_of(session, "compare") if session else None
        if job is None or not job.active:
            return '<div class="medln-notice">Nothing is running.</div>'
        ctx.jobs.stop(session, job.id)
        return '<div class="medln-notice">Stopping: the current scope stops within a step and is scored; the rest are skipped.</div>'

    @quiet(lambda: (gr.skip(),) * 13)
    def on_poll(session, last):
        job = ctx.jobs.latest_of(session, "compare") if session else None
        key = (job.id, job.version) if job else None
        if job is None or (key == last and job.state != "queued"):
            return (gr.skip(),) * 13
        snap = job.snapshot()
        rows = (job.result or {}).get("rows") or job.rows
        figs = [gr.skip()] * 5
        if rows or job.records:
            made = figures(rows, job.records)
            figs = [gr.update(value=f, visible=True) for f in made] if rows else figs[:4] + [
                gr.update(value=made[4], visible=True)]
        csv = (job.result or {}).get("csv")
        pos, wait = ctx.jobs.queue_info(job)
        return (views.status_html(snap, pos, idle=views.IDLE_COMPARE, wait_s=wait), table_html(rows), *figs,
                gr.update(value=served_copy(csv), visible=True) if csv and Path(csv).exists() else gr.update(visible=False),
                gr.update(interactive=not job.active), gr.update(interactive=job.active), notice_for(job), key,
                views.claims_html(rows, verdict=(job.result or {}).get("verdict")) if rows else gr.skip())

    def on_estimate(*values):
        return estimate_view(ctx, *values)

    def on_move(session, scope_v):
        from .finetune import movement_update

        job = ctx.jobs.latest_of(session, "compare") if session else None
        return movement_update(Path(job.out) / "runs" / scope_v if job else None)

    move_scope.change(on_move, [ctx.session, move_scope], move_plot, api_visibility="private", queue=False)
    status.change(on_move, [ctx.session, move_scope], move_plot, api_visibility="private", queue=False)
    for comp in (backbone, quant4):
        comp.change(on_params, [backbone, quant4], params_plot, api_visibility="private", concurrency_limit=4)
    follow_batch(backbone, batch, s.default_backbone)
    data_source.change(on_data, data_source, [data_file, hub_id], api_visibility="private", queue=False)
    start_btn.click(on_start, [ctx.session, backbone, scopes, quant4, steps, batch, data_source, data_file, hub_id,
                               eval_limit, seeds], [notice, start_btn, stop_btn], api_visibility="private",
                    concurrency_limit=4)
    stop_btn.click(on_stop, ctx.session, notice, api_visibility="private", queue=False)
    est_inputs = [backbone, scopes, quant4, steps, batch, data_source, eval_limit, seeds]
    for comp in est_inputs:
        comp.change(on_estimate, est_inputs, estimate, api_visibility="private", queue=False)
    return CompareTab(Handler(on_poll, [ctx.session, seen], [status, table, params_plot, metric_plot, retention_plot,
                                                             cost_plot, loss_plot, download, start_btn, stop_btn,
                                                             notice, seen, claims]),
                      Handler(on_params, [backbone, quant4], [params_plot]), Handler(on_estimate, est_inputs, [estimate]))


def notice_for(job: Job):
    import gradio as gr

    if job.state == "failed" and job.error:
        return views.notice_html(web_words(job.error), error=True)
    if not job.active and (job.result or {}).get("verdict"):  # generated from the measured rows (medln.compare.summary)
        return views.notice_html(job.result["verdict"])
    return gr.skip() if job.active else ""  # a finished job's "Started ..." notice goes

