"""The process cache of loaded base models: one copy of each base, adapters switched on it
(the CLI's `ask` and the app share it; base-vs-tuned answers from it: medln.answers).

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
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .adapters import adapter_off, peft_targets
from .backbones import resolve
from .machine import free_memory
from .merge import swapped_in
from .methods import methods_of
from .runs import BaseSpec, check_adapter

log = logging.getLogger("medln.models")

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
        if self.signature and any(m.swaps_in for m in methods_of(self.signature[0])):
            # The trained modules swapped in for the answer (exact, no copy, same tokens): no
            # peft dispatch per norm call during decoding (docs/merge_speed.py measures it).
            return self.model, swapped_in(self.model, name)
        return self.model, nullcontext()

    def _attach(self, adapter_dir: Path) -> None:
        from peft import PeftModel

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
    free_memory()
