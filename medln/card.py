"""Model cards: the README.md of a run's adapter/ folder and of a merged model, built with
huggingface_hub's ModelCard / ModelCardData from what the run folder records (config.json and
eval.json), so training, `medln push` and `medln merge` write the same card for the same run.

Metadata the Hub reads: license (the base model's), base_model, library_name (peft for an
adapter; transformers for a merged model or a 'full' checkpoint), pipeline_tag, datasets (an
`hf:` dataset's id; local data has none on the Hub), metrics and model-index results, each
metric named with its n. The loading snippet builds the base in the dtype the run recorded:
without `dtype=` transformers loads a checkpoint in the dtype it was saved in (the bundled
medln-tiny is stored in float16), which is not what the run or `medln ask` computes in.

A base that is not on the Hub (the bundled medln-tiny, a local folder) keeps its name in
`base_model` in the run's own card; a pushed card leaves it out (the Hub accepts only Hub ids
there) and the text says where the base comes from. peft's AutoPeftModel cannot load such an
adapter by name; the snippet loads the base explicitly instead.
"""

from __future__ import annotations

from pathlib import Path

from . import DISCLAIMER

PAPER = "Chen et al., ACM MM 2024, arXiv:2404.16385"
# family -> the Hub's pipeline tag; BLIP answers through a VQA head, the decoders chat
PIPELINE_TAGS = {"blip": "visual-question-answering"}
DEFAULT_PIPELINE_TAG = "image-text-to-text"


def _listed():
    """The metrics a card lists: those with a Hub metric id (medln.metrics.METRICS, the one table)."""
    from .metrics import METRICS

    return [m for m in METRICS.values() if m.hub]


def base_of(record: dict) -> dict:
    """Where a run's base model lives, for a card: {"kind": hub|bundled|local, "name", "commit",
    "license", "license_name", "model_class", "dtype", "quant", "keep"}."""
    from . import ASSETS
    from .backbones import BACKBONES, BACKBONES_BY_NAME, FAMILIES
    from .revisions import split_revision

    base = record.get("base") or {}
    arg = base.get("backbone") or record.get("config", {}).get("backbone", "")
    revisions = (record.get("revisions") or {}).get("backbone") or {}
    name, requested = split_revision(arg) if "@" in arg and not Path(arg).is_dir() else (arg, None)
    spec = BACKBONES_BY_NAME.get(name) or next((b for b in BACKBONES if b.hub_id == name), None)
    if spec is not None and (ASSETS / spec.hub_id).is_dir():
        kind, shown = "bundled", spec.hub_id
    elif revisions.get("source") == "local" or (spec is None and (Path(name).is_absolute() or Path(name).is_dir())):
        kind, shown = "local", revisions.get("name") or Path(name).name
    else:
        kind, shown = "hub", spec.hub_id if spec else name
    family = FAMILIES.get(record.get("family", ""))
    return {"kind": kind, "name": shown, "commit": revisions.get("commit") or requested,
            "license": spec.hub_license if spec else "other",
            "license_name": None if spec is None or spec.hub_license != "other" else spec.license,
            "model_class": family.model_class if family else "AutoModelForImageTextToText",
            "family": record.get("family", "?"), "dtype": base.get("dtype") or "float32",
            "quant": base.get("quant", "none"), "keep": list(base.get("keep") or ())}


def adapter_card(record: dict, result: dict, *, peft: bool = True, repo_id: str | None = None):
    """The card of a run's adapter/ folder (scope 'full': its whole checkpoint)."""
    base = base_of(record)
    config = record.get("config", {})
    body = "\n".join([
        f"# MedLN {'adapter' if peft else 'checkpoint'}: {config.get('scope')} on {base['name']}",
        "", f"> {DISCLAIMER}", "",
        f"Fine-tuned with MedLN (LayerNorm tuning of medical vision-language models, after {PAPER}).", "",
        _facts(record, result, base), "",
        "## Metrics (from eval.json; base = the same weights with the adapter off)", "",
        _metrics_table(result), "",
        "## Load it", "",
        _load_snippet(base, adapter=repo_id or "path/to/this/folder", peft=peft), "",
        _base_note(base), "",
        "Or with MedLN, given the run folder this came from (RUN_DIR, the folder that holds adapter/): "
        "`medln ask --adapter RUN_DIR --image IMG --question \"...\"`, or `medln.runs.load_run(RUN_DIR)` in Python.", "",
        "## Limitations", "", _limitations(),
    ])
    return _card(record, result, base, body, library="peft" if peft else "transformers", pushed=repo_id is not None)


def merged_card(record: dict, result: dict, merge_info: dict, *, repo_id: str | None = None):
    """The card of `medln merge`'s output: a plain transformers checkpoint."""
    base = base_of(record)
    config = record.get("config", {})
    merged = {**base, "dtype": merge_info.get("dtype", "float32"), "quant": "none", "keep": []}
    body = "\n".join([
        f"# MedLN merged model: {config.get('scope')} on {base['name']}",
        "", f"> {DISCLAIMER}", "",
        f"The run's adapter folded into the base weights by `medln merge` ({merge_info.get('note', '')}). "
        "It loads with transformers alone; neither peft nor MedLN is needed.", "",
        _facts(record, result, base), "",
        "## Metrics of the run (adapter on its base; base = adapter off)", "",
        _metrics_table(result), "",
        "## Load it", "",
        "```python",
        "import torch",
        f"from transformers import AutoProcessor, {merged['model_class']}",
        "",
        f'path = "{repo_id or "path/to/this/folder"}"',
        "processor = AutoProcessor.from_pretrained(path)",
        f"model = {merged['model_class']}.from_pretrained(path, dtype=torch.{merged['dtype']})",
        "```", "",
        "## Limitations", "", _limitations(),
    ])
    return _card(record, result, base, body, library="transformers", pushed=repo_id is not None)


def write_adapter_card(adapter_dir: Path, record: dict, result: dict) -> None:
    adapter_dir = Path(adapter_dir)
    adapter_card(record, result, peft=(adapter_dir / "adapter_config.json").is_file()).save(adapter_dir / "README.md")


# ----------------------------------------------------------------------------------- the parts


def _card(record: dict, result: dict, base: dict, body: str, *, library: str, pushed: bool):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    config = record.get("config", {})
    data = config.get("data", "")
    datasets = [data.removeprefix("hf:").split(":")[0].split("@")[0]] if data.startswith("hf:") else None
    metrics = sorted({m.hub for split in (result.get("tuned") or {}).values() for m in _listed() if split.get(m.name) is not None})
    on_hub = base["kind"] == "hub"
    card_data = ModelCardData(
        license=base["license"], license_name=_slug(base["license_name"].split("(")[0]) if base["license_name"] else None,
        base_model=base["name"] if on_hub or not pushed else None,
        library_name=library, pipeline_tag=PIPELINE_TAGS.get(base["family"], DEFAULT_PIPELINE_TAG),
        datasets=datasets, metrics=metrics or None,
        tags=["medln", "medical", "vision-language", f"scope-{config.get('scope')}", "not-for-clinical-use"],
        model_name=f"medln-{config.get('scope')}-{base['name'].split('/')[-1]}",
        eval_results=_eval_results(EvalResult, record, result, datasets) or None,
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}\n")


def _eval_results(EvalResult, record: dict, result: dict, datasets: list[str] | None) -> list:
    config = record.get("config", {})
    data = config.get("data", "")
    out = []
    for split, metrics in (result.get("tuned") or {}).items():
        for m in _listed():
            if metrics.get(m.name) is None or metrics.get(m.n_key) is None:
                continue
            task = "image-to-text" if m.task == "report" else "visual-question-answering"
            out.append(EvalResult(task_type=task, dataset_type=datasets[0] if datasets else _data_name(data),
                                  dataset_name=_data_name(data), dataset_split=split, metric_type=m.hub,
                                  metric_value=round(float(metrics[m.name]), 4),
                                  metric_name=f"{m.label} (n={metrics[m.n_key]})"))
    return out


def _data_name(spec: str) -> str:
    """A data spec as a card may show it: never a local absolute path (it names the folders
    of the machine that trained)."""
    if spec in ("", "sample"):
        return "medln-sample (synthetic, bundled with MedLN)"
    kind, _, path = spec.partition(":")
    return spec if kind == "hf" else f"{kind}:{Path(path).name}"


def _facts(record: dict, result: dict, base: dict) -> str:
    config = record.get("config", {})
    where = {"bundled": f"`{base['name']}` ({base['family']} family), bundled with MedLN, not on the Hub",
             "local": f"a local folder named `{base['name']}` ({base['family']} family), not on the Hub",
             "hub": f"[`{base['name']}`](https://huggingface.co/{base['name']}) ({base['family']} family)"}[base["kind"]]
    commit = f", commit `{base['commit']}`" if base.get("commit") else ""
    data_rev = (record.get("revisions") or {}).get("data") or {}
    data_commit = f" at commit `{data_rev['commit']}`" if data_rev.get("commit") else ""
    weights = "4-bit NF4" if base["quant"] == "4bit" else base["dtype"]
    rows = [
        ("base model", f"{where}{commit}"),
        ("scope", f"`{config.get('scope')}`: {record.get('scope_description', '')}"),
        ("trainable parameters", f"{record.get('trainable', 0):,} of {record.get('total', 0):,} "
                                 f"({record.get('percent', 0):.4f} %)"),
        ("base weights during training", f"{weights} ({record.get('precision', base['dtype'])} compute)"),
        ("data", f"`{_data_name(config.get('data', ''))}`{data_commit}, split `{config.get('split')}` "
                 f"({record.get('n_train', '?')} samples)"),
        ("steps", f"{result.get('steps_done', '?')} of {config.get('steps')} ({result.get('status', '?')}), batch "
                  f"{config.get('batch_size')} x {config.get('grad_accum')}, lr {record.get('lr', config.get('lr'))}, "
                  f"seed {config.get('seed')}"),
        ("adapter size", f"{result.get('adapter_bytes', 0):,} bytes"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _metrics_table(result: dict) -> str:
    lines = ["| split | metric | n | base | tuned |", "|---|---|---:|---:|---:|"]
    for split, tuned in (result.get("tuned") or {}).items():
        before = (result.get("base") or {}).get(split) or {}
        for m in _listed():
            if tuned.get(m.name) is None:
                continue
            b = before.get(m.name)
            lines.append(f"| {split} | {m.label} | {tuned.get(m.n_key, '')} | {'' if b is None else m.format(b)} | {m.format(tuned[m.name])} |")
    return "\n".join(lines) if len(lines) > 2 else "(no evaluation split was scored)"


def _load_snippet(base: dict, *, adapter: str, peft: bool) -> str:
    lines = ["```python", "import torch"]
    if base["kind"] == "bundled":
        lines += ["import medln  # pip install medln: the base model ships inside the package"]
    lines += [f"from transformers import AutoProcessor, {base['model_class']}"]
    if base["quant"] == "4bit":
        lines[-1] += ", BitsAndBytesConfig"
    if peft:
        lines += ["from peft import PeftModel"]
    lines += [""]
    revision = ""
    if base["kind"] == "bundled":
        lines += [f'base_path = medln.ASSETS / "{base["name"]}"']
    elif base["kind"] == "local":
        lines += [f'base_path = "path/to/{base["name"]}"  # your copy of the folder the run was trained on']
    else:
        lines += [f'base_path = "{base["name"]}"']
        revision = f', revision="{base["commit"]}"' if base.get("commit") else ""
    load = f"dtype=torch.{base['dtype']}"
    if base["quant"] == "4bit":
        skip = ", ".join(f'"{m}"' for m in base["keep"])
        lines += ["# the run's base was 4-bit NF4" + ("; the projections the scope trains stayed unquantized" if skip else ""),
                  "quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_use_double_quant=True,",
                  f"                           bnb_4bit_compute_dtype=torch.{base['dtype']}"
                  + (f", llm_int8_skip_modules=[{skip}])" if skip else ")")]
        load += ", quantization_config=quant"
    lines += [f"processor = AutoProcessor.from_pretrained(base_path{revision})"]
    if peft:
        lines += [f"base = {base['model_class']}.from_pretrained(base_path{revision}, {load})",
                  f'model = PeftModel.from_pretrained(base, "{adapter}").eval()']
    else:
        lines += ["# scope 'full' saved whole weights: load them directly",
                  f'model = {base["model_class"]}.from_pretrained("{adapter}", {load}).eval()']
    return "\n".join(lines + ["```"])


def _base_note(base: dict) -> str:
    dtype = (f"The base loads in `{base['dtype']}`, the dtype the run trained and answers in: without `dtype=`, "
             "transformers would use the dtype the checkpoint was saved in, and the logits would differ from the run's.")
    if base["kind"] == "bundled":
        return (f"{dtype}\n\n`{base['name']}` is bundled with MedLN and is not on the Hub, so "
                "`AutoPeftModel.from_pretrained` (which loads the base by the name in adapter_config.json) cannot "
                f"find it: load the base from `medln.ASSETS / \"{base['name']}\"` as above, then attach the adapter.")
    if base["kind"] == "local":
        return (f"{dtype}\n\nThe base was a local folder named `{base['name']}`, not on the Hub: point `base_path` "
                "at your copy of it (adapter_config.json names only the folder).")
    return dtype


def _limitations() -> str:
    return (f"{DISCLAIMER} Small fine-tunes on small data sets learn the data set's style and vocabulary; "
            "answers on images unlike the training data can be confidently wrong.")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64]
