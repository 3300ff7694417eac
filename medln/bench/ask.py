"""`medln bench-ask`: a cold `medln ask --adapter RUN` against its peer, a minimal
transformers + peft script doing the same work (bench/ask_peer.py: the run's base loaded once,
its adapter attached to that copy, a greedy answer), each a fresh process.

The two run interleaved, in alternating order (medln first in even pairs, the peer first in
odd ones), so a load that drifts during the measurement hits both alike; the figure is the
median over pairs of each one's wall time and CPU time (user + system of the child), and
their ratios. On a shared machine wall time follows the other processes' load: CPU time is
the steadier figure, and the load averages before and after are printed beside both.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, _f, add_command

PEER = Path(__file__).resolve().parents[2] / "bench" / "ask_peer.py"


@dataclass
class BenchAskArgs:
    adapter: str = _f(help="a finished run folder (scope with a peft adapter, base in a local folder)")
    image: str = _f(help="image to ask about")
    question: str = _f("Is there an abnormality?", "the question both answer")
    pairs: int = _f(3, "interleaved (medln, peer) pairs; the figure is the median", min=1, max=50)
    json: bool = _f(False, "print the result as JSON")


def timed(cmd: list[str]) -> dict:
    """One cold process: wall seconds, CPU seconds (user + system), its answer (the first
    stdout line: `ask` prints its warnings after it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = proc.stdout.strip().splitlines()
    return {"wall_s": round(wall, 3), "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
            "answer": lines[0] if lines else ""}


def commands(args) -> tuple[list[str], list[str]]:
    """(medln ask, the peer) for this run: the peer gets the run's base folder, dtype and prompt."""
    from ..answers import require_run
    from ..backbones import FAMILIES, resolve
    from ..runs import RunDir

    run = require_run(args.adapter)
    resolved = resolve(run.base.backbone)
    if run.is_full or not resolved.local or run.base.quant != "none":
        raise ConfigError(f"{args.adapter}: the peer answers with a peft adapter on full-precision weights in a local "
                          "folder; this run is not one")
    family = RunDir(run.path).config()["family"]
    prompt = (resolved.spec.prompt if resolved.spec else None) or FAMILIES[family].prompt
    ask = [sys.executable, "-m", "medln", "ask", "--adapter", str(run.path), "--image", args.image,
           "--question", args.question]
    peer = [sys.executable, str(PEER), "--model", resolved.source, "--adapter", str(run.adapter_dir),
            "--image", args.image, "--question", args.question, "--prompt", prompt,
            "--dtype", run.base.effective_dtype()]
    return ask, peer


def bench_ask(args) -> dict:
    ask, peer = commands(args)
    load_before = os.getloadavg()
    rows = []
    for i in range(args.pairs):
        order = [("medln", ask), ("peer", peer)] if i % 2 == 0 else [("peer", peer), ("medln", ask)]
        row = {name: timed(cmd) for name, cmd in order}
        rows.append(row)
        print(f"pair {i + 1}: medln {row['medln']['wall_s']:.2f} s wall, {row['medln']['cpu_s']:.2f} s CPU; "
              f"peer {row['peer']['wall_s']:.2f} s wall, {row['peer']['cpu_s']:.2f} s CPU "
              f"({'medln' if i % 2 == 0 else 'peer'} first)", file=sys.stderr, flush=True)
    med = {who: {k: statistics.median(r[who][k] for r in rows) for k in ("wall_s", "cpu_s")} for who in ("medln", "peer")}
    return {
        "pairs": rows, "median": med,
        "ratio_wall": round(med["medln"]["wall_s"] / med["peer"]["wall_s"], 3),
        "ratio_cpu": round(med["medln"]["cpu_s"] / med["peer"]["cpu_s"], 3),
        "same_answer": all(r["medln"]["answer"].casefold() == r["peer"]["answer"].casefold() for r in rows),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # medln sets PASSIVE itself when unset; the peer does not
        "commands": {"medln": ask, "peer": peer},
    }


def cmd_bench_ask(args) -> None:
    result = bench_ask(args)
    if args.json:
        print(json.dumps(result))
        return
    m, p = result["median"]["medln"], result["median"]["peer"]
    print(f"medln ask vs peer, median of {len(result['pairs'])} interleaved pairs: wall {m['wall_s']:.2f} s vs "
          f"{p['wall_s']:.2f} s ({result['ratio_wall']:.2f}x), CPU {m['cpu_s']:.2f} s vs {p['cpu_s']:.2f} s "
          f"({result['ratio_cpu']:.2f}x); same answer: {'yes' if result['same_answer'] else 'NO'}; "
          f"load average {result['load_before']} before, {result['load_after']} after")


def add_cli(sub) -> None:
    add_command(sub, "bench-ask", BenchAskArgs, cmd_bench_ask,
                help="time a cold `medln ask --adapter RUN` against a minimal transformers+peft peer, interleaved")
