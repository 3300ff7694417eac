"""Merge a run's adapter into the base weights and save a standalone model.

peft's `merge_and_unload()` folds each adapter into the weights it modifies; each tuning
method says how (medln.methods, `Method.fold`: LN tuning swaps the trained copy in, LoRA adds
B·A·alpha/r, IA³ scales W by l, BitFit adds Δb), and medln-merged.json records it. The
result is a plain transformers checkpoint (safetensors + processor) that loads anywhere,
needs neither peft nor MedLN, and answers as the adapter did (tests/test_inspect_merge.py compares
greedy generations). A soft prompt (`prompt`) is extra input, not a weight change: there is
nothing to merge. A `full` run already holds whole weights.

The base is loaded unquantized (fp32 on a CPU, the backbone's dtype on a GPU): merging into
4-bit weights would re-quantize them. A run trained on a 4-bit base therefore merges into the
original full-precision weights, and its merged answers are those of its adapter on the
unquantized base, not bit-for-bit those of the 4-bit model (said in the command's output).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .adapters import is_peft_adapter, read_adapter_config
from .backbones import resolve
from .config import _f, add_command
from .methods import METHODS, ScopeError, get_scope
from .runs import RunDir, RunError, attach_run, base_spec
from .storage import give_default_modes, write_json_atomic

MERGED_JSON = "medln-merged.json"
# peft types whose adapters change no weight: the methods' own reasons, and peft's prefix
# tuning (not a MedLN scope, but an adapter of that kind may be handed to merge)
NOT_MERGEABLE = {**{m.peft_type: f"{m.no_weights}: nothing to merge" for m in METHODS.values() if m.no_weights},
                 "PREFIX_TUNING": "prefix tuning adds key/value prefixes, not a change to weights: nothing to merge"}


def merge_model(model):
    """The unwrapped base module with the active adapter folded in (peft merge_and_unload)."""
    peft_type = str(getattr(model.active_peft_config, "peft_type", "")).split(".")[-1]
    if peft_type in NOT_MERGEABLE:
        raise ScopeError(NOT_MERGEABLE[peft_type])
    return model.merge_and_unload()


@contextmanager
def swapped_in(model, adapter: str | None = None):
    """For the duration, the trained copies of an LN-tuning adapter (ln*, attn, ffn) sit in the
    model in place of peft's wrappers: the tuned answer runs the plain modules, at base speed,
    and the wrappers (with the frozen originals) come back afterwards. A swap of module
    references: exact, no copy, nothing of the shared base weights is modified. (peft's own
    merge_adapter() swaps inside the wrapper, whose dispatch per call is the cost.) Adapters of
    other kinds run as they are. The caller holds the model's lock."""
    from peft.tuners.ln_tuning.layer import LNTuningLayer

    adapter = adapter or getattr(model, "active_adapter", "default")
    swaps = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, LNTuningLayer) and adapter in mod.ln_tuning_layers and not mod.merged:
            parent_name, _, child = name.rpartition(".")
            swaps.append((model.get_submodule(parent_name), child, mod))
    try:
        for parent, child, wrapper in swaps:
            setattr(parent, child, wrapper.ln_tuning_layers[adapter])
        yield model
    finally:
        for parent, child, wrapper in swaps:
            setattr(parent, child, wrapper)


def check_merge_out(out: Path, run: RunDir, base_source: str | None = None, *, in_run: bool = False) -> None:
    """Refuse an --out that would lose or mix files, before anything loads: one that is a
    file or lies under one, a folder that is not empty, or one inside the run itself (or
    inside the local base model it would be read from)."""
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.is_symlink() and parent == out:
            raise RunError(f"--out {out} is a symbolic link; give a new folder")
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"--out {out}: {parent} is a file, not a folder")
            break
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty; choose another --out (nothing in it is replaced)")
    resolved = out.resolve()
    inside = [("the run", run.path)] * (not in_run) + ([("the base model", Path(base_source))] if base_source else [])
    for what, folder in inside:
        if resolved == folder.resolve() or folder.resolve() in resolved.parents:
            raise RunError(f"--out {out} is inside {what} ({folder}); the merged model goes in a folder of its own")


def merge_run(run_path, out, *, device: str | None = None, in_run: bool = False) -> dict:
    """Write a standalone merged model of a finished run to `out`; returns what was written.
    `in_run`: `out` may lie inside the run folder (the app keeps RUN/merged; the CLI never does).
    The model is built in a fresh, uniquely named scratch folder beside `out` (removed on
    every exit path) and renamed into place whole: `out` holds a complete model or nothing."""
    run = RunDir(Path(run_path))
    if not run.path.is_dir():
        raise RunError(f"{run.path}: not a folder (merge takes a run folder)")
    config = run.config()
    if not run.adapter_dir.is_dir():
        raise FileNotFoundError(f"{run.path} has no adapter/ folder (not a finished MedLN run?)")
    if not is_peft_adapter(run.adapter_dir):
        raise ScopeError(f"{run.path}: scope 'full' already saved whole weights in {run.adapter_dir}; load that folder")
    peft_type = read_adapter_config(run.adapter_dir)["peft_type"]
    if peft_type in NOT_MERGEABLE:
        raise ScopeError(f"{run.path}: {NOT_MERGEABLE[peft_type]}")
    spec = base_spec(run.path)
    try:
        resolved = resolve(spec.backbone)
    except Exception:  # loading says why
        resolved = None
    out = Path(out)
    check_merge_out(out, run, resolved.source if resolved is not None and resolved.local else None, in_run=in_run)
    cfg = config.get("config", {})
    t0 = time.perf_counter()
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".merging", dir=out.parent))
    try:
        # Unquantized even for a 4-bit run: merging into NF4 weights would re-quantize them.
        bb = dataclasses.replace(spec, quant="none", keep=()).load(device)
        merged = merge_model(attach_run(bb, run.path))
        merged.save_pretrained(tmp, safe_serialization=True)
        bb.processor.save_pretrained(tmp)
        info = {"run": str(run.path), "scope": cfg.get("scope"), "peft_type": peft_type, "source": spec.backbone,
                "trained_quant": cfg.get("quant", "none"),
                "fold": get_scope(cfg["scope"]).method.fold if cfg.get("scope") else None,
                "note": ("trained on a 4-bit base: merged into the unquantized weights, so answers are the adapter's "
                         "on the full-precision base" if cfg.get("quant") == "4bit" else "answers equal the adapter's"),
                "dtype": str(next(merged.parameters()).dtype).replace("torch.", ""),
                "seconds": round(time.perf_counter() - t0, 2)}
        write_json_atomic(tmp / MERGED_JSON, info)
        from .card import merged_card

        merged_card(config, run.eval() or {}, info).save(tmp / "README.md")
        give_default_modes(tmp)
        probe = tmp / ".mode-probe"  # mkdtemp makes it 0700: the model folder gets the mode any new folder gets
        probe.mkdir()
        tmp.chmod(probe.stat().st_mode & 0o777)
        probe.rmdir()
        check_merge_out(out, run, in_run=in_run)  # still new or empty (rename replaces an empty folder only)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # parents this call created, now empty again
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    info["out"] = str(out)
    info["bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return info


def cmd_merge(args) -> None:
    info = merge_run(args.run, args.out)
    if args.json:
        print(json.dumps(info))
        return
    print(f"merged {info['scope']} ({info['peft_type']}) into {info['source']} -> {info['out']} "
          f"({info['bytes'] / 2**20:.1f} MiB, {info['dtype']}, {info['seconds']:.1f} s)")
    print(f"  {info['note']}; load it with --backbone {info['out']}")


@dataclasses.dataclass(kw_only=True)
class MergeArgs:
    run: str = _f(help="a finished run folder", positional=True)
    out: str = _f(help="folder for the merged model (must not exist, or be empty)")
    json: bool = _f(False, "print JSON")


def add_cli(sub) -> None:
    add_command(sub, "merge", MergeArgs, cmd_merge,
                help="fold a run's adapter into the base weights; save a standalone model")
