"""The process cache of loaded base models, and base-vs-tuned answers from ONE copy of them.

Models cannot live in `gr.State` (Gradio deep-copies state per session) and loading a 7B
model per request is out of the question, so base models live here, keyed by how they
are built (medln.runs.BaseSpec: backbone, quant, projections kept unquantized, dtype), with
an LRU bound on their count and on their memory. A run's base comes from its recorded
BaseSpec (medln.runs.base_spec), so the app and the CLI rebuild it exactly as trained.
A run's adapter is attached to the shared base with peft
(`PeftModel.from_pretrained` / `load_adapter`, then `set_adapter`); the base answer runs the
same weights inside medln.adapters.adapter_off. Everything that
touches a cached model holds the entry's lock, so two sessions never switch adapters under
each other's feet.

peft keeps several adapters on one model only when they wrap the same modules (an
LNTuningLayer asked for an adapter it does not hold raises KeyError), so adapters with the
same (peft type, target modules) share the wrapper and are switched with set_adapter; a run
with a different signature unloads the wrapper (`unload()` restores the original modules)
and wraps again. Scope 'full' runs save whole checkpoints: they load as their own entry.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .adapters import adapter_off, is_peft_adapter, peft_targets
from .runs import BaseSpec, RunDir, attach_run, base_spec

log = logging.getLogger("medln.serve")

MAX_ADAPTERS_PER_MODEL = 8


@dataclass
class Entry:
    key: tuple
    backbone: object  # medln.backbones.Backbone; backbone.model is the unwrapped base
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: object = None  # the PeftModel wrapping backbone.model, or backbone.model itself
    signature: tuple | None = None  # (peft_type, target modules) of the current wrapper
    adapters: "OrderedDict[str, str]" = field(default_factory=OrderedDict)  # adapter dir -> name
    last_used: float = field(default_factory=time.time)
    users: int = 0  # requests holding it right now: never evicted while > 0

    def __post_init__(self):
        if self.model is None:
            self.model = self.backbone.model

    # ------------------------------------------------------------- adapters

    def use(self, adapter_dir: Path | None):
        """The model to generate with (call with `lock` held): the base (adapter disabled)
        when adapter_dir is None, else the run's adapter made active."""
        if adapter_dir is None:
            return self.model, adapter_off(self.model)
        adapter_dir = Path(adapter_dir).resolve()
        key = str(adapter_dir)
        if key not in self.adapters:
            self._attach(adapter_dir)
        self.adapters.move_to_end(key)
        name = self.adapters[key]
        self.model.set_adapter(name)
        if self.signature and self.signature[0] == "LN_TUNING":
            # The trained modules swapped in for the answer (exact, no copy, same tokens): no
            # peft dispatch per norm call during decoding (docs/merge_speed.py measures it).
            from medln.merge import swapped_in

            return self.model, swapped_in(self.model, name)
        return self.model, nullcontext()

    def _attach(self, adapter_dir: Path) -> None:
        from peft import PeftModel

        from medln.runs import check_adapter

        check_adapter(self.model, adapter_dir, family=self.backbone.family.name)  # before peft touches the model
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        signature = (config.get("peft_type"), peft_targets(adapter_dir))
        name = f"a{len(self.adapters)}_{int(time.time() * 1000) % 10**9}"
        if self.signature != signature:
            self._unwrap()
            self.model = PeftModel.from_pretrained(self.backbone.model, str(adapter_dir), adapter_name=name)
            self.signature = signature
        else:
            if len(self.adapters) >= MAX_ADAPTERS_PER_MODEL:
                _, oldest = self.adapters.popitem(last=False)
                self.model.delete_adapter(oldest)
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
        self.model.eval()
        self.adapters[str(adapter_dir)] = name

    def _unwrap(self) -> None:
        if self.model is not self.backbone.model:
            # peft: original modules back, no merge (a soft prompt never wrapped any module)
            self.backbone.model = self.model.get_base_model() if self.model.active_peft_config.is_prompt_learning \
                else _unload(self.model)
            self.model = self.backbone.model
        self.adapters.clear()
        self.signature = None


def _unload(peft_model):
    """The base model back from its peft wrapper, no merge. peft's IA3 refuses unload() on a
    4-bit model even when nothing is merged; there every tuner layer is replaced by the
    module it wraps, which is all unload(merge=False) does."""
    try:
        return peft_model.unload()
    except ValueError:
        from peft.tuners.tuners_utils import BaseTunerLayer

        model = peft_model.get_base_model()
        for name, module in list(model.named_modules()):
            if isinstance(module, BaseTunerLayer):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
        return model


def canonical(backbone: str) -> str:
    """One cache key per model however it is named: 'medln-tiny' and its bundled folder,
    a registry name and its hub id, a relative and an absolute path."""
    try:
        from medln.backbones import resolve

        resolved = resolve(backbone)
        return resolved.source + (f"@{resolved.revision}" if resolved.revision else "")  # two revisions, two models
    except Exception:  # unresolvable: loading will say why
        return backbone


def _model_bytes(model) -> int:
    try:
        return int(model.get_memory_footprint())
    except Exception:
        return sum(p.numel() * p.element_size() for p in model.parameters())


class ModelCache:
    """LRU of loaded models: at most `max_models` entries and (if > 0) `max_gb` of weights."""

    def __init__(self, *, max_models: int = 2, max_gb: float = 0.0, loader=None):
        self.max_models = max(1, max_models)
        self.max_bytes = int(max_gb * 1e9) if max_gb and max_gb > 0 else 0
        self._entries: "OrderedDict[tuple, Entry]" = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}
        self._loader = loader  # tests inject a fake; default medln.backbones.load_backbone

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[tuple]:
        return list(self._entries)

    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def entry(self, base: BaseSpec | str, *, load=None) -> Entry:
        """The cached base built as `base` says (a plain backbone name: its default build),
        loading it once if needed (`load`: a custom loader returning a Backbone). Callers wrap
        use in `hold(entry)` so the entry is not evicted mid-answer."""
        base = BaseSpec(base) if isinstance(base, str) else base
        backbone, quant, keep = base.backbone, base.quant, base.keep
        key = (canonical(backbone), quant, tuple(keep), base.effective_dtype())
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                self._entries.move_to_end(key)
                e.last_used = time.time()
                return e
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one loader per key; other sessions wait for it, not load twice
            with self._lock:
                e = self._entries.get(key)
                if e is not None:
                    return e
            bb = load() if load is not None else self._load(base)
            e = Entry(key, bb, _model_bytes(bb.model))
            with self._lock:
                self._entries[key] = e
                self._loading.pop(key, None)
                self._evict(keep_key=key)
            log.info("loaded %s (%s) into the model cache: %.2f GB; %d cached", backbone, quant,
                     e.nbytes / 1e9, len(self._entries))
            return e

    def _load(self, base: BaseSpec):
        if self._loader is not None:
            return self._loader(base.backbone, quant=base.quant, keep_full_precision=list(base.keep))
        return base.load()

    def _evict(self, keep_key: tuple) -> None:
        """Drop least-recently-used idle entries past the bounds (called with _lock held)."""
        def over() -> bool:
            return len(self._entries) > self.max_models or (
                self.max_bytes and sum(e.nbytes for e in self._entries.values()) > self.max_bytes)

        for key in list(self._entries):
            if not over():
                break
            e = self._entries[key]
            if key == keep_key or e.users > 0:
                continue
            del self._entries[key]
            log.info("evicted %s from the model cache", key)
        _free_memory()

    def hold(self, e: Entry):
        return _Hold(e)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        _free_memory()


class _Hold:
    def __init__(self, e: Entry):
        self.e = e

    def __enter__(self) -> Entry:
        with _count_lock:
            self.e.users += 1
        self.e.lock.acquire()
        return self.e

    def __exit__(self, *exc):
        self.e.lock.release()
        with _count_lock:
            self.e.users -= 1


_count_lock = threading.Lock()


def _free_memory() -> None:
    from .machine import free_memory

    free_memory()


# ------------------------------------------------------------------ runs -> cache keys


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
        return self.path / "adapter"

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
