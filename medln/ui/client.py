"""Driving a served app through its named API (medln.ui.api) with gradio_client, as the GPU
proof's app part does. Here, beside the endpoints it calls, so the core imports no gradio package."""

from __future__ import annotations

import time

DONE = ("done", "stopped", "failed", "cancelled")


def connect(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def finetune(client, *, steps: int, quant: str, eval_limit: int, batch_size: int, timeout: float) -> tuple[dict, float]:
    """One /finetune polled through /job to its end (or `timeout`): the job's last state and the wall time."""
    t0 = time.perf_counter()
    job = client.predict(steps=steps, quant=quant, eval_limit=eval_limit, batch_size=batch_size, api_name="/finetune")
    end = time.time() + timeout
    while job["state"] not in DONE and time.time() < end:
        time.sleep(0.5)
        job = client.predict(job["job_id"], api_name="/job")
    return job, round(time.perf_counter() - t0, 2)


def ask(client, image: str, question: str, run_id: str) -> tuple[str, str, str, float]:
    """One /ask: base answer, tuned answer, the notice, and the wall time."""
    from gradio_client import handle_file

    t0 = time.perf_counter()
    base, tuned, notice = client.predict(handle_file(image), question, run_id, api_name="/ask")
    return base, tuned, notice, round(time.perf_counter() - t0, 2)
