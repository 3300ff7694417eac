"""build_app(): the four tabs, the per-browser session, the polling timer and the API;
launch_kwargs(): how to serve it (theme and css go to launch() in Gradio 6).

Session: a random id kept in the browser's localStorage (gr.BrowserState), created on the
first visit; a reload finds it again, and with it the running job and the session's runs.
Concurrency: the queue holds at most `queue_size` waiting events; generation shares one slot
(concurrency_id "gpu", limit 1); training and comparisons run in the job worker, one at a time
(on ZeroGPU in the request that starts them, one at a time too: medln.ui.gpu, medln.ui.jobs).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from medln import ASSETS, DISCLAIMER

from . import about, api, ask, compare, finetune
from .context import AppContext
from .errors import quiet
from .settings import Settings, check_environment, check_session, new_session_id

HERE = Path(__file__).resolve().parent

CSS = """
.gradio-container { max-width: 1400px !important; margin: auto; }
#medln-header h1 { margin-bottom: 0; }
#medln-header p { margin-top: 2px; color: var(--body-text-color-subdued); }
.medln-hint, .medln-hint p { font-size: 0.88em; color: var(--body-text-color-subdued); }
.medln-disclaimer { border: 1px solid #f59e0b; background: #fffbeb; color: #78350f; border-radius: 8px;
  padding: 6px 10px; font-size: 0.9em; }
.medln-status { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px; }
.medln-title { font-weight: 600; margin-bottom: 4px; }
.medln-status-head { font-size: 0.92em; margin-bottom: 8px; }
.medln-state { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.8em; font-weight: 600;
  text-transform: uppercase; letter-spacing: .03em; background: #dbeafe; color: #1e40af; margin-right: 6px; }
.medln-done .medln-state { background: #dcfce7; color: #166534; }
.medln-failed .medln-state { background: #fee2e2; color: #991b1b; }
.medln-stopped .medln-state { background: #fef3c7; color: #92400e; }
.medln-idle { color: var(--body-text-color-subdued); }
.medln-bar { height: 12px; background: var(--background-fill-secondary); border-radius: 6px; overflow: hidden; }
.medln-bar-fill { height: 100%; background: linear-gradient(90deg, #2563eb, #1d4ed8); transition: width .4s; }
.medln-done .medln-bar-fill { background: #16a34a; }
.medln-failed .medln-bar-fill { background: #dc2626; }
.medln-stopped .medln-bar-fill { background: #d97706; }
.medln-status-line { font-size: 0.9em; margin-top: 6px; font-variant-numeric: tabular-nums; }
.medln-error { margin-top: 8px; color: #991b1b; background: #fef2f2; border-radius: 6px; padding: 6px 8px; }
.medln-notes { margin: 6px 0 0 0; padding-left: 18px; font-size: 0.85em; color: var(--body-text-color-subdued); }
.medln-notice { font-size: 0.92em; padding: 4px 2px; }
.medln-notice-error { color: #991b1b; background: #fef2f2; border-radius: 6px; padding: 6px 8px; }
.medln-estimate { font-size: 0.9em; color: var(--body-text-color-subdued); padding: 2px 2px 4px; }
.medln-ood { border: 1px solid #dc2626; background: #fef2f2; color: #7f1d1d; border-radius: 8px; padding: 6px 10px;
  font-size: 0.88em; line-height: 1.35; }
/* width 0 + min-width 100%: a wide table scrolls inside its box instead of widening every
   flex column above it (a flex item's automatic minimum is its content's width). */
.medln-table-wrap { overflow-x: auto; width: 0; min-width: 100%; }
.medln-table { border-collapse: collapse; width: 100%; font-size: 0.9em; font-variant-numeric: tabular-nums; }
.medln-table th, .medln-table td { padding: 5px 6px; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; white-space: nowrap; }
.medln-table th { font-weight: 600; background: var(--background-fill-secondary); white-space: normal;
  vertical-align: bottom; }  /* "image-blind", "probe ceiling": headers wrap, the numbers below do not */
.medln-table td.medln-wrap { white-space: normal; min-width: 14em; }
.medln-table tr.medln-few td { color: #9ca3af; }
.medln-compare td:last-child { white-space: normal; min-width: 16em; }
.medln-table-note { font-size: 0.82em; color: var(--body-text-color-subdued); margin-top: 4px; }
.medln-claims { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; margin: 6px 0; }
.medln-claims > div { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; font-size: 0.92em; }
.medln-claims h4 { margin: 0 0 4px 0; font-size: 0.95em; }
#ask-answers label > span, #ask-answers [data-testid="block-info"] { white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; display: block; max-width: 100%; }
@media (max-width: 720px) {
  .medln-claims { grid-template-columns: 1fr; }
  .medln-plot-row { flex-direction: column !important; }
  .medln-plot-row > * { width: 100% !important; min-width: 0 !important; }
}
"""


def _theme():
    import gradio as gr

    # System fonts only: the default Google font would be fetched from the internet.
    fonts = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]
    return gr.themes.Soft(primary_hue="blue", secondary_hue="sky", neutral_hue="slate", font=fonts, font_mono=mono)


def build_app(settings: Settings | None = None, **overrides):
    """The Gradio Blocks app. `overrides` replace Settings fields (tests: runs_root, default_backbone)."""
    import gradio as gr

    ctx = AppContext.create(settings, **overrides)
    with gr.Blocks(title="MedLN: LayerNorm fine-tuning of medical VLMs", fill_width=False) as demo:
        ctx.session = gr.BrowserState(None, storage_key="medln-session", secret=ctx.settings.secret)
        gr.HTML("""<div id="medln-header"><h1>MedLN</h1>
<p>LayerNorm fine-tuning of medical vision-language models: train ~0.005–0.05 % of the weights
(Chen et al., ACM MM 2024), compare with LoRA, attention, MLP and full tuning, and ask base and tuned side by side.</p>
</div>""")
        gr.HTML(f'<div class="medln-disclaimer">⚠️ {DISCLAIMER}</div>')
        with gr.Tabs():
            with gr.Tab("1 · Fine-tune", id="finetune"):
                ctx.finetune = finetune.build(ctx)
            with gr.Tab("2 · Ask", id="ask") as ask_tab:
                ctx.ask = ask.build(ctx)
            with gr.Tab("3 · Compare scopes", id="compare"):
                ctx.compare = compare.build(ctx)
            with gr.Tab("4 · About", id="about"):
                about.build(ctx)
        api.register(ctx)
        _wire(ctx, demo, ask_tab)
    demo.medln = ctx  # tests and app.py reach the context through the app
    return demo


def _wire(ctx: AppContext, demo, ask_tab) -> None:
    """The events that cross tabs, all here: the timer polls both jobs (and refreshes the Ask
    tab's run list when a fine-tune finishes), the page load fills every tab, and opening the
    Ask tab re-reads the session's runs."""
    import gradio as gr

    ft, ask_, cmp = ctx.finetune, ctx.ask, ctx.compare
    private = dict(api_visibility="private", queue=False)

    def init_session(session):
        try:
            return check_session(session)
        except ValueError:
            return new_session_id()

    @quiet(lambda: (gr.skip(),) * (len(ft.poll.outputs) + 1))
    def poll(session, ft_seen, ask_run):
        """One tick: the fine-tune panel, and the Ask tab's run list when a run just finished."""
        out = list(ft.poll.fn(session, ft_seen))
        job = ctx.jobs.latest_of(session, "finetune") if session else None
        finished_now = job is not None and job.result is not None and (
            ft_seen is None or ft_seen[0] != job.id or ft_seen[1] != job.version) and not job.active
        if finished_now:
            choices = ask.run_choices(ctx, session)
            ids = [v for _, v in choices]
            value = job.out.name if job.out.name in ids else (ask_run if ask_run in ids else ids[0])
            out[-1] = gr.update(choices=choices, value=value)
        return tuple(out)

    # Polling must never wait behind training or generation: no queue, no concurrency limit.
    ft.timer.tick(poll, [*ft.poll.inputs, ask_.run], [*ft.poll.outputs, ask_.run], show_progress="hidden", **private)
    ft.timer.tick(cmp.poll.fn, cmp.poll.inputs, cmp.poll.outputs, show_progress="hidden", **private)
    load = demo.load(init_session, ctx.session, ctx.session, **private)
    for h in (ft.params, ft.estimate, cmp.params, cmp.estimate, ask_.refresh):
        load = load.then(h.fn, h.inputs, h.outputs, **private)
    ask_tab.select(ask_.refresh.fn, ask_.refresh.inputs, ask_.refresh.outputs, **private)


def launch_kwargs(demo) -> dict:
    """launch() arguments: theme/css (Gradio 6 takes them here), the upload bound, the
    folders files may be served from (the bundled example images only: a session's files
    go out as per-download copies, medln/ui/downloads.py); host and port come from
    GRADIO_SERVER_NAME / _PORT."""
    s = demo.medln.settings
    return dict(
        theme=_theme(),
        css=CSS,
        max_file_size=s.max_upload_bytes,
        allowed_paths=[str(ASSETS / "sample" / "images")],
        blocked_paths=[str(s.runs_root)],  # never by path, whatever else is allowed
        show_error=False,  # every handler turns failures into its own message; no raw exceptions
        footer_links=["api", "gradio"],
    )


def queue(demo):
    """The bounded queue; events default to 4 at a time (light CPU work), generation has its own slot."""
    s = demo.medln.settings
    return demo.queue(max_size=s.queue_size, default_concurrency_limit=4)


def warm_up(demo) -> None:
    """In the background after launch: import torch/transformers and count the default
    backbone's parameters, so the first page load and the first Start do not pay for it."""
    def work():
        try:
            from medln.accounting import param_rows

            param_rows(demo.medln.settings.default_backbone)
            from medln import domain

            if domain.is_demo_backbone(demo.medln.settings.default_backbone):
                domain.bundled_calibration()  # the first question about an image then needs no calibration
        except Exception as e:  # the page shows the same error when it asks
            logging.getLogger("medln.ui").warning("warm-up: %s", e)

    threading.Thread(target=work, name="medln-warm-up", daemon=True).start()


def main(**launch) -> None:
    """Build and serve the app; `launch` adds launch() arguments (server_name, server_port, share)."""
    check_environment()  # every MEDLN_* setting, before anything starts: one line naming a bad one
    logging.basicConfig(level=os.environ.get("MEDLN_LOG", "INFO").strip().upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo = build_app()
    warm_up(demo)
    queue(demo).launch(**launch_kwargs(demo), **launch)
