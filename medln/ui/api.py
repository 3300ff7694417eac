"""Named API endpoints for scripts (gradio_client), registered with `gr.api` from typed
functions. A client's session is its connection's session_hash: the runs it fine-tunes are
its own, and /ask and /report find them by run id.

    /param_counts(backbone="medln-tiny", quant="none")            -> [{scope, trainable, total, percent, ...}]
    /finetune(backbone, scope="ln", steps=..., lr=None, batch_size=None, quant="none",
              data="sample", eval_limit=..., dataset_file=None,
              precision="auto")                                    -> job record {job_id, run_id, state, ...}
    /job(job_id="")                                                -> job record (latest job if no id)
    /stop(job_id="")                                               -> job record
    /runs()                                                        -> [{run_id, scope, backbone, label}]
    /ask(image, question, run_id="")                               -> (base answer, tuned answer, notice)
    /report(image, run_id="")                                      -> (base report, tuned report, notice)

The notice is what the page shows beside the answers: the demo model's warning when the image
is not of its synthetic kind (with the measured reason), then the not-for-clinical-use line.

Errors come back as gradio_client AppError with the same one-line message the UI shows.
"""


import gradio as gr
from gradio.data_classes import FileData

from medln import DISCLAIMER
from medln import ASSETS

from medln.config import TrainConfig
from medln.userfiles import short

from . import ask as ask_tab
from . import finetune as ft
from .context import AppContext
from .errors import UserError, user_message
from .gpu import on_gpu
from .settings import api_session


def _uploaded(value, what: str) -> str:
    """The server path of a file the client uploaded (handle_file). A bare path string is
    accepted only inside Gradio's upload folder or the bundled sample images: a client must
    not make the server read arbitrary files."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise UserError(f"{what}: no file given (use gradio_client.handle_file(path))")
    if not (is_in_or_equal(path, get_upload_folder()) or is_in_or_equal(path, str(ASSETS / "sample" / "images"))):
        raise UserError(f"{what}: not an uploaded file; pass it with gradio_client.handle_file(path)")
    return str(path)


def register(ctx: AppContext) -> None:
    """Add the endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""

    s = ctx.settings
    D = TrainConfig()  # every default the endpoints show is TrainConfig's

    def fail(e: Exception, doing: str):
        raise gr.Error(user_message(e, doing=doing), print_exception=False) from None

    def session_of(request: gr.Request | None) -> str:
        return api_session(getattr(request, "session_hash", None))

    def param_counts(backbone: str = s.default_backbone, quant: str = D.quant) -> list[dict]:
        """Per-scope trainable parameters of a backbone, from its config.json (nothing loads)."""
        from medln.accounting import param_rows

        try:
            backbone = s.app_backbone(backbone)  # only what a visitor may name is read
            TrainConfig(backbone=backbone, quant=quant).validate()  # quant's values: TrainConfig's own
            return param_rows(backbone, quant=quant)
        except Exception as e:
            fail(e, "counting parameters")

    def finetune(backbone: str = s.default_backbone, scope: str = D.scope, steps: int = D.steps,
                 lr: float | None = D.lr, batch_size: int | None = None, quant: str = D.quant,
                 data: str = "sample", eval_limit: int = s.eval_limit, dataset_file: FileData | None = None,
                 precision: str = D.precision, request: gr.Request = None) -> dict:
        """Start a fine-tune in the background; poll /job for progress (on a ZeroGPU Space the call
        returns when the job has finished). `data`: "sample", "hf:DATASET_ID", or pass `dataset_file`
        (a .zip or .jsonl, via handle_file). `precision`: auto, bf16, fp16 or fp32."""
        try:
            if dataset_file is not None:
                source, upload, hub = "upload", _uploaded(dataset_file, "dataset_file"), ""
            elif data.startswith("hf:"):
                source, upload, hub = "hub", None, data
            elif data == "sample":
                source, upload, hub = "sample", None, ""
            else:
                raise UserError("data must be 'sample' or 'hf:DATASET_ID' (or upload dataset_file)")
            fields = {"backbone": backbone, "scope": scope, "quant": quant, "steps": steps, "lr": lr,
                      "batch_size": batch_size, "eval_limit": eval_limit, "precision": precision}
            job = ft.start(ctx, session_of(request), fields, source, upload, hub)
            return job.snapshot()
        except Exception as e:
            fail(e, "starting the fine-tune")

    def job(job_id: str = "", request: gr.Request = None) -> dict:
        """A job's record: state, step / steps, loss, ETA, losses, and at the end base/tuned metrics and run_id."""
        session = session_of(request)
        j = ctx.jobs.get(session, job_id) if job_id else ctx.jobs.latest(session)
        if j is None:
            raise gr.Error(f"no job {short(job_id)} in this session" if job_id else "no job in this session yet",
                           print_exception=False)  # an ordinary answer, not a server fault: no traceback in the log
        return j.snapshot()

    def stop(job_id: str = "", request: gr.Request = None) -> dict:
        """Stop a job within one step; the adapter trained so far is kept and scored."""
        session = session_of(request)
        j = ctx.jobs.stop(session, job_id or None)
        if j is None:
            raise gr.Error("nothing to stop in this session", print_exception=False)
        return j.snapshot()

    def runs(request: gr.Request = None) -> list[dict]:
        """This session's finished runs (newest first): ids to pass to /ask and /report."""
        from medln.answers import session_runs

        return [{"run_id": r.run_id, "scope": r.scope, "backbone": r.backbone, "quant": r.quant,
                 "steps_done": r.steps_done, "label": r.label}
                for r in session_runs(s.session_dir(session_of(request)))]

    def ask(image: FileData, question: str, run_id: str = "", request: gr.Request = None) -> tuple[str, str, str]:
        """Answer a question about an image: (base answer, tuned answer of run_id or "" without a run,
        notice: the demo model's out-of-domain warning when it applies, and the not-for-clinical-use line)."""
        yield from _answers(image, question, run_id, request, report=False)

    def report(image: FileData, run_id: str = "", request: gr.Request = None) -> tuple[str, str, str]:
        """Generate a report for an image: (base report, tuned report of run_id or "" without a run, notice
        as /ask's)."""
        yield from _answers(image, "", run_id, request, report=True)

    @on_gpu(duration=120)
    def gpu_answers(session: str, png: str, question: str, run_id: str | None, report: bool):
        """The GPU part of /ask and /report, called from the request (ZeroGPU: plain arguments)."""
        yield from ask_tab.answer_stream(ctx, session, png, question, run_id, report=report)

    def _answers(image, question, run_id, request, *, report: bool):
        try:
            path = _uploaded(image, "image")
            png = ask_tab.prepare_image(ctx, session_of(request), path)
            # What the page says beside the answers travels with them: an API answer is an answer surface too.
            warn = ask_tab.domain_warning_text(ctx, session_of(request), png, run_id or None)
            notice = " ".join(x for x in (warn, DISCLAIMER) if x)
            for base, tuned in gpu_answers(session_of(request), str(png), question, run_id or None, report):
                yield base, tuned, notice
        except Exception as e:
            fail(e, "generating")

    gr.api(param_counts, api_name="param_counts", concurrency_limit=4)
    gr.api(finetune, api_name="finetune", concurrency_limit=4)
    gr.api(job, api_name="job", concurrency_limit=None, queue=False)
    gr.api(stop, api_name="stop", concurrency_limit=None, queue=False)
    gr.api(runs, api_name="runs", concurrency_limit=4)
    gr.api(ask, api_name="ask", concurrency_id="gpu", concurrency_limit=1)
    gr.api(report, api_name="report", concurrency_id="gpu", concurrency_limit=1)
