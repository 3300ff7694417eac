"""An adapter folder (run/adapter/): what peft saves, made to stand alone.

- `adapter_off(model)`: the one way to run the base weights of a (peft-)wrapped model.
- `attach(model, adapter_dir)`: a saved adapter onto a loaded base (one copy of the weights).
- `make_portable(adapter_dir, base_name)`: adapter_config.json names the hub id or the
  bundled model's name, never the absolute path of the machine that trained it.
- `write_card(...)`: the folder's README.md as a real model card, not peft's blank template.
- `adapter_bytes(model)`: the adapter size every listing reports (train, compare, bench).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from . import DISCLAIMER


def adapter_off(model, off: bool = True):
    """Context in which a peft model runs its frozen base weights (peft's disable_adapter).
    A plain model (no adapter, or a full fine-tune) has nothing to switch off."""
    if not off or not hasattr(model, "disable_adapter"):
        return nullcontext()
    return model.disable_adapter()


def is_peft_adapter(adapter_dir: Path) -> bool:
    """peft adapters have adapter_config.json; scope 'full' saves a whole checkpoint."""
    return (Path(adapter_dir) / "adapter_config.json").is_file()


def attach(model, adapter_dir: Path):
    """Wrap a loaded base with the saved peft adapter (`disable_adapter()` still gives base answers)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir))


def adapter_bytes(model) -> int:
    """Bytes of the tensors a run saves, in their dtype: the peft adapter state (LN copies,
    LoRA A/B, trained projections); for full fine-tuning the whole model (tied weights once).
    The one adapter size every listing reports (train, compare, bench, app)."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        tensors = get_peft_model_state_dict(model).values()
    else:
        seen, tensors = set(), []
        for t in model.state_dict().values():
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                tensors.append(t)
    return sum(t.numel() * t.element_size() for t in tensors)


def peft_targets(adapter_dir: Path) -> tuple[str, ...]:
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    targets = config.get("target_modules") or ()
    return tuple(sorted([targets] if isinstance(targets, str) else targets))


def make_portable(adapter_dir: Path, base_name: str) -> None:
    """peft writes the base's `name_or_path`, which for a local or bundled model is an
    absolute path on the training machine; record the portable name instead."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    from .storage import write_json_atomic

    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    write_json_atomic(path, config)


def _metrics_table(result: dict) -> str:
    from .metrics import METRICS

    lines = ["| split | metric | base | tuned |", "|---|---|---:|---:|"]
    for split, tuned in (result.get("tuned") or {}).items():
        base = (result.get("base") or {}).get(split) or {}
        if tuned.get("n") is not None:
            n_base = "" if base.get("n") is None else f"{base['n']:,}"
            lines.append(f"| {split} | n | {n_base} | {tuned['n']:,} |")
        for m in (m for m in METRICS.values() if m.table and tuned.get(m.name) is not None):
            b = base.get(m.name)
            lines.append(f"| {split} | {m.name} | {m.format(b) if b is not None else ''} | {m.format(tuned[m.name])} |")
    return "\n".join(lines) if len(lines) > 2 else "(no evaluation split was scored)"


def write_card(adapter_dir: Path, *, base_name: str, model_class: str, config: dict, start: dict,
               result: dict, kept: tuple[str, ...] = ()) -> None:
    """README.md of the adapter folder: what a stranger needs to use or judge it."""
    scope, quant = config["scope"], config["quant"]
    bundled = "/" not in base_name
    where = (f"the model bundled with MedLN (`medln.backbones.resolve({base_name!r}).source`)" if bundled
             else f"`{base_name}`")
    load_base = (f'base_path = medln.backbones.resolve("{base_name}").source  # bundled with `pip install medln`'
                 if bundled else f'base_path = "{base_name}"')
    quant_note = ""
    if quant == "4bit":
        skip = ", ".join(f'"{m}"' for m in kept) if kept else ""
        quant_note = ("\nTrained on a 4-bit (NF4) base. Load the base the same way: "
                      "`BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\", bnb_4bit_use_double_quant=True"
                      + (f", llm_int8_skip_modules=[{skip}, ...])` — the projections this scope trains "
                         "stayed unquantized and must stay so." if kept else ")`.")
                      + " `medln.runs.load_run(run_dir)` does this for you.\n")
    peft_line = ("from peft import PeftModel\nmodel = PeftModel.from_pretrained(base, \"path/to/adapter\")"
                 if is_peft_adapter(adapter_dir) else
                 f"# scope 'full' saved a whole checkpoint: load it directly\n"
                 f"model = {model_class}.from_pretrained(\"path/to/adapter\")")
    text = f"""---
library_name: peft
base_model: {base_name}
tags: [medln, medical, vision-language, {scope}]
---

# MedLN adapter: {scope} on {base_name}

> {DISCLAIMER}

Fine-tuned with MedLN (LayerNorm tuning of medical vision-language
models, after Chen et al., ACM MM 2024, arXiv:2404.16385).

| | |
|---|---|
| base model | {where} ({start.get('family', '?')} family) |
| scope | `{scope}`: {start.get('scope_description', '')} |
| trainable parameters | {start.get('trainable', 0):,} of {start.get('total', 0):,} ({start.get('percent', 0):.4f} %) |
| weights during training | {'4-bit NF4' if quant == '4bit' else 'full precision'} |
| data | `{config['data']}`, split `{config['split']}` ({start.get('n_train', '?')} samples) |
| steps | {result.get('steps_done', '?')} of {config['steps']} ({result.get('status', '?')}), batch {config['batch_size']} x {config['grad_accum']}, lr {start.get('lr', config.get('lr'))}, seed {config['seed']} |
| adapter size | {result.get('adapter_bytes', 0):,} bytes |

## Metrics (from eval.json; base = the same weights with the adapter off)

{_metrics_table(result)}

## Load it with plain peft

```python
import medln.backbones  # only needed to find a bundled base
from transformers import AutoProcessor, {model_class}
{load_base}
processor = AutoProcessor.from_pretrained(base_path)
base = {model_class}.from_pretrained(base_path)
{peft_line}
```
{quant_note}
Or with MedLN: `medln ask --adapter RUN_DIR --image IMG --question "..."`, or
`medln.runs.load_run(RUN_DIR)` in Python (RUN_DIR is this folder's parent).

## Limitations

{DISCLAIMER} Small fine-tunes on small data sets learn the data set's style and vocabulary;
answers on images unlike the training data can be confidently wrong.
"""
    (Path(adapter_dir) / "README.md").write_text(text, encoding="utf-8")
