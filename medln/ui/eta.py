"""How long a job will take, before it starts and while it runs: from this server's recorded
speed (every finished job records its seconds per step and per scored item), else from the
speed recorded with the committed comparison of the bundled model (docs/compare-medln-tiny).
No gradio here: plain functions, tested as such.

The book is a small JSON file in $MEDLN_CACHE (default ~/.cache/medln/speed.json), keyed by
backbone | scope | quant | batch size; a restart keeps what the server learned.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "compare-medln-tiny" / "results.json"


@dataclass
class Speed:
    step_s: float  # one optimizer step at this batch size
    item_s: float | None  # scoring: seconds per scored item (generation + metrics)
    load_s: float | None  # loading the model and the data before the first step
    source: str  # where the figures come from, shown beside the estimate


def book_path() -> Path:
    return Path(os.environ.get("MEDLN_CACHE") or Path.home() / ".cache" / "medln") / "speed.json"


def key(backbone: str, scope: str, quant: str, batch: int) -> str:
    return f"{Path(backbone).name}|{scope}|{quant}|{int(batch)}"


class SpeedBook:
    """This server's measured speeds; thread-safe, written atomically."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else book_path()
        self._lock = threading.Lock()
        try:
            self._data: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._data = {}

    def record(self, backbone: str, scope: str, quant: str, batch: int, *, step_s: float | None,
               item_s: float | None = None, load_s: float | None = None) -> None:
        if not step_s:
            return
        with self._lock:
            entry = self._data.setdefault(key(backbone, scope, quant, batch), {})
            entry["step_s"] = round(step_s, 5)
            if item_s:
                entry["item_s"] = round(item_s, 5)
            if load_s is not None and load_s >= 0:
                entry["load_s"] = round(load_s, 2)
            # when, and how busy the machine was: the estimate says what it rests on
            entry["at"], entry["load"] = round(time.time()), round(os.getloadavg()[0], 1)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
                tmp.replace(self.path)
            except OSError:  # a read-only disk: the estimates stay in memory
                pass

    def lookup(self, backbone: str, scope: str, quant: str, batch: int) -> Speed | None:
        """Exact match; else the same backbone, scope and quant at another batch size (step
        time scaled by the batch ratio); else the committed figures for the bundled model."""
        name = Path(backbone).name
        with self._lock:
            exact = self._data.get(key(backbone, scope, quant, batch))
            if exact:
                return Speed(exact["step_s"], exact.get("item_s"), exact.get("load_s"), "measured on this server" + when(exact))
            item_s = next((v["item_s"] for k, v in self._data.items() if k.startswith(name + "|") and v.get("item_s")),
                          None)
            for k, v in self._data.items():
                b, s, q, n = k.split("|")
                if (b, s, q) == (name, scope, quant):
                    return Speed(v["step_s"] * batch / int(n), v.get("item_s") or item_s, v.get("load_s"),
                                 f"measured on this server at batch {n}{when(v)}, scaled")
            mine = [(k.split("|"), v) for k, v in self._data.items() if k.startswith(name + "|")]
        return calibrated(committed(name, scope, quant, batch, item_s), mine, quant)


def calibrated(speed: Speed | None, mine: list, quant: str) -> Speed | None:
    """A committed step time, scaled by how this server's own speed on another scope compares
    with the record's for that scope (the record was taken on another, often busier, machine)."""
    if speed is None:
        return None
    for (name, scope, q, n), v in mine:
        ref = committed(name, scope, quant, int(n)) if q == quant else None
        if ref is not None and ref.step_s:
            f = v["step_s"] / ref.step_s
            return Speed(speed.step_s * f, speed.item_s, v.get("load_s", speed.load_s),
                         speed.source.replace("; this server may differ", "") +
                         f", scaled by {f:.2f}: this server's {scope} step time against the record's{when(v)}")
    return speed


def when(entry: dict) -> str:
    """", 12 min ago at load 3.1": when a book entry was measured (older books lack it)."""
    if not entry.get("at"):
        return ""
    ago = max(0.0, time.time() - entry["at"])
    text = f"{ago / 60:.0f} min ago" if ago < 5400 else f"{ago / 3600:.0f} h ago" if ago < 172800 else \
        f"{ago / 86400:.0f} days ago"
    return f", {text}" + (f" at load {entry['load']}" if entry.get("load") is not None else "")


def committed(name: str, scope: str, quant: str, batch: int, item_s: float | None = None) -> Speed | None:
    """The bundled model's speed recorded with docs/compare-medln-tiny (another machine: a rough guide)."""
    try:
        res = json.loads(COMMITTED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if Path(str(res.get("backbone", ""))).name != name:
        return None
    row = next((r for r in res.get("rows", []) if r.get("scope") == scope and r.get("step_s")), None)
    if row is None:
        return None
    run_batch = int((res.get("config") or {}).get("batch_size") or batch)
    if item_s is None and row.get("wall_s") and row.get("train_s"):
        # wall - train = loading + scoring the tuned model on both splits (base scored once, earlier)
        n_items = sum((row.get(k) or {}).get("n", 0) + (row.get(k) or {}).get("n_report", 0)
                      for k in ("tuned", "ood_tuned"))
        item_s = (row["wall_s"] - row["train_s"]) / n_items if n_items else None
    machine = res.get("machine") or {}
    cpu, threads = machine.get("cpus") or machine.get("cpu_count"), machine.get("threads")
    where = f"recorded on a {cpu}-core CPU" if cpu else "recorded on another machine"
    if cpu and threads and threads < cpu:
        where = f"recorded on {threads} thread{'s' * (threads > 1)} of a {cpu}-core CPU"
    note = "" if res.get("quant") == quant else f" at {res.get('quant')} weights"
    step_s = row["step_s"] * batch / run_batch
    # The sweep ran one thread per lane (two side by side); a lone job here uses the threads it has,
    # up to the record's own cores (nothing was measured past them), and fewer threads cost time.
    # Linear in threads: on the default run it was still 13 % high, unscaled 2.1x (bench/README.md).
    here = cpu_threads()
    used = min(here, cpu) if here and cpu else None
    if threads and used and used != threads:
        step_s *= threads / used
        note += f", scaled to {used} thread{'s' * (used > 1)} here"
    return Speed(step_s, item_s, None, f"{where}{note} (docs/compare-medln-tiny); this server may differ")


def cpu_threads() -> int | None:
    """The torch threads a job here trains with; None where jobs run on a GPU (CUDA, Apple's MPS,
    a ZeroGPU Space whose main process sees no CUDA): a CPU record says nothing there."""
    import torch

    from .gpu import zerogpu

    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or zerogpu() or (mps is not None and mps.is_available()):
        return None
    return torch.get_num_threads()


@dataclass
class Estimate:
    train_s: float
    score_s: float | None
    load_s: float
    source: str

    @property
    def total_s(self) -> float:
        return self.load_s + self.train_s + (self.score_s or 0.0)


def estimate(speed: Speed | None, steps: int, n_items: int | None) -> Estimate | None:
    if speed is None:
        return None
    score = speed.item_s * n_items if speed.item_s and n_items else None
    return Estimate(speed.step_s * steps, score, speed.load_s or 0.0, speed.source)


def scored_items(data: str, splits: list[str], limit: int) -> int | None:
    """How many items base and tuned are scored on: min(limit, split size) per split, twice.
    Known for the bundled sample; for other data, 2 x limit per split (None without a limit)."""
    total = 0
    for split in filter(None, splits):
        size = None
        if data == "sample":
            from medln.data.bundled import ASSETS, SPLIT_FILES

            try:
                with open(ASSETS / SPLIT_FILES[split], encoding="utf-8") as f:
                    size = sum(1 for line in f if line.strip())
            except (OSError, KeyError):
                size = None
        if size is None and not limit:
            return None
        total += 2 * (min(limit, size) if limit and size is not None else (limit or size))
    return total


def record_job(book: SpeedBook, job) -> None:
    """After a job ends: its median step time, its loading time and its scoring time per item."""
    cfg = job.config or {}
    if not cfg or not job.records:
        return
    steps = [r["step_s"] for r in job.records if r.get("step_s")]
    step_s = statistics.median(steps[1:] or steps) if steps else None
    if job.kind == "finetune":
        load_s = (job.first_step_at - job.started - steps[0]) if job.first_step_at and job.started and steps else None
        item_s = None
        result = job.result or {}
        cached = set(result.get("base_cached") or ())  # base answers read from the cache: not generated
        n_items = sum(m.get("n", 0) + m.get("n_report", 0) for side in ("base", "tuned")
                      for split, m in (result.get(side) or {}).items() if not (side == "base" and split in cached))
        scoring_s = result.get("eval_s") or ((job.finished - job.last_step_at) if job.last_step_at and job.finished else None)
        if scoring_s and n_items and result.get("status") == "completed":
            item_s = scoring_s / n_items
        book.record(cfg["backbone"], cfg["scope"], cfg["quant"], cfg["batch_size"], step_s=step_s, item_s=item_s,
                    load_s=load_s)
    else:  # a comparison: one step time per scope that ran
        for row in (job.result or {}).get("rows") or job.rows:
            if row.get("step_s") and not row.get("skipped"):
                book.record(cfg["backbone"], row["scope"], cfg["quant"], cfg["batch_size"], step_s=row["step_s"])
