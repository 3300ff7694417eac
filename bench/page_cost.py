"""What an open Fine-tune page costs a running job, and what one poll of it costs the server.

    python bench/page_cost.py [--steps 30] [--pairs 2] [--calls 50] [--client]

The app runs in this process on a free port (the bundled medln-tiny, full-precision weights,
batch 4, 8 items scored per split). Each pair starts two fine-tunes from a headless Chromium
(Debian's `chromium`, driven by Playwright): one with the page kept open until the job ends,
one with the browser closed right after Start (the job runs on, server-side); their order
alternates between pairs. With --client each pair has a third job, started and watched by an
API client in another process (gradio_client, its own connection and port): it polls /job
once per poll interval as an open page's timer does, with no browser on the machine, so the
server's share of an open page is told apart from the browser's. The figure is each job's
median seconds per training step (steps after the first two). Then the poll handler is
called directly on the last job, as a tick after a new loss point, after a status change
only, and with nothing changed (what most ticks of an open page cost), timed per call in
wall and thread CPU time.
Prints JSON; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # appserver: the tests' way of serving the app


def start_job(pw, url: str, steps: int, keep_open: bool, chromium: str) -> None:
    browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#ft-start", timeout=300_000)
    quant = page.locator("#ft-quant input")
    if quant.is_checked():
        quant.uncheck()  # full-precision weights: CPU 4-bit is another question
    page.locator("#ft-steps input").fill(str(steps))
    page.locator("#ft-batch input").fill("4")
    page.locator("#ft-start").click()
    page.wait_for_selector("#ft-status .medln-state", timeout=300_000)
    if keep_open:
        page.wait_for_selector("#ft-status .medln-done", timeout=3_600_000)
    browser.close()


CLIENT = """
import sys, time
from gradio_client import Client
url, steps, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = Client(url, verbose=False, download_files=False)
job = c.predict(backbone="medln-tiny", scope="ln", steps=steps, batch_size=4, quant="none", eval_limit=8,
                api_name="/finetune")
while job["state"] not in ("done", "stopped", "failed", "cancelled"):
    time.sleep(every)
    job = c.predict(job["job_id"], api_name="/job")
print(job["state"])
"""


def client_job(url: str, steps: int, every: float) -> None:
    """A fine-tune started and polled over HTTP by another process (CLIENT)."""
    import subprocess

    subprocess.run([sys.executable, "-c", CLIENT, url, str(steps), str(every)], check=True, timeout=3600,
                   stdout=subprocess.DEVNULL)


def wait_done(ctx, n_jobs: int) -> list:
    while True:
        jobs = [j for js in ctx.jobs._jobs.values() for j in js]
        if len(jobs) >= n_jobs and not any(j.active for j in jobs):
            return sorted(jobs, key=lambda j: j.created)
        time.sleep(1)


def step_s(job) -> float:
    times = [r["step_s"] for r in job.records if r.get("step_s")]
    return statistics.median(times[2:] or times)


def poll_cost(ctx, poll, job, calls: int) -> dict:
    """Per call, with what the page last drew (on_poll's `last`: job, version, loss points,
    state) set as an open page's timer would have it: "new_point" is a training job's tick
    after a new step (status and loss figure), "status_only" one after a change without a new
    point (scoring), "unchanged" one with nothing new, what most ticks cost. The finished job
    is shown as still training (no download zip, which only the first tick after the end makes)."""
    session = next(s for s, js in ctx.jobs._jobs.items() if job in js)
    out = {}
    result, state = job.result, job.state
    job.result, job.state = None, "training"
    n, v = len(job.records), job.version
    cases = {"new_point": (job.id, v - 1, n - 1, job.state), "status_only": (job.id, v - 1, n, job.state),
             "unchanged": (job.id, v, n, job.state)}
    for name, last in cases.items():
        walls, cpus = [], []
        for _ in range(calls):
            w, c = time.perf_counter(), time.thread_time()
            poll(session, last)
            walls.append(time.perf_counter() - w)
            cpus.append(time.thread_time() - c)
        out[name] = {"wall_ms": round(1000 * statistics.median(walls), 3), "cpu_ms": round(1000 * statistics.median(cpus), 3)}
    job.result, job.state = result, state
    out["records"] = n
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--client", action="store_true", help="a third job per pair, watched by an API client")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from appserver import launched
    from medln.ui import build_app

    chromium = os.environ.get("MEDLN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    load_before = os.getloadavg()
    demo = build_app(runs_root=Path(tempfile.mkdtemp(prefix="page-cost-")), default_backbone="medln-tiny", eval_limit=8)
    rows = []
    with launched(demo), sync_playwright() as pw:
        ctx = demo.medln
        modes = ["open", "closed"] + (["client"] if args.client else [])
        for i in range(args.pairs):
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:  # each mode first in turn
                if mode == "client":
                    client_job(demo.local_url, args.steps, ctx.settings.poll_s)
                else:
                    start_job(pw, demo.local_url, args.steps, mode == "open", chromium)
                job = wait_done(ctx, len(rows) + 1)[-1]
                rows.append({"page": mode, "step_s": round(step_s(job), 4),
                             "state": job.state, "load": round(os.getloadavg()[0], 2)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        cost = poll_cost(ctx, ctx_poll(demo), wait_done(ctx, len(rows))[-1], args.calls)
    med = {k: statistics.median(r["step_s"] for r in rows if r["page"] == k) for k in modes}
    ratios = {f"{k}_over_closed": round(med[k] / med["closed"], 3) for k in modes if k != "closed"}
    print(json.dumps({"jobs": rows, "median_step_s": med, **ratios,
                      "poll": cost, "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()]}, indent=1))


def ctx_poll(demo):
    return demo.medln.finetune.poll.fn


if __name__ == "__main__":
    main()
