"""Answers: base and tuned, side by side, streamed from one copy of the base weights (the
model cache, medln.models); and the finished runs a session can answer with.

A run's base comes from its recorded BaseSpec (medln.runs.base_spec), so the app and the CLI
rebuild it exactly as trained; its adapter is switched on in the cache. A full fine-tune saved
a whole checkpoint: it answers as a model of its own.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .adapters import is_peft_adapter
from .models import Entry, ModelCache
from .runs import BaseSpec, RunDir, attach_run, base_spec


# ------------------------------------------------------------------ the runs a session answers with


@dataclass(frozen=True)
class RunInfo:
    """What answering needs of a finished run folder: its id, label and how its base is built."""

    run_id: str
    path: Path
    base: BaseSpec  # the run's base, exactly as trained (medln.runs.base_spec)
    scope: str
    steps_done: int | None
    label: str

    @property
    def backbone(self) -> str:
        return self.base.backbone

    @property
    def quant(self) -> str:
        return self.base.quant

    @property
    def adapter_dir(self) -> Path:
        return RunDir(self.path).adapter_dir  # the run folder contract says where (medln.runs)

    @property
    def is_full(self) -> bool:
        return not is_peft_adapter(self.adapter_dir)


def run_info(path: Path) -> RunInfo | None:
    """A finished run (adapter + eval.json), or None."""
    run = RunDir(Path(path))
    if not run.complete:
        return None
    try:
        config = run.config()
        result = run.eval() or {}
        base = base_spec(run.path)
    except (OSError, ValueError):
        return None
    cfg = config.get("config", {})
    stamp = time.strftime("%H:%M", time.localtime(run.path.stat().st_mtime))
    steps = result.get("steps_done")
    label = (f"{cfg.get('scope', '?')} · {Path(config.get('backbone', cfg.get('backbone', '?'))).name} · "
             f"{steps if steps is not None else '?'} steps{' · 4-bit' if base.quant == '4bit' else ''}"
             f"{' (stopped)' if result.get('status') == 'stopped' else ''} · {stamp}")
    return RunInfo(run.path.name, run.path, base, cfg.get("scope", "?"), steps, label)


def require_run(path) -> RunInfo:
    """run_info for a folder the user named: a clear error when it is not a finished run."""
    info = run_info(Path(path))
    if info is None:
        raise FileNotFoundError(f"{path} is not a finished MedLN run folder (it needs config.json, adapter/ "
                                "and eval.json)")
    return info


def session_runs(session_dir: Path) -> list[RunInfo]:
    """This session's finished runs, newest first."""
    runs_dir = Path(session_dir) / "runs"
    if not runs_dir.is_dir():
        return []
    infos = [run_info(p) for p in runs_dir.iterdir() if p.is_dir()]
    return sorted((i for i in infos if i is not None), key=lambda i: i.path.stat().st_mtime, reverse=True)


# ------------------------------------------------------------------ answering


def stream_answers(cache: ModelCache, *, default_backbone: str, run: RunInfo | None, image, question: str,
                   max_new_tokens: int, with_base: bool = True) -> Iterator[tuple[str, str]]:
    """Yield (base answer so far, tuned answer so far): the base streams first, then the
    tuned one, both from the same cached weights. Without a run only the base answers;
    `with_base=False` skips the base answer of a run (the CLI's `ask --adapter`).

    The model work runs in one worker thread that takes and releases the entry's lock
    itself: Gradio may resume a generator on different threads, or never again when the
    browser goes away, so a lock held across `yield` could be left held forever."""
    updates: queue.Queue = queue.Queue()

    def produce(e: Entry, adapter_dir, slot: int):
        with cache.hold(e):
            for text in _stream(e, adapter_dir, image, question, max_new_tokens):
                updates.put((slot, text))

    def work():
        try:
            if run is None:
                produce(cache.entry(default_backbone), None, 0)
            elif run.is_full:
                # A full fine-tune replaced every weight: its checkpoint is a model of its own.
                base_e = cache.entry(run.base)
                if with_base:
                    produce(base_e, None, 0)

                def load_full():
                    import dataclasses

                    return dataclasses.replace(base_e.backbone, model=attach_run(base_e.backbone, run.path).eval())

                produce(cache.entry(BaseSpec(str(run.adapter_dir), "full"), load=load_full), None, 1)
            else:
                e = cache.entry(run.base)
                with cache.hold(e):  # base and tuned back to back: no other request in between
                    if with_base:
                        for text in _stream(e, None, image, question, max_new_tokens):
                            updates.put((0, text))
                    for text in _stream(e, run.adapter_dir, image, question, max_new_tokens):
                        updates.put((1, text))
        except BaseException as exc:  # handed to the consumer, raised there
            updates.put((-1, exc))
        finally:
            updates.put(None)

    threading.Thread(target=work, name="medln-answer", daemon=True).start()
    texts = ["", ""]
    while (item := updates.get(timeout=1800)) is not None:
        slot, value = item
        if slot < 0:
            raise value
        texts[slot] = value
        yield texts[0], texts[1]


def _stream(e: Entry, adapter_dir: Path | None, image, question: str, max_new_tokens: int) -> Iterator[str]:
    """Generate in a thread and yield the growing text (TextIteratorStreamer). The caller
    holds the entry's lock; we join the thread before returning, so the next request never
    finds the adapter switched mid-generation."""
    from transformers import TextIteratorStreamer

    from medln.prompts import generate

    model, ctx = e.use(adapter_dir)
    tokenizer = getattr(e.backbone.processor, "tokenizer", e.backbone.processor)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    result: dict = {}

    def work():
        try:
            with ctx:
                result["answers"] = generate(e.backbone, model, [image], [question],
                                             max_new_tokens=max_new_tokens, streamer=streamer)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
            streamer.end()

    thread = threading.Thread(target=work, name="medln-generate", daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text.strip()
    finally:
        thread.join()
    if "error" in result:
        raise result["error"]
    final = (result.get("answers") or [text])[0].strip()
    yield final or "(empty answer)"
