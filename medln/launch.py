"""`medln app`: the Gradio app, the same one `python app.py` and the Space start (app.py is a
shim that calls `launch()`). Host and port: the flags, else GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT, else Gradio's own defaults; other settings: medln/ui/settings.py.

Order matters, so it lives here once: medln.storage.configure() before anything imports
huggingface_hub (which reads HF_HOME once, at import), and ZeroGPU's `spaces` before anything
initialises CUDA (medln/ui/gpu.py). Only then is medln.ui (gradio) imported.
"""

from __future__ import annotations

import dataclasses

from .config import ConfigError, _f, add_command


def launch(*, host: str | None = None, port: int | None = None, share: bool = False) -> None:
    from . import storage

    storage.configure()  # on a Space with persistent storage: runs and downloads under /data
    try:  # ZeroGPU: `spaces` must come before anything initialises CUDA
        import spaces  # noqa: F401
    except ImportError:
        pass
    try:
        from .ui import main
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("gradio", "gradio_client"):
            raise ConfigError(f"the app needs {e.name}, which is not installed: pip install 'medln[app]'") from None
        raise
    options = {k: v for k, v in {"server_name": host, "server_port": port}.items() if v}
    main(**options, **({"share": True} if share else {}))


def main() -> int:
    """app.py's entry point: the app, or a bad setting (MEDLN_*, a missing gradio) as one line
    on stderr and exit status 2, as `medln app` gives it."""
    import sys

    try:
        launch()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


@dataclasses.dataclass(kw_only=True)
class AppArgs:
    host: str = _f("", "address to listen on (0.0.0.0: every interface); default GRADIO_SERVER_NAME, else 127.0.0.1")
    port: int = _f(0, "port to listen on; default GRADIO_SERVER_PORT, else 7860 (the next free one)", min=0, max=65535)
    share: bool = _f(False, "also open a temporary public gradio.live link (Gradio's share tunnel)")


def cmd_app(args) -> None:
    launch(host=args.host or None, port=args.port or None, share=args.share)


def add_cli(sub) -> None:
    add_command(sub, "app", AppArgs, cmd_app, quiet=False,  # the app logs as medln.ui.app sets up
                help="start the Gradio app (the same as app.py and the Space)")
