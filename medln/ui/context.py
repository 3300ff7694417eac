"""What every tab shares: the settings, the job registry and the model cache (one per
process), plus the per-browser session component. Built once in medln.ui.app.build_app."""

from __future__ import annotations

from dataclasses import dataclass, field

from .jobs import JobManager
from medln.models import ModelCache
from .settings import Settings


@dataclass
class AppContext:
    settings: Settings
    jobs: JobManager
    cache: ModelCache
    session: object = None  # the gr.BrowserState holding this browser's session id
    components: dict = field(default_factory=dict)  # elem name -> component, for cross-tab wiring

    @classmethod
    def create(cls, settings: Settings | None = None, **overrides) -> "AppContext":
        settings = settings or Settings.from_env(**overrides)
        settings.runs_root.mkdir(parents=True, exist_ok=True)
        from .eta import SpeedBook, book_path
        from .gpu import zerogpu

        # ZeroGPU: jobs run in the request that starts them (medln.ui.gpu says why)
        return cls(settings, JobManager(max_pending=settings.max_jobs, speed=SpeedBook(book_path()), inline=zerogpu()),
                   ModelCache(max_models=settings.max_models, max_gb=settings.max_model_gb))
