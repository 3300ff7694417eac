"""The Gradio app: the only package of MedLN that imports gradio (docs/design.md, principle 5).

    from medln.ui import build_app
    demo = build_app()                  # Settings from the environment (see medln.ui.settings)
    queue(demo).launch(**launch_kwargs(demo))
"""

from .app import build_app, launch_kwargs, main, queue

__all__ = ["build_app", "launch_kwargs", "main", "queue"]
