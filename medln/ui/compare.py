"""Tab 3, Compare scopes: every chosen scope trained with the same budget on the same data
(medln.compare), as a background job like a fine-tune; the table fills in scope by scope and
the plots show trainable parameters (log scale), metric vs parameters, out-of-domain
retention and time / memory per scope.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from medln.config import TrainConfig
from medln.scopes import SCOPES

from . import views
from .context import AppContext
from .errors import UserError, quiet, user_message
from .finetune import DATA_SOURCES, DEFAULTS, backbone_choices, build_config
from .gpu import ZEROGPU, on_gpu
from .jobs import Job
from .uploads import DataChoice, prepare_dataset

TABLE_HEADERS = ["scope", "params", "%", "base → tuned", "retention", "s/step", "GB", "adapter", "status"]
SHORT_TITLES = ("Trainable parameters (log scale)", "Tuned {metric} vs trainable parameters", "Out-of-domain retention",
                "", "Training loss per scope")  # cost: its two subplot titles say it
COMPARE_STEPS = 40  # the same budget for every scope; a short sweep by default


# ------------------------------------------------------------------ plain handlers

@on_gpu(duration=300)
def compare_records(cfg_dict: dict, scopes: list[str], out: str, stop=None):
    """medln.compare.compare, folded into records a Job understands (ZeroGPU-safe arguments)."""
    from medln.compare import compare

    cfg = TrainConfig.from_dict(cfg_dict)
    index = 0
    for rec in compare(cfg, scopes, out, stop=stop):
        event = rec.get("event")
        if event == "scope_start":
            index = rec["index"]
            yield {"event": "phase", "state": "loading",
                   "phase": f"{rec['scope']}: loading ({index + 1} of {rec['of']} scopes)"}
        elif event == "run_start":
            yield {"event": "phase", "state": "training", "phase": f"training {rec['scope']} ({index + 1} of {len(scopes)})"}
        elif event == "stopped":
            yield {"event": "phase", "state": "evaluating", "phase": f"{rec['scope']}: stopped; scoring what it trained"}
        elif event in ("scope_done", "scope_skipped"):
            yield {"event": "row", "row": rec["row"]}
        elif event == "done":
            yield {"event": "done", "status": rec["status"], "rows": rec["rows"], "metric": rec["metric"],
                   "csv": rec["csv"], "results": rec["results"], "wall_s": rec["wall_s"]}
        elif event == "step":
            yield {**rec, "global_step": index * cfg.steps + rec["step"]}
            if rec["step"] == cfg.steps:
                yield {"event": "phase", "state": "evaluating", "phase": f"{rec['scope']}: scoring base and tuned"}


def start(ctx: AppContext, session: str, backbone, scopes, quant4, steps, batch_size, data_source, data_file,
          hub_id, eval_limit) -> Job:
    if not scopes:
        raise UserError("choose at least one scope to compare")
    build_config(backbone, "ln", quant4, steps, None, batch_size, DataChoice("sample"), eval_limit, 0)
    data = prepare_dataset(data_source, data_file, hub_id, ctx.settings.session_dir(session) / "uploads",
                           max_upload_bytes=ctx.settings.max_upload_bytes,
                           max_unzip_bytes=ctx.settings.max_unzip_bytes)
    cfg = build_config(backbone, "ln", quant4, steps, None, batch_size, data, eval_limit, 0)
    out = ctx.settings.session_dir(session) / "compare" / time.strftime("%Y%m%d-%H%M%S")
    scopes = list(scopes)

    def run(job: Job):
        return compare_records(cfg.to_dict(), scopes, str(out), stop=None if ZEROGPU else job.stop)

    title = f"{len(scopes)} scopes on {Path(cfg.backbone).name} · {cfg.steps} steps each · {data.label or cfg.data}"
    job = ctx.jobs.submit(session, "compare", title, out, cfg.steps * len(scopes), run)
    job.notes.extend(data.notes)
    return job


def table_rows(rows: list[dict]) -> list[list]:
    out = []
    for r in rows:
        if r.get("skipped"):
            out.append([r["scope"], "–", "–", "–", "–", "–", "–", "–", "skipped: " + r["skipped"]])
            continue
        metric = r.get("metric") or "overall"
        b, t = (r.get("base") or {}).get(metric), (r.get("tuned") or {}).get(metric)
        change = "–" if b is None or t is None else f"{b:.3f} → {t:.3f} ({metric})"
        ret = "–" if r.get("retention") is None else f"{100 * r['retention']:.1f} %"
        out.append([r["scope"], f"{r['trainable']:,}" if r.get("trainable") else "–",
                    f"{r['percent']:.4g} %" if r.get("percent") is not None else "–", change, ret,
                    "–" if r.get("step_s") is None else f"{r['step_s']:.3g}",
                    "–" if r.get("peak_mem_gb") is None else f"{r['peak_mem_gb']:.2f}",
                    views.fmt_bytes(r.get("adapter_bytes")), r.get("status") or ""])
    return out


def figures(rows: list[dict], records: list[dict]) -> tuple:
    from medln import plots

    figs = (plots.trainable_params_fig(rows), plots.metric_vs_params_fig(rows), plots.retention_fig(rows),
            plots.cost_fig(rows), plots.loss_curve_fig(records))
    metric = plots.pick_metric(rows) if rows else "overall"
    for f, title in zip(figs, SHORT_TITLES):  # half-width panels: shorter titles than the HTML report's
        f.update_layout(height=360, margin=dict(l=55, r=20, t=50, b=45), title=title.format(metric=metric))
    figs[1].update_layout(showlegend=False)  # every point carries its scope's name
    return figs


def param_figure(backbone: str, quant4: bool):
    """Before any run: the trainable-parameter plot straight from config.json."""
    from medln import plots
    from medln.accounting import param_rows

    rows = param_rows(backbone, quant="4bit" if quant4 else "none")
    fig = plots.trainable_params_fig(rows)
    fig.update_layout(height=360, margin=dict(l=55, r=20, t=50, b=45), title=SHORT_TITLES[0])
    return fig


# ------------------------------------------------------------------ layout and wiring

def build(ctx: AppContext):
    import gradio as gr

    s = ctx.settings
    gr.Markdown("Train every chosen scope with **the same budget** (steps, batch, data, seed; each scope at its own "
                "default learning rate) and compare what they cost and what they buy. The paper's claim: LayerNorm "
                "tuning matches the larger scopes at a tiny fraction of the parameters and forgets less "
                "(retention on a held-out, out-of-domain split).", elem_classes="medln-hint")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            backbone = gr.Dropdown(backbone_choices(s.default_backbone), value=s.default_backbone,
                                   allow_custom_value=True, label="Backbone", elem_id="cmp-backbone")
            scopes = gr.CheckboxGroup([sc.name for sc in SCOPES], value=[sc.name for sc in SCOPES], label="Scopes",
                                      elem_id="cmp-scopes")
            quant4 = gr.Checkbox(False, label="4-bit (NF4): 'full' is then skipped and says why", elem_id="cmp-quant")
            with gr.Row():
                steps = gr.Number(value=COMPARE_STEPS, minimum=1, precision=0, label="Steps per scope",
                                  elem_id="cmp-steps")
                batch = gr.Number(value=DEFAULTS.batch_size, minimum=1, precision=0, label="Batch size")
                eval_limit = gr.Number(value=s.eval_limit, minimum=0, precision=0, label="Samples scored per split")
            data_source = gr.Radio(DATA_SOURCES, value="sample", label="Dataset")
            data_file = gr.File(label="Dataset file (.zip or .jsonl)", file_types=[".zip", ".jsonl"], visible=False)
            hub_id = gr.Textbox(label="Hugging Face dataset id", visible=False)
            with gr.Row():
                start_btn = gr.Button("Run comparison", variant="primary", elem_id="cmp-start")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
            notice = gr.HTML()
            status = gr.HTML(views.status_html(None, idle=views.IDLE_COMPARE), elem_id="cmp-status")
            download = gr.DownloadButton("Download results (.csv)", visible=False)
        with gr.Column(scale=8, min_width=480):
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, label="Results per scope",
                                 elem_id="cmp-table", column_widths=["9%", "10%", "9%", "22%", "11%", "8%", "7%",
                                                                     "10%", "14%"])
            with gr.Row():
                params_plot = gr.Plot(show_label=False, elem_id="cmp-params")
                metric_plot = gr.Plot(show_label=False, elem_id="cmp-metric", visible=False)
            with gr.Row():
                retention_plot = gr.Plot(show_label=False, elem_id="cmp-retention", visible=False)
                cost_plot = gr.Plot(show_label=False, elem_id="cmp-cost", visible=False)
            loss_plot = gr.Plot(show_label=False, elem_id="cmp-loss", visible=False)
            move_scope = gr.Dropdown([sc.name for sc in SCOPES], value="ln", elem_id="cmp-move-scope",
                                     label="Where the weights moved: scope (after its run)")
            move_plot = gr.Plot(show_label=False, elem_id="cmp-movement", visible=False)
    seen = gr.State(None)

    def on_params(backbone_v, quant_v):
        try:
            return param_figure(backbone_v or "", bool(quant_v))
        except Exception:
            return None

    def on_data(src):
        return gr.update(visible=src == "upload"), gr.update(visible=src == "hub")

    def on_start(session, *values):
        try:
            job = start(ctx, session, *values)
        except Exception as e:
            return (views.notice_html(user_message(e), error=True), gr.skip(), gr.skip())
        return (views.notice_html(f"Started: {html.escape(job.title)}. You may reload the page."),
                gr.update(interactive=False), gr.update(interactive=True))

    def on_stop(session):
        job = ctx.jobs.latest_of(session, "compare") if session else None
        if job is None or not job.active:
            return '<div class="medln-notice">Nothing is running.</div>'
        ctx.jobs.stop(session, job.id)
        return '<div class="medln-notice">Stopping: the current scope stops within a step and is scored; the rest are skipped.</div>'

    @quiet(lambda: (gr.skip(),) * 12)
    def on_poll(session, last):
        job = ctx.jobs.latest_of(session, "compare") if session else None
        key = (job.id, job.version) if job else None
        if key == last or job is None:
            return (gr.skip(),) * 12
        snap = job.snapshot()
        rows = (job.result or {}).get("rows") or job.rows
        figs = [gr.skip()] * 5
        if rows or job.records:
            made = figures(rows, job.records)
            figs = [gr.update(value=f, visible=True) for f in made] if rows else figs[:4] + [
                gr.update(value=made[4], visible=True)]
        csv = (job.result or {}).get("csv")
        return (views.status_html(snap, ctx.jobs.position(job), idle=views.IDLE_COMPARE), table_rows(rows), *figs,
                gr.update(value=csv, visible=True) if csv and Path(csv).exists() else gr.update(visible=False),
                gr.update(interactive=not job.active), gr.update(interactive=job.active), notice_for(job), key)

    def on_move(session, scope_v):
        from .finetune import movement_update

        job = ctx.jobs.latest_of(session, "compare") if session else None
        return movement_update(Path(job.out) / "runs" / scope_v if job else None)

    move_scope.change(on_move, [ctx.session, move_scope], move_plot, api_visibility="private", queue=False)
    status.change(on_move, [ctx.session, move_scope], move_plot, api_visibility="private", queue=False)
    for comp in (backbone, quant4):
        comp.change(on_params, [backbone, quant4], params_plot, api_visibility="private", concurrency_limit=4)
    data_source.change(on_data, data_source, [data_file, hub_id], api_visibility="private", queue=False)
    start_btn.click(on_start, [ctx.session, backbone, scopes, quant4, steps, batch, data_source, data_file, hub_id,
                               eval_limit], [notice, start_btn, stop_btn], api_visibility="private",
                    concurrency_limit=4)
    stop_btn.click(on_stop, ctx.session, notice, api_visibility="private", queue=False)
    ctx.components["cmp_params"] = (on_params, [backbone, quant4], params_plot)
    ctx.components["cmp_poll"] = (on_poll, [ctx.session, seen],
                                  [status, table, params_plot, metric_plot, retention_plot, cost_plot, loss_plot,
                                   download, start_btn, stop_btn, notice, seen])


def notice_for(job: Job):
    import gradio as gr

    if job.state == "failed" and job.error:
        return views.notice_html(job.error, error=True)
    return gr.skip()

