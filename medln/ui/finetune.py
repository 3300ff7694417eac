"""Tab 1, Fine-tune: backbone, scope (with its parameter count before anything loads),
4-bit, steps / learning rate / batch size, dataset; Start and Stop; a progress bar with
ETA, the live loss curve, base vs tuned metrics and the adapter download.

The handlers are plain functions of widget values (tested without a browser); `build`
only lays the widgets out and wires them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medln.backbones import BACKBONES, BACKBONES_BY_NAME
from medln.config import TrainConfig
from medln.runs import new_run_id
from medln.methods import SCOPES, default_batch, default_lr, get_scope

from . import views
from .context import AppContext, FinetuneTab, Handler
from .downloads import adapter_zip, merged_zip, served_copy
from .errors import private_errors, quiet, user_message, web_words
from .gpu import fine_tune_seconds, on_gpu
from .jobs import Job
from .form import build_config, config_fields, follow_batch
from .uploads import DataChoice, prepare_dataset

DEFAULTS = TrainConfig()  # the single source of truth for every default shown here
# The Fine-tune tab starts in 4-bit: the mission's headline is a 4-bit LayerNorm fine-tune
# (the CLI keeps TrainConfig's full-precision default). Its CPU cost is stated beside it.
UI_QUANT_DEFAULT = True
DATA_SOURCES = [("Bundled sample (synthetic, CC0)", "sample"), ("Upload (.zip or .jsonl)", "upload"),
                ("Hugging Face dataset id", "hub")]


# ------------------------------------------------------------------ plain handlers

def backbone_choices(default: str) -> list[tuple[str, str]]:
    choices = [(f"{b.name}  ({b.family}{', gated' if b.gated else ''})", b.name) for b in BACKBONES]
    if default not in BACKBONES_BY_NAME:
        choices.insert(0, (f"{Path(default).name}  (default)", default))
    return choices


def backbone_info(backbone: str) -> str:
    spec = BACKBONES_BY_NAME.get(backbone)
    if spec is None:
        return (f"Custom backbone `{backbone}`: a Hugging Face id (`owner/name`) or a local folder; "
                "its family comes from its config.json.")
    bits = [f"**{spec.name}** · family `{spec.family}` · licence: {spec.license}"]
    if spec.note:
        bits.append(spec.note)
    if spec.gated:
        bits.append("🔒 gated: the server needs a Hub token (`HF_TOKEN` or `hf auth login`) whose account "
                    "accepted the terms")
    return " · ".join(bits)


def scope_info(scope: str, backbone: str = "") -> tuple[float, str]:
    """(default learning rate, description) of a scope on a backbone."""
    s, lr = get_scope(scope), default_lr((backbone or "").strip(), scope)
    return lr, f"{s.description}. Default learning rate {lr:g}."


def lr_hint(scope: str, backbone: str = "") -> str:
    """What an empty learning-rate field means: the scope's default on this backbone."""
    return f"empty: the default for {scope} on this backbone, {scope_info(scope, backbone)[0]:g}"


def param_view(backbone: str, scope: str, quant4: bool, settings=None) -> tuple[list[list], str, str, bool]:
    """(table rows, summary, 4-bit note, can start) from config.json alone: nothing loads.
    With the app's `settings`, only a backbone a visitor may name is read (Settings.app_backbone)."""
    from medln.accounting import param_rows

    quant = "4bit" if quant4 else "none"
    note, ok = quant_note(scope, quant4)
    try:
        backbone = settings.app_backbone(backbone) if settings is not None else backbone.strip()
        rows = param_rows(backbone, quant=quant, lora_r=DEFAULTS.lora_r)
    except Exception as e:  # unknown backbone, offline hub, gated, unsupported family
        return [], f"⚠️ {user_message(e)}", note, False
    summary = views.scope_summary(rows, scope, backbone, quant)
    return views.param_table_rows(rows, scope, {s.name: s for s in SCOPES}), summary, note, ok


def quant_note(scope: str, quant4: bool) -> tuple[str, bool]:
    s = get_scope(scope)
    if not quant4:
        return "Unquantized weights in the run's precision (auto: fp32 on a CPU, bf16 or fp16 on a GPU).", True
    if s.refuses_4bit:
        return (f"⚠️ **{scope} + 4-bit cannot run**: 4-bit weights cannot be trained. Untick 4-bit or pick another "
                "scope.", False)
    cpu = ""
    try:
        import torch

        if not torch.cuda.is_available():
            cpu = f" On this CPU-only server 4-bit works (bitsandbytes' CPU kernels) {CPU_4BIT_COST}"
    except Exception:
        pass
    return f"4-bit NF4 weights: scope **{scope}** {web_words(s.quant_4bit)}.{cpu}", True


# Measured in session 15 (docs/app.md has the command): `ln` on medln-tiny, 60-step runs, 4-bit and
# full precision interleaved, three pairs per batch, on the project's 2-core CPU with nothing else
# running. Issue 13's "not slower" (0.67-0.73) came from a heavily loaded machine and did not hold.
CPU_4BIT_COST = ("and trains more slowly than full precision: for the bundled model on a 2-core CPU, 1.14–1.19× "
                 "the training time at batch 32 (its default), 1.35–1.43× at batch 8. It is here for what it "
                 "saves on a GPU with a large model; untick it for speed on a CPU.")


def gpu_seconds(cfg_dict: dict, out: str, stop=None, base_metrics=None, extra_eval=None, train_samples=None) -> int:
    """ZeroGPU duration of one train_records call (same arguments): medln.ui.gpu.fine_tune_seconds."""
    splits = sum(1 for k in ("eval_split", "ood_split") if cfg_dict.get(k)) + len(extra_eval or {})
    per_split = cfg_dict.get("eval_limit") or 200  # 0 = the whole split: assume a small one
    return fine_tune_seconds(cfg_dict["steps"] * cfg_dict.get("grad_accum", 1), splits * per_split)


@on_gpu(duration=gpu_seconds)
def train_records(cfg_dict: dict, out: str, stop=None, base_metrics=None, extra_eval=None, train_samples=None):
    """medln.train.train_run as a generator of plain records: the GPU function (ZeroGPU-safe
    arguments: a config dict, a path string, a StopFlag that pickles to its file, plain
    Sample records). `train_samples`: a comparison's train split without its validation slice."""
    from medln.train import train_run

    yield from train_run(TrainConfig.from_dict(cfg_dict), out, stop=stop, base_metrics=base_metrics,
                         extra_eval=extra_eval, train_samples=train_samples)


def start_job(ctx: AppContext, session: str, cfg: TrainConfig, data: DataChoice) -> Job:
    """Submit the fine-tune. On ZeroGPU (inline jobs) this call runs it to the end, here in the
    request, so that spaces.GPU sees the visitor's request; the page follows it by polling."""
    out = ctx.settings.session_dir(session) / "runs" / new_run_id(cfg.backbone, cfg.scope)

    def run(job: Job):
        records = train_records(cfg.to_dict(), str(out), stop=job.stop)
        return private_errors(records, ctx.settings.session_dir(session))

    quant = " · 4-bit" if cfg.quant == "4bit" else " · full precision"
    title = f"{cfg.scope} on {Path(cfg.backbone).name}{quant} · {cfg.steps} steps · {data.label or cfg.data}"
    est, _ = estimate_for(ctx, cfg)
    job = ctx.jobs.submit(session, "finetune", title, out, cfg.steps, run, config=cfg.to_dict(), estimate=est)
    job.notes.extend(data.notes)
    if ctx.jobs.inline:
        ctx.jobs.run_here(job)
    return job


def estimate_for(ctx: AppContext, cfg: TrainConfig):
    """(Estimate or None, number of answers scored) for a fine-tune with this config."""
    from . import eta

    n_items = eta.scored_items(cfg.data, [cfg.eval_split, cfg.ood_split], cfg.eval_limit)
    speed = ctx.jobs.speed.lookup(cfg.backbone, cfg.scope, cfg.quant, cfg.batch_size) if ctx.jobs.speed else None
    return eta.estimate(speed, cfg.steps, n_items), n_items


def estimate_view(ctx: AppContext, backbone, scope, quant4, steps, batch_size, data_source, eval_limit) -> str:
    """The 'Estimated time' line under Start (the bundled sample's sizes; uploads: by the limit)."""
    try:
        data = (DataChoice("sample", "test", "source-test") if data_source == "sample"
                else DataChoice("upload", "test", ""))
        cfg = build_config(config_fields(backbone, scope, quant4, steps, None, batch_size, eval_limit, 0), data,
                           ctx.settings)
    except Exception:
        return ""  # the Start button reports the problem
    est, n_items = estimate_for(ctx, cfg)
    return views.estimate_html(est, n_items=n_items)


def start(ctx: AppContext, session: str, fields: dict, data_source, data_file, hub_id) -> Job:
    """The Start button and the /finetune API: TrainConfig `fields` (config_fields() of the
    form's widgets, or the API's arguments) and where the data comes from -> a submitted job."""
    # the config is checked (once) before an upload is touched, so a bad number fails fast
    cfg = build_config(fields, DataChoice("sample"), ctx.settings)
    data = prepare_dataset(data_source, data_file, hub_id, ctx.settings.session_dir(session) / "uploads",
                           max_upload_bytes=ctx.settings.max_upload_bytes,
                           max_unzip_bytes=ctx.settings.max_unzip_bytes)
    cfg = dataclasses.replace(cfg, data=data.spec, eval_split=data.eval_split, ood_split=data.ood_split)
    return start_job(ctx, session, cfg, data)


def form_values(config: dict) -> tuple:
    """A job's config -> the values of the form widgets (backbone, scope, 4-bit, steps, lr,
    batch, samples scored, seed, precision): a reloaded page shows what is actually running
    (an lr of None, the scope's default, as the empty field it came from)."""
    lr = config.get("lr")
    return (config["backbone"], config["scope"], config.get("quant") == "4bit", config["steps"],
            "" if lr is None else f"{lr:g}",
            config["batch_size"], config.get("eval_limit", 0), config.get("seed", 0), config.get("precision", "auto"))


def movement_update(run_path: Path | None):
    """The run's 'where the weights moved' heatmap (its inspect.json), or hidden."""
    import gradio as gr

    from medln.inspect import inspect_figure

    fig = inspect_figure(run_path) if run_path else None
    return gr.update(value=fig, visible=True) if fig is not None else gr.update(visible=False)


# ------------------------------------------------------------------ layout and wiring

def build(ctx: AppContext) -> FinetuneTab:
    import gradio as gr

    from medln.plots import loss_curve_fig

    s = ctx.settings
    _, default_desc = scope_info(DEFAULTS.scope, s.default_backbone)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            gr.Markdown("### 1 · Model and tuning scope")
            backbone = gr.Dropdown(backbone_choices(s.default_backbone), value=s.default_backbone,
                                   allow_custom_value=True, label="Backbone", elem_id="ft-backbone",
                                   info="bundled default, a registry model, a Hugging Face id (owner/name) or a local folder")
            backbone_md = gr.Markdown(backbone_info(s.default_backbone), elem_classes="medln-hint")
            scope = gr.Radio([(sc.name, sc.name) for sc in SCOPES], value=DEFAULTS.scope, label="Tuning scope",
                             elem_id="ft-scope")
            scope_md = gr.Markdown(default_desc, elem_classes="medln-hint")
            quant4 = gr.Checkbox(value=UI_QUANT_DEFAULT, label="Load the weights in 4-bit (NF4)",
                                 elem_id="ft-quant")
            quant_md = gr.Markdown(elem_classes="medln-hint")
            params_md = gr.Markdown(elem_id="ft-params-summary")
            params_df = gr.Dataframe(headers=["scope", "trainable", "% of model", "under 4-bit"],
                                     column_widths=["22%", "24%", "20%", "34%"],
                                     datatype=["str", "str", "str", "str"], interactive=False, wrap=True,
                                     label="Trainable parameters per scope (from config.json, before loading)",
                                     elem_id="ft-params", max_height=420)
            gr.Markdown("### 2 · Budget")
            with gr.Row():
                # No minimum/maximum on these widgets: Gradio's own range message does not
                # name the field; TrainConfig.validate() does, and lists every problem at once.
                steps = gr.Number(value=DEFAULTS.steps, precision=0, label="Steps", elem_id="ft-steps")
                # Empty: the scope's default (the saved config says "default", not a number). A
                # text box: Gradio's Number cannot be empty (it sends 0).
                lr = gr.Textbox(value="", label="Learning rate", elem_id="ft-lr", max_lines=1,
                                placeholder=lr_hint(DEFAULTS.scope, s.default_backbone))
                batch = gr.Number(value=default_batch(s.default_backbone), precision=0, label="Batch size",
                                  elem_id="ft-batch")
            gr.Markdown("### 3 · Data")
            data_source = gr.Radio(DATA_SOURCES, value="sample", label="Dataset", elem_id="ft-data")
            data_file = gr.File(label="Dataset file: a .zip (JSONL + images, VQA-RAD, SLAKE, PathVQA, IU-Xray) or a .jsonl",
                                file_types=[".zip", ".jsonl"], visible=False, elem_id="ft-data-file")
            hub_id = gr.Textbox(label="Hugging Face dataset id", placeholder="flaviagiammarino/vqa-rad",
                                visible=False, elem_id="ft-hub")
            with gr.Accordion("Advanced", open=False):
                eval_limit = gr.Number(value=s.eval_limit, precision=0,
                                       label="Samples scored per split (base and tuned; 0 = all)",
                                       elem_id="ft-eval-limit")
                seed = gr.Number(value=DEFAULTS.seed, precision=0, label="Seed", elem_id="ft-seed")
                precision = gr.Dropdown(list(TrainConfig.__dataclass_fields__["precision"].metadata["choices"]),
                                        value=DEFAULTS.precision, label="Precision", elem_id="ft-precision",
                                        info="auto: bf16 on a GPU with bf16 (A10G, L4, A100, H100), fp16 with loss "
                                             "scaling on a T4, fp32 on a CPU; MedGemma refuses fp16")
        with gr.Column(scale=7, min_width=420):
            with gr.Row():
                start_btn = gr.Button("Start fine-tune", variant="primary", elem_id="ft-start", scale=3)
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="ft-stop", scale=1)
            estimate = gr.HTML(elem_id="ft-estimate")
            notice = gr.HTML(elem_id="ft-notice")
            status = gr.HTML(views.status_html(None), elem_id="ft-status")
            loss_plot = gr.Plot(label="Training loss", elem_id="ft-loss", show_label=False)
            metrics = gr.HTML(elem_id="ft-metrics")  # base vs tuned, n per row, every row shown
            result_md = gr.Markdown(elem_id="ft-result")
            download = gr.DownloadButton("Download adapter (.zip)", visible=False, elem_id="ft-download")
            with gr.Row():
                merge_btn = gr.Button("Merge into the base weights (standalone model .zip)", size="sm",
                                      elem_id="ft-merge")
                merged_dl = gr.DownloadButton("Download merged model (.zip)", visible=False, elem_id="ft-merged")
            movement_plot = gr.Plot(label="Where the weights moved", elem_id="ft-movement", visible=False)
    seen = gr.State(None)
    timer = gr.Timer(s.poll_s)

    # -- handlers bound to this context
    def on_params(backbone_v, scope_v, quant_v):
        rows, summary, note, ok = param_view(backbone_v or "", scope_v, bool(quant_v), s)
        return rows, summary, note, gr.update(interactive=ok)

    def on_scope(scope_v, backbone_v):
        return gr.update(placeholder=lr_hint(scope_v, backbone_v)), scope_info(scope_v, backbone_v)[1]

    def on_data(src):
        return gr.update(visible=src == "upload"), gr.update(visible=src == "hub")

    def on_start(session, backbone_v, scope_v, quant_v, steps_v, lr_v, batch_v, eval_limit_v, seed_v, precision_v,
                 data_source_v, data_file_v, hub_id_v):
        try:
            fields = config_fields(backbone_v, scope_v, quant_v, steps_v, lr_v, batch_v, eval_limit_v, seed_v, precision_v)
            job = start(ctx, session, fields, data_source_v, data_file_v, hub_id_v)
        except Exception as e:
            return views.notice_html(web_words(user_message(e)), error=True), gr.skip(), gr.skip()
        if ctx.jobs.inline:  # ZeroGPU: it ran in this request and has finished; the poll drew the buttons
            return views.notice_html(f"<code>{job.out.name}</code>: {job.state}."), gr.skip(), gr.skip()
        return (views.notice_html(f"Started <code>{job.out.name}</code>. You may reload the page: the job keeps running."),
                gr.update(interactive=False), gr.update(interactive=True))

    def on_stop(session):
        job = ctx.jobs.stop(session) if session else None
        if job is None:
            return views.notice_html("Nothing is running.")
        return views.notice_html("Stopping after the current step; the adapter trained so far is kept and scored.")

    def on_merge(session):
        job = ctx.jobs.latest_of(session, "finetune") if session else None
        if job is None or job.result is None or job.active:
            return views.notice_html("Finish a fine-tune first: its adapter is what gets merged."), gr.skip()
        try:
            zip_path = merged_zip(job.out)
        except Exception as e:
            return views.notice_html(user_message(e, doing="merging"), error=True), gr.skip()
        return views.notice_html("Merged: a plain transformers model (no peft needed) that answers as the adapter."), \
            gr.update(value=served_copy(zip_path), visible=True)

    form = [backbone, scope, quant4, steps, lr, batch, eval_limit, seed, precision]
    n_out = 11 + len(form)

    def _loss_plot(job, snap):
        if not (job and job.records):
            return None  # None clears the previous job's curve until this one has a step
        plot = loss_curve_fig([dict(r, scope=snap["start"]["scope"] if snap.get("start") else "loss")
                               for r in job.records])
        plot.update_layout(height=320, margin=dict(l=50, r=20, t=36, b=40), showlegend=False,
                           title=dict(text="loss · points: each step · line: smoothed", font=dict(size=13)))
        return plot

    @quiet(lambda: (gr.skip(),) * n_out)
    def on_poll(session, last):
        job = ctx.jobs.latest_of(session, "finetune") if session else None
        # What this page last drew: (job, its version, its loss points, its state). Only what
        # changed goes out: no figure without a new loss point (scoring bumps the version every
        # batch), no tables, buttons or download while the job stays in the same state.
        key = (job.id, job.version, len(job.records), job.state) if job else None
        if key == last and not (job and job.state == "queued"):  # a waiting job's place and wait change
            return (gr.skip(),) * n_out
        same = bool(job and last and len(last) == 4 and last[0] == job.id)
        snap = job.snapshot() if job else None
        pos, wait = ctx.jobs.queue_info(job) if job else (0, None)
        active = bool(job and job.active)
        if same and last[3] == job.state and job.result is None:
            return (views.status_html(snap, pos, wait_s=wait), gr.skip() if last[2] == key[2] else _loss_plot(job, snap),
                    *(gr.skip(),) * 7, key, *(gr.skip(),) * len(form), gr.skip())
        plot = _loss_plot(job, snap)
        zip_path = adapter_zip(job.out) if job and job.result else None
        # After a reload (nothing seen yet) the form shows the running job's own settings.
        refill = active and (last is None or last[0] != job.id) and job.config
        return (views.status_html(snap, pos, wait_s=wait),
                plot,
                views.metric_table_html(snap["result"]) if snap and snap.get("result") else "",
                views.result_markdown(snap),
                gr.update(value=served_copy(zip_path), visible=True) if zip_path else gr.update(visible=False),
                movement_update(job.out if job and job.result else None),
                gr.update(interactive=not active),
                gr.update(interactive=active),
                gr.skip() if active else "",  # the "Started ..." notice goes when the job ends, failed too
                key,
                *(form_values(job.config) if refill else (gr.skip(),) * len(form)),
                gr.skip())  # the Ask tab's run list (app.py fills it when a run finishes)

    param_inputs = [backbone, scope, quant4]
    param_outputs = [params_df, params_md, quant_md, start_btn]
    backbone.change(lambda b: backbone_info(b or ""), backbone, backbone_md, api_visibility="private", queue=False)
    for comp in param_inputs:
        comp.change(on_params, param_inputs, param_outputs, api_visibility="private", concurrency_limit=4)
    # The default learning rate (the empty field's hint) depends on both; `.input` (the user's
    # own change), so a page reloaded during a job keeps the job's form when the poll refills it.
    for comp in (scope, backbone):
        comp.input(on_scope, [scope, backbone], [lr, scope_md], api_visibility="private", queue=False)
    follow_batch(backbone, batch, s.default_backbone)
    data_source.change(on_data, data_source, [data_file, hub_id], api_visibility="private", queue=False)
    def on_estimate(*values):
        return estimate_view(ctx, *values)

    est_inputs = [backbone, scope, quant4, steps, batch, data_source, eval_limit]
    for comp in est_inputs:
        comp.change(on_estimate, est_inputs, estimate, api_visibility="private", queue=False)
    start_btn.click(on_start, [ctx.session, *form, data_source, data_file, hub_id], [notice, start_btn, stop_btn],
                    api_visibility="private", concurrency_limit=4)
    stop_btn.click(on_stop, ctx.session, notice, api_visibility="private", queue=False)
    merge_btn.click(on_merge, ctx.session, [notice, merged_dl], api_visibility="private", concurrency_limit=1)
    poll_outputs = [status, loss_plot, metrics, result_md, download, movement_plot, start_btn, stop_btn, notice, seen,
                    *form]
    return FinetuneTab(timer, Handler(on_poll, [ctx.session, seen], poll_outputs),
                       Handler(on_params, param_inputs, param_outputs), Handler(on_estimate, est_inputs, [estimate]))

