"""Serving the app for tests: on a free local port, with a gradio_client to talk to it.
Shared by the API, reliability, deployment, UX and browser tests (a plain module: the
test folder is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(demo, **launch_overrides):
    """`demo` queued and listening on 127.0.0.1 until the block ends."""
    from medln.ui import launch_kwargs, queue

    kwargs = {**launch_kwargs(demo), **launch_overrides}
    queue(demo).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield demo
    finally:
        demo.close()


def client(demo, **kwargs):
    from gradio_client import Client

    return Client(demo.local_url, verbose=False, download_files=False, **kwargs)


def poll(client, job_id, timeout=240):
    """The job record once the job has finished (done, stopped, failed or cancelled)."""
    end = time.time() + timeout
    job = None
    while time.time() < end:
        job = client.predict(job_id, api_name="/job")
        if job["state"] in ("done", "stopped", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {job}")
