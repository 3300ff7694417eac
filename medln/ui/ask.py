"""Tab 2, Ask: an image (upload PNG/JPEG/TIFF/DICOM, or a bundled example) and a question,
or "Generate report"; the base and the tuned answer side by side, streamed, from one copy
of the base weights (medln.answers, medln.models). "Tuned" is one of this browser session's runs.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Iterator

import gradio as gr

from medln.backbones import REPORT_PROMPT
from medln.data.images import load_image
from medln.evaluate import MAX_NEW_TOKENS
from medln.prompts import check_question

from . import views
from .context import AppContext, AskTab, Handler
from .downloads import served_copy
from .errors import UserError, user_message
from .gpu import on_gpu
from medln.answers import RunInfo, session_runs, stream_answers
from medln.userfiles import short

from .uploads import IMAGE_SUFFIXES, check_image_upload

ASK_TOKENS = 3 * MAX_NEW_TOKENS["vqa"]  # a free question may want a sentence, not one word
REPORT_TOKENS = MAX_NEW_TOKENS["report"]
NO_RUN = ""
EXAMPLE_QUESTIONS = [
    "What imaging modality is this?",
    "Which body region does this study cover?",
    "Is there an abnormality in this image?",
    "What is the orientation of this image?",
]


# ------------------------------------------------------------------ plain handlers

def run_choices(ctx: AppContext, session: str | None) -> list[tuple[str, str]]:
    """Dropdown choices: this session's finished runs (newest first), then 'base only'."""
    runs = session_runs(ctx.settings.session_dir(session)) if session else []
    return [(r.label, r.run_id) for r in runs] + [("none: base model only", NO_RUN)]


def find_run(ctx: AppContext, session: str, run_id: str | None) -> RunInfo | None:
    if not run_id:
        return None
    if not isinstance(run_id, str):
        raise UserError(f"run_id: expected text, got {short(run_id)}")
    for r in session_runs(ctx.settings.session_dir(session)):
        if r.run_id == run_id:
            return r
    raise UserError(f"run {short(run_id)} is not a finished run of this session (runs are private to the browser "
                    "session, or API client, that trained them)")


def prepare_image(ctx: AppContext, session: str, path) -> Path:
    """Check and decode an uploaded image (DICOM too) once; keep it as a PNG for preview and asking."""
    src = check_image_upload(path, ctx.settings.max_upload_bytes)
    image = load_image(src, where=src.name)
    folder = ctx.settings.session_dir(session) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = folder / f"{digest}.png"
    if not out.exists():
        image.save(out)
    return out


def answer_stream(ctx: AppContext, session: str, image_path, question: str, run_id: str | None, *,
                  report: bool = False) -> Iterator[tuple[str, str]]:
    """(base so far, tuned so far): the core of /ask, /report and the two buttons."""
    if not image_path:
        raise UserError("choose an image first (upload one, or click a bundled example)")
    if report:
        question, tokens = REPORT_PROMPT, REPORT_TOKENS
    else:
        question, tokens = (question or "").strip(), ASK_TOKENS
        if not question:
            raise UserError("type a question, or press Generate report")
        check_question(question)
    run = find_run(ctx, session, run_id)
    path = Path(image_path)
    check_image_upload(path, ctx.settings.max_upload_bytes)
    image = load_image(path, where=path.name)
    yield from stream_answers(ctx.cache, default_backbone=ctx.settings.default_backbone, run=run, image=image,
                              question=question, max_new_tokens=tokens)


def domain_warning_text(ctx: AppContext, session: str | None, image_path, run_id: str | None) -> str:
    """The sentence said beside both answers (page and API alike) when the bundled demo model is
    asked about an image that is not one of its synthetic phantoms (medln.domain: a measured
    check, with its reason); "" otherwise."""
    from medln import domain

    if not image_path:
        return ""
    run = find_run(ctx, session, run_id) if session and run_id else None
    backbone = (run.backbone or run.source) if run else ctx.settings.default_backbone
    if not domain.is_demo_backbone(backbone):
        return ""
    path = Path(image_path)
    return domain.warning(domain.check_image(load_image(path, where=path.name)), Path(backbone).name)


def domain_warning(ctx: AppContext, session: str | None, image_path, run_id: str | None) -> str:
    """domain_warning_text as the page shows it."""
    text = domain_warning_text(ctx, session, image_path, run_id)
    return f'<div class="medln-ood" role="alert">⚠️ {html.escape(text)}</div>' if text else ""


def tuned_label(ctx: AppContext, session: str | None, run_id: str | None) -> str:
    if not run_id or not session:
        return "Tuned model (no run chosen: fine-tune one first)"
    run = next((r for r in session_runs(ctx.settings.session_dir(session)) if r.run_id == run_id), None)
    return f"Tuned: {run.label}" if run else "Tuned model"


# ------------------------------------------------------------------ layout and wiring

def build(ctx: AppContext) -> AskTab:
    from medln.data import bundled

    # Synthetic first (the bundled model's own domain), then the real, attributed images.
    examples = bundled.synthetic_examples() + bundled.example_images()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            image_file = gr.File(label="Upload an image: PNG, JPEG, TIFF or DICOM",
                                 file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id="ask-upload", height=120)
            # The label as a heading above the gallery: Gradio draws a gallery's own label over
            # the first thumbnails.
            gr.Markdown("…or click a bundled example (synthetic first, then real images)", elem_classes="medln-hint")
            gallery = gr.Gallery([p for p, _ in examples], show_label=False, label="Bundled examples",
                                 columns=4, height=390, allow_preview=False, object_fit="cover", interactive=False,
                                 buttons=[], elem_id="ask-examples")
            preview = gr.Image(label="Image asked about", interactive=False, type="filepath", height=300,
                               elem_id="ask-preview", buttons=["fullscreen"])
            caption = gr.Markdown("Example images: synthetic studies from MedLN's generator (labelled SYNTHETIC), then "
                                  "real, permissively licensed files (pydicom, pydicom-data, scikit-image); see the "
                                  "About tab.", elem_classes="medln-hint", elem_id="ask-caption")
        with gr.Column(scale=7, min_width=420):
            with gr.Row():
                run = gr.Dropdown(run_choices(ctx, None), value=NO_RUN, label="Tuned model: a run of this session",
                                  elem_id="ask-run", scale=4)
                refresh = gr.Button("↻ Refresh runs", size="sm", scale=1, elem_id="ask-refresh")
            question = gr.Textbox(label="Question", placeholder="e.g. What imaging modality is this?",
                                  lines=2, max_lines=4, elem_id="ask-question")
            gr.Examples([[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="Example questions")
            with gr.Row():
                ask_btn = gr.Button("Ask", variant="primary", elem_id="ask-go")
                report_btn = gr.Button("Generate report", elem_id="ask-report")
            with gr.Row(equal_height=False, elem_id="ask-answers"):
                with gr.Column(min_width=200):
                    base_out = gr.Textbox(label="Base model", lines=5, max_lines=12, interactive=False,
                                          elem_id="ask-base", buttons=["copy"])
                    base_warn = gr.HTML(elem_id="ask-base-warning")
                with gr.Column(min_width=200):
                    tuned_out = gr.Textbox(label=tuned_label(ctx, None, None), lines=5, max_lines=12,
                                           interactive=False, elem_id="ask-tuned", buttons=["copy"])
                    tuned_warn = gr.HTML(elem_id="ask-tuned-warning")
            notice = gr.HTML(elem_id="ask-notice")
            gr.HTML(views.disclaimer_html())
    image_path = gr.State(None)

    cleared = ("", "", "", "")  # a new image (or a failed upload) clears the previous answers

    def on_upload(session, path):
        if not path:
            return (gr.skip(),) * 8
        try:
            png = prepare_image(ctx, session, path)
        except Exception as e:
            return (None, None, views.notice_html(user_message(e, doing="reading the image"), error=True), "",
                    *cleared)
        return str(png), served_copy(png), "", f"Your upload: `{Path(path).name}`", *cleared

    def on_example(evt: gr.SelectData):
        from medln.data.examples import reference_md

        path, text = examples[evt.index]
        refs = reference_md(path)  # what the right answers are, beside the base and tuned ones
        return path, path, None, "", f"Example: {text}" + (f"\n\n{refs}" if refs else ""), *cleared

    def on_refresh(session, current):
        choices = run_choices(ctx, session)
        ids = [v for _, v in choices]
        value = current if current in ids else ids[0]
        return gr.update(choices=choices, value=value), gr.update(label=tuned_label(ctx, session, value))

    def on_run(session, run_id):
        return gr.update(label=tuned_label(ctx, session, run_id))

    def make_answer(report: bool):
        @on_gpu(duration=120)
        def answer(session, path, q, run_id):
            base = tuned = ""
            try:
                warn = domain_warning(ctx, session, path, run_id)
            except Exception:  # the answer itself reports a bad image or run
                warn = ""
            yield ("", "", '<div class="medln-notice">Generating… (the base answer first, then the tuned one)</div>',
                   warn, warn)
            try:
                for base, tuned in answer_stream(ctx, session, path, q, run_id, report=report):
                    yield base, tuned, gr.skip(), gr.skip(), gr.skip()
            except Exception as e:
                yield base, tuned, views.notice_html(user_message(e, doing="generating"), error=True), gr.skip(), gr.skip()
                return
            note = "" if run_id else "Pick a run in <b>Tuned model</b> to compare (fine-tune one in the first tab)."
            yield gr.skip(), gr.skip(), f'<div class="medln-notice">{note}</div>' if note else "", gr.skip(), gr.skip()
        return answer

    answers = [base_out, tuned_out, base_warn, tuned_warn]
    image_file.change(on_upload, [ctx.session, image_file], [image_path, preview, notice, caption, *answers],
                      api_visibility="private", concurrency_limit=4)
    gallery.select(on_example, None, [image_path, preview, image_file, notice, caption, *answers],
                   api_visibility="private", queue=False)
    refresh.click(on_refresh, [ctx.session, run], [run, tuned_out], api_visibility="private", queue=False)
    run.change(on_run, [ctx.session, run], tuned_out, api_visibility="private", queue=False)
    common = dict(api_visibility="private", concurrency_id="gpu", concurrency_limit=1)
    outs = [base_out, tuned_out, notice, base_warn, tuned_warn]
    ask_btn.click(make_answer(False), [ctx.session, image_path, question, run], outs, **common)
    question.submit(make_answer(False), [ctx.session, image_path, question, run], outs, **common)
    report_btn.click(make_answer(True), [ctx.session, image_path, question, run], outs, **common)
    return AskTab(run, Handler(on_refresh, [ctx.session, run], [run, tuned_out]))

