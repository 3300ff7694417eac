"""Where the weights moved: per module, layer and part (vision / connector / language model),
how far a run's trained tensors went from the base model's. Each tuning method says how its
layers are read (medln.methods, `Method.moved`): norms ‖Δγ‖/‖γ‖ and ‖Δβ‖, whole projections
‖ΔW‖/‖W‖, LoRA ‖B·A·alpha/r‖/‖W‖, IA³ ‖l − 1‖/‖1‖, BitFit ‖Δb‖; biases are read as absolute
changes (medln.methods.ABSOLUTE_PARAMS), the rest relative to the base tensor.

Everything is read from a peft model that holds the trained adapter beside its frozen
originals (one base copy), so it runs at the end of training with no extra load, or on a
finished run folder. `inspect.json` is written into the run folder; `medln inspect RUN` also
writes `inspect.html` (the heatmaps), so viewing them later costs nothing. Other runs given
with `--with` (other seeds, or a LoRA run on the same data) are compared per module and per
language-model layer by Spearman rank correlation.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from .adapters import is_peft_adapter, read_adapter_config
from .backbones import Family, part_of, resolve
from .config import _f, add_command
from .methods import ABSOLUTE_PARAMS, METHODS, ScopeError, methods_of
from .runs import RunDir, RunError, base_spec, load_run
from .storage import write_json_atomic, write_text_atomic
from .userfiles import FileError, Record, load_json, short

LAYER = re.compile(r"\.(?:layers|layer|blocks)\.(\d+)\.")
PEFT_PREFIX = "base_model.model."
INSPECT_JSON = "inspect.json"
INSPECT_HTML = "inspect.html"
MAX_INSPECT_BYTES = 64 * 2**20


def _where(family: Family, module: str) -> tuple[str, int | None, str]:
    """(part, layer index or None, leaf name) of a module: model.language_model.layers.3.input_layernorm
    -> ("llm", 3, "input_layernorm"); model.vision_tower.post_layernorm -> ("vision", None, "post_layernorm")."""
    part = part_of(family, module) or "other"
    m = LAYER.search(module + ".")
    if m:
        return part, int(m.group(1)), (module + ".")[m.end():].rstrip(".") or module
    prefix = next((p for p in family.parts.get(part, ()) if module.startswith(p)), "")
    return part, None, module[len(prefix):] or module


def _row(family, module, param, base, delta, numel) -> dict:
    part, layer, leaf = _where(family, module)
    return {"module": module, "part": part, "layer": layer, "leaf": leaf, "param": param, "numel": int(numel),
            "base_norm": base, "delta_norm": delta, "rel": delta / base if base else None}


def movement(model, family: Family, adapter: str | None = None) -> list[dict]:
    """One row per trained tensor: {module, part, layer, leaf, param, numel, base_norm,
    delta_norm, rel}. `param` is gain / bias (norms), weight (whole projections), lora, ia3, beft."""
    import torch

    adapter = adapter or getattr(model, "active_adapter", "default")
    rows: list[dict] = []
    with torch.no_grad():
        for name, mod in model.named_modules():
            module = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
            moved = next((m for m in (method.moved(mod, adapter) for method in METHODS.values()) if m is not None), [])
            rows += [_row(family, module, t.param, t.base_norm, t.delta_norm, t.numel) for t in moved]
    return rows


def layer_profile(rows: list[dict], part: str = "llm") -> dict[int, float]:
    """Per layer of one part: the relative change of all its non-bias tensors together,
    sqrt(Σ‖Δ‖²) / sqrt(Σ‖base‖²)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        if r["part"] == part and r["layer"] is not None and r["param"] not in ABSOLUTE_PARAMS and r["base_norm"]:
            d, b = acc.setdefault(r["layer"], [0.0, 0.0]), r
            d[0] += b["delta_norm"] ** 2
            d[1] += b["base_norm"] ** 2
    return {layer: math.sqrt(d) / math.sqrt(b) for layer, (d, b) in sorted(acc.items())}


def top_moved(rows: list[dict], n: int = 10) -> dict[str, list[dict]]:
    """The tensors that moved most: relative for gains/weights, absolute for biases."""
    rel = sorted((r for r in rows if r["param"] not in ABSOLUTE_PARAMS and r["rel"] is not None), key=lambda r: -r["rel"])
    bias = sorted((r for r in rows if r["param"] in ABSOLUTE_PARAMS), key=lambda r: -r["delta_norm"])
    keep = ("module", "param", "rel", "delta_norm")
    return {"relative": [{k: r[k] for k in keep} for r in rel[:n]], "bias": [{k: r[k] for k in keep} for r in bias[:n]]}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Rank correlation (average ranks for ties); None below 3 points or for a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return round(sxy / math.sqrt(sxx * syy), 4) if sxx and syy else None


def summarize(rows: list[dict], meta: dict) -> dict:
    parts = sorted({r["part"] for r in rows})
    return {**meta, "n_tensors": len(rows), "rows": rows, "top": top_moved(rows),
            "layers": {p: {str(k): v for k, v in layer_profile(rows, p).items()} for p in parts}}


def compare(main: dict, other: dict) -> dict:
    """How another run's movement relates to this one's: per tensor (same scope: other seeds)
    and per language-model layer (any scope, e.g. LoRA's ‖ΔW‖ against the norms' ‖Δγ‖/‖γ‖)."""
    def key(r):
        return r["module"], r["param"]

    a = {key(r): r["rel"] if r["rel"] is not None else r["delta_norm"] for r in main["rows"]}
    b = {key(r): r["rel"] if r["rel"] is not None else r["delta_norm"] for r in other["rows"]}
    common = sorted(set(a) & set(b))
    out = {"run": other.get("run"), "scope": other.get("scope"), "seed": other.get("seed"),
           "same_scope": other.get("scope") == main.get("scope"), "common_tensors": len(common),
           "spearman_tensors": spearman([a[k] for k in common], [b[k] for k in common]) if common else None}
    if common:
        top_a = {(t["module"], t["param"]) for t in main["top"]["relative"]}
        top_b = {(t["module"], t["param"]) for t in other["top"]["relative"]}
        out["top_overlap"] = len(top_a & top_b) / len(top_a) if top_a else None
    la, lb = main["layers"].get("llm", {}), other["layers"].get("llm", {})
    layers = sorted(set(la) & set(lb), key=int)
    out["spearman_llm_layers"] = spearman([la[k] for k in layers], [lb[k] for k in layers])
    return out


# ------------------------------------------------------------------ run folders


def read_inspect(path: Path) -> dict:
    """An inspect.json checked field by field (it may have been edited, or be another file
    altogether): FileError naming the field otherwise."""
    rec = Record(load_json(path, max_bytes=MAX_INSPECT_BYTES), str(path))
    rows = rec.get("rows", list, max_len=1_000_000)
    for i, row in enumerate(rows):
        r = Record(row, str(path), f"rows[{i}]")
        for key in ("module", "part", "leaf", "param"):
            r.get(key, str, max_len=1024)
        r.get("layer", int, None, optional=True)
        r.get("numel", int, 0, lo=0)
        for key in ("base_norm", "delta_norm"):
            r.get(key, float, lo=0)
        r.get("rel", float, None, optional=True, lo=0)
    top = rec.sub("top")
    for kind in ("relative", "bias"):
        for i, row in enumerate(top.get(kind, list)):
            r = Record(row, str(path), f"top.{kind}[{i}]")
            r.get("module", str, max_len=1024)
            r.get("param", str, max_len=64)
            r.get("rel", float, optional=kind == "bias")
            r.get("delta_norm", float)
    _check_layers(rec.sub("layers"))
    others = rec.sub("others", optional=True)
    for run in (others.keys() if others else ()):
        _check_layers(others.sub(run))
    for i, row in enumerate(rec.get("compare", list, [], max_len=1000)):
        r = Record(row, str(path), f"compare[{i}]")
        for key in ("run", "scope"):
            r.get(key, str, None, optional=True, max_len=4096)
        r.get("same_scope", bool, False)
        for key in ("spearman_tensors", "spearman_llm_layers", "top_overlap"):
            r.get(key, float, None, optional=True)
    rec.get("n_tensors", int, len(rows), lo=0)
    for key in ("run", "scope", "backbone"):
        rec.get(key, str, None, optional=True, max_len=4096)
    rec.get("seed", int, None, optional=True)
    return rec.data


def _check_layers(layers: Record) -> None:
    """{part: {"<layer>": relative change}}"""
    for part in layers.keys():
        profile = layers.sub(part)
        for layer in profile.keys():
            if not layer.isdigit() or len(layer) > 6:
                profile.fail(layer, "a layer number is expected as the key")
            profile.get(layer, float)


def load_run_for_inspect(run_path: Path):
    """(backbone, peft model with the run's adapter), the base rebuilt as it was trained."""
    run = RunDir(Path(run_path))
    if not is_peft_adapter(run.adapter_dir):
        raise FileNotFoundError(f"{run.path}: no peft adapter (scope 'full' saves whole weights; nothing to inspect)")
    peft_type = read_adapter_config(run.adapter_dir)["peft_type"]
    why = next((m.no_weights for m in methods_of(peft_type) if m.no_weights), None)
    if why or peft_type in ("PREFIX_TUNING", "P_TUNING"):  # (the latter: peft's other prompt methods)
        raise ScopeError(f"{run.path}: {why or 'a soft prompt'}: it has no per-layer weights to inspect")
    bb = load_run(run.path)
    return bb, bb.model


def _finished_run(path) -> RunDir:
    """A run folder to inspect: a folder with a readable config.json and an adapter/."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunError(f"{run.path}: not a folder (inspect takes a run folder)")
    run.config()  # checked: FileNotFoundError / FileError name the problem
    if not run.adapter_dir.is_dir():
        raise RunError(f"{run.path} has no adapter/ folder (not a finished MedLN run?)")
    return run


def _same_base(run: RunDir, other: RunDir) -> None:
    """`--with` compares runs of one backbone only: tensors of another model share no names."""
    def source(r: RunDir) -> str:
        backbone = base_spec(r.path).backbone
        try:
            return resolve(backbone).source
        except Exception:  # unresolvable here: compare as recorded
            return backbone

    a, b = source(run), source(other)
    if a != b:
        raise RunError(f"--with {other.path}: trained on {short(b, 80)}, but {run.path} on {short(a, 80)}: movement "
                       "is compared between runs of the same backbone only")


def inspect_run(run_path, *, others: list = (), force: bool = False, html: bool = True) -> dict:
    """inspect.json (and inspect.html) for a finished run; other runs (seeds, a LoRA run) are
    compared with it. A run's own movement is computed once and read back afterwards. Files
    are written into `run_path` only: a run given in `others` is read, never written (its
    movement is computed in memory when it has no inspect.json of its own)."""
    run = _finished_run(run_path)
    others_runs = [_finished_run(o) for o in others]
    for other in others_runs:
        _same_base(run, other)
    targets = [run.path / INSPECT_JSON] + ([run.path / INSPECT_HTML] if html else [])
    for target in targets:  # refused before minutes of work, not after
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise RunError(f"{target} exists and is not a regular file; move it away (inspect writes its result there)")

    def own(r: RunDir, *, write: bool, refresh: bool) -> dict:
        cached = r.path / INSPECT_JSON
        if cached.is_file() and not refresh:
            try:
                return read_inspect(cached)
            except FileError as e:
                raise FileError(f"{e}; {'--force recomputes it' if write else 'inspect that run itself first'}") from None
        bb, model = load_run_for_inspect(r.path)
        cfg = r.config().get("config", {})
        result = summarize(movement(model, bb.family), {"run": str(r.path), "scope": cfg.get("scope"),
                                                         "seed": cfg.get("seed"), "backbone": bb.name})
        if write:
            write_json_atomic(cached, result)
        return result

    main = own(run, write=True, refresh=force)
    if others_runs:
        computed = [own(o, write=False, refresh=force) for o in others_runs]
        main["compare"] = [compare(main, c) for c in computed]
        main["others"] = {str(o.path): c["layers"] for o, c in zip(others_runs, computed)}
        write_json_atomic(run.path / INSPECT_JSON, main)
    if html:
        from .plots import movement_fig, profile_fig

        figs = [movement_fig(main), profile_fig(main)]
        body = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%")
                       for i, f in enumerate(figs))
        write_text_atomic(run.path / INSPECT_HTML, "<html><head><meta charset='utf-8'><title>MedLN inspect</title>"
                                                   f"</head><body>{body}</body></html>")
    return main


def record_movement(run_path, model, family: Family, meta: dict) -> None:
    """inspect.json at the end of training, from the model still in memory (no reload)."""
    if hasattr(model, "peft_config") and not getattr(model, "active_peft_config", None).is_prompt_learning:
        write_json_atomic(Path(run_path) / INSPECT_JSON, summarize(movement(model, family), meta))


def inspect_figure(run_path):
    """The heatmap of a run from its inspect.json (None when the run has none, or an unusable one): for the app."""
    path = Path(run_path) / INSPECT_JSON
    if not path.is_file():
        return None
    try:
        result = read_inspect(path)
    except FileError:
        return None
    from .plots import movement_fig

    return movement_fig(result)


def cmd_inspect(args) -> None:
    result = inspect_run(args.run, others=list(args.others or ()), force=args.force)
    if args.json:
        import json

        print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "others")}))
        return
    print(f"{result['run']}: {result['scope']} · {result['n_tensors']} trained tensors")
    for part, layers in result["layers"].items():
        if layers:
            print(f"  {part:<9} per-layer relative change: " + " ".join(f"{k}:{v:.3g}" for k, v in layers.items()))
    for r in result["top"]["relative"][:5]:
        print(f"  moved most  {r['module']} {r['param']}  {r['rel']:.3g}")
    for r in result["top"]["bias"][:3]:
        print(f"  bias        {r['module']} {r['param']}  ‖Δ‖ {r['delta_norm']:.3g}")
    for c in result.get("compare", []):
        print(f"  vs {c['scope']} seed {c['seed']} ({c['run']}): spearman tensors {c['spearman_tensors']}, "
              f"llm layers {c['spearman_llm_layers']}, top-10 overlap {c.get('top_overlap')}")
    print(f"  wrote {Path(args.run) / INSPECT_JSON} and {INSPECT_HTML} (runs given with --with are only read)")


@dataclasses.dataclass(kw_only=True)
class InspectArgs:
    run: str = _f(help="a finished run folder", positional=True)
    others: tuple[str, ...] = _f((), "other runs to compare: other seeds, a LoRA run", flag="--with",
                                metavar="RUN")
    force: bool = _f(False, "recompute even if inspect.json exists")
    json: bool = _f(False, "print JSON")


def add_cli(sub) -> None:
    add_command(sub, "inspect", InspectArgs, cmd_inspect,
                help="where a run's weights moved, per layer and part (inspect.json/.html)")
