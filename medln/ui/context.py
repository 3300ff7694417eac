"""What every tab shares (the settings, the job registry and the model cache, one per process;
the per-browser session component), and what each tab's `build` returns: a small typed record
of the handlers app.py wires across tabs (polling, page load, the Ask tab's run list)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medln.models import ModelCache

from .jobs import JobManager
from .settings import Settings


@dataclass
class Handler:
    """An event handler and the components it reads and writes."""

    fn: Callable
    inputs: list
    outputs: list


@dataclass
class FinetuneTab:
    timer: object  # the gr.Timer that polls this session's jobs
    poll: Handler  # the fine-tune panel; its last output is the Ask tab's run list (app.py fills it)
    params: Handler  # the per-scope parameter counts (page load)
    estimate: Handler  # the estimated time under Start (page load)


@dataclass
class AskTab:
    run: object  # the run dropdown: which of this session's runs answers as "tuned"
    refresh: Handler  # re-read this session's finished runs


@dataclass
class CompareTab:
    poll: Handler  # the comparison panel
    params: Handler  # the trainable-parameter plot (page load)
    estimate: Handler  # the estimated time (page load)


@dataclass
class AppContext:
    settings: Settings
    jobs: JobManager
    cache: ModelCache
    session: object = None  # the gr.BrowserState holding this browser's session id
    finetune: FinetuneTab | None = None  # the tabs' records, set by build_app
    ask: AskTab | None = None
    compare: CompareTab | None = None

    @classmethod
    def create(cls, settings: Settings | None = None, **overrides) -> "AppContext":
        settings = settings or Settings.from_env(**overrides)
        settings.runs_root.mkdir(parents=True, exist_ok=True)
        from .eta import SpeedBook, book_path
        from .gpu import zerogpu

        # ZeroGPU: jobs run in the request that starts them (medln.ui.gpu says why)
        return cls(settings, JobManager(max_pending=settings.max_jobs, speed=SpeedBook(book_path()), inline=zerogpu()),
                   ModelCache(max_models=settings.max_models, max_gb=settings.max_model_gb))
