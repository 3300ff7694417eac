"""The app under a soak (issue 25): N clients x M /ask calls while a fine-tune trains.

Starts `python -m medln app` as its own process (its own MEDLN_RUNS and MEDLN_CACHE, a small
queue and upload bound), warms it up (one /ask, one 2-step fine-tune: every model the soak
uses is loaded), reads the server's RSS ("before"), starts a fine-tune, lets N clients (N
sessions) each send M /ask calls one after another, samples RSS meanwhile ("peak"), waits for
the fine-tune, then reads RSS again ("after"). It passes when every call was answered or
refused with "queue is full", the fine-tune finished, the app still answers, and RSS after is
within --rss-tolerance of before.

    python bench/soak.py                      # 10 clients x 5 /ask, a 30-step ln fine-tune
    python bench/soak.py --json soak.json     # also the figures as JSON

Prints one line of figures; exit status 0 when it passes, 1 when not. CPU-only; minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "assets" / "sample" / "images" / "real-chest_xray_pa.png"


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its children, MB (Linux /proc)."""
    total, pids = 0, [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        except (OSError, AttributeError):
            pass
    return total / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, queue_size: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "MEDLN_RUNS": str(folder / "runs"), "MEDLN_CACHE": str(folder / "cache"),
           "MEDLN_QUEUE_SIZE": str(queue_size), "MEDLN_MAX_UPLOAD_MB": "5", "MEDLN_LOG": "WARNING",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's life)
    return subprocess.Popen([sys.executable, "-m", "medln", "app", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_up(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    end = time.time() + timeout
    while time.time() < end:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}) before it answered")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 600})


def poll(c, job_id: str, timeout: float = 1800) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = c.predict(job_id, api_name="/job")
        if job["state"] in ("done", "stopped", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not finish in {timeout:.0f} s")


def soak(url: str, server: subprocess.Popen, clients: int, asks: int, steps: int) -> dict:
    warm = client(url)
    warm.predict(str(IMAGE), "Is there an effusion?", "", api_name="/ask")
    job = warm.predict(steps=2, batch_size=1, eval_limit=1, api_name="/finetune")
    warm_job = poll(warm, job["job_id"])
    time.sleep(3)
    before = rss_mb(server.pid)

    trainer = client(url)
    job = trainer.predict(scope="ln", steps=steps, batch_size=1, eval_limit=1, api_name="/finetune")
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(rss_mb(server.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def one_client(i: int) -> list[str]:
        try:
            c = client(url)
        except Exception as e:  # connecting is part of the soak: counted, not raised
            return [f"error: connect: {type(e).__name__}: {e}"] * asks
        outcomes = []
        for k in range(asks):
            try:
                base, tuned, notice = c.predict(str(IMAGE), f"Is there an effusion? ({i}.{k})", "", api_name="/ask")
                ok = isinstance(base, str) and base.strip() and "not for clinical use" in notice.lower()
                outcomes.append("answered" if ok else f"error: odd answer {base!r} / {notice!r}")
            except Exception as e:
                text = str(e)
                outcomes.append("queue full" if re.search("queue is full", text, re.IGNORECASE)
                                else f"error: {type(e).__name__}: {text[:200]}")
        return outcomes

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = [o for per in pool.map(one_client, range(clients)) for o in per]
    wall = time.time() - t0
    done = poll(trainer, job["job_id"])
    stop.set()
    sampler.join()
    time.sleep(3)
    after = rss_mb(server.pid)
    alive = bool(trainer.predict(str(IMAGE), "Is the heart size normal?", "", api_name="/ask")[0])
    return {"clients": clients, "asks_each": asks, "answered": outcomes.count("answered"),
            "queue_full": outcomes.count("queue full"), "errors": [o for o in outcomes if o.startswith("error")],
            "soak_s": round(wall, 1), "finetune_state": done["state"], "finetune_steps": f"{done['step']}/{steps}",
            "finetune_error": done.get("error"), "warm_job": warm_job["state"],
            "rss_before_mb": round(before, 1), "rss_peak_mb": round(max(samples, default=before), 1),
            "rss_after_mb": round(after, 1), "rss_change": round(after / before - 1, 4), "alive": alive,
            "load_average": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--asks", type=int, default=5, help="/ask calls per client, one after another")
    p.add_argument("--steps", type=int, default=30, help="steps of the fine-tune trained meanwhile")
    p.add_argument("--queue-size", type=int, default=8, help="MEDLN_QUEUE_SIZE of the server")
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medln-soak-") as tmp:
        folder, port = Path(tmp), free_port()
        server = start_server(folder, args.queue_size, port)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_up(url, server)
            r = soak(url, server, args.clients, args.asks, args.steps)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log = (folder / "server.log").read_text(errors="replace")
        r["server_tracebacks"] = log.count("Traceback")
    r["passed"] = (not r["errors"] and r["answered"] + r["queue_full"] == r["clients"] * r["asks_each"]
                   and r["finetune_state"] == "done" and r["alive"] and r["server_tracebacks"] == 0
                   and abs(r["rss_change"]) <= args.rss_tolerance)
    print(f"soak: {r['clients']} clients x {r['asks_each']} /ask: {r['answered']} answered, {r['queue_full']} "
          f"refused (queue is full), {len(r['errors'])} errors in {r['soak_s']} s; fine-tune {r['finetune_state']} "
          f"({r['finetune_steps']}); RSS {r['rss_before_mb']:.0f} -> peak {r['rss_peak_mb']:.0f} -> after "
          f"{r['rss_after_mb']:.0f} MB ({r['rss_change']:+.1%}); server tracebacks {r['server_tracebacks']}; "
          f"alive {r['alive']}; load average {', '.join(f'{x:.1f}' for x in r['load_average'])}; "
          f"{'PASS' if r['passed'] else 'FAIL'}")
    for e in r["errors"][:5]:
        print("  ", e)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
