"""Tab 4, About: what LayerNorm tuning is and why it works, the paper, the licences of the
bundled data and models, and that this is not for clinical use."""

from __future__ import annotations

from pathlib import Path

from medln import DISCLAIMER, __version__
from medln.backbones import BACKBONES
from medln.methods import SCOPES


PAPER = ("Chen et al., *Efficiency in Focus: LayerNorm as a "
         "Catalyst for Fine-tuning Medical Visual Language Pre-trained Models*, ACM Multimedia 2024, "
         "[arXiv:2404.16385](https://arxiv.org/abs/2404.16385)")

WHAT = """
### What LayerNorm tuning is

Every transformer block normalises its activations with a **LayerNorm** (or RMSNorm): it
rescales each feature with a learned gain γ and shift β (RMSNorm: gain only). Those affine
parameters are a tiny part of a model — about **0.005–0.05 %** of a medical vision-language
model's weights — yet they sit in front of every attention and MLP layer of the vision
encoder, the connector and the language model. **LayerNorm tuning trains only them** and
freezes everything else.

### Why it works

* **Leverage.** A norm's gain multiplies every feature that flows into the next layer, so
  changing a few thousand numbers re-weights features across the whole network: a cheap
  way to shift a pretrained model's attention to a new domain's features.
* **Little to forget — the paper's claim, to be checked.** The weights that hold the
  pretrained knowledge stay frozen, so the paper expects the model to keep more of its
  zero-shot and out-of-domain ability than when attention or MLP weights move. Whether it
  holds for a given model and data set is what the **retention** plot in *Compare scopes*
  measures; below, what the bundled model's own comparison measured.
* **Tiny adapters.** A run saves kilobytes to a few megabytes; many adapters share one copy
  of the base weights, which is how the *Ask* tab shows base and tuned answers side by side.
"""

# After the measured verdict (measured_html), so that the claim never stands alone.
WHAT_MORE = """

The paper studied a small BLIP-like Med-VLM (MISS) and a large one (LLaVA-Med) on medical
VQA (VQA-RAD, SLAKE, PathVQA) and report generation, and reports LayerNorm tuning on par with
or better than LoRA, prefix and prompt tuning and intrinsic attention / FFN tuning while
training far fewer parameters. Two practical details MedLN handles for you: norms need a
much **higher learning rate** than LoRA (each scope here has its own default), and in LLaVA
the vision tower's last block never receives a gradient (features come from layer −2), so
its norms are left out and reported as "dead".

### Speed: which norms you train matters

Few trained parameters does not mean a fast step. Training the **vision** norms needs the
backward pass through the whole vision tower; LoRA on the language model does not. Measured
at the SmolVLM-256M shape on a CPU: `ln` (all norms) is **~1.8× slower per step than `lora`**
and uses 1.1× its memory, while **`ln-llm` is 1.06–1.1× faster than `lora` at 0.88× its
memory**: the fast path. *Where the weights moved* (after a run, and `python -m medln inspect
RUN`) shows which norms changed and how much, per layer and part.
"""


def scopes_md(backbone: str = "medln-tiny") -> str:
    """The scopes with the learning rate the Fine-tune tab fills in for `backbone` (the app's
    default backbone), beside the generic default every other backbone gets."""
    from medln.backbones import BACKBONES_BY_NAME
    from medln.methods import default_lr

    from .errors import web_words

    spec = BACKBONES_BY_NAME.get(backbone)
    name = f"`{getattr(spec, 'name', backbone)}`"
    rows = "\n".join(f"| `{s.name}` | {s.description} | {default_lr(backbone, s.name):g}"
                      f"{'' if spec and s.name in spec.lrs else ' (generic)'} | {s.default_lr:g} | {web_words(s.quant_4bit)} |"
                      for s in SCOPES)
    return ("### Tuning scopes\n\n"
            f"The learning rate the *Fine-tune* tab fills in depends on the backbone: for {name} (this "
            "app's default) the rates chosen on its validation split by `compare --tune-lr` "
            "(docs/compare-medln-tiny/results.json, 'tuning'), for other "
            "backbones the generic default of the scope. The Fine-tune tab always shows the one it will use.\n\n"
            f"| scope | trains | learning rate on {name} | generic default | under 4-bit |\n|---|---|---|---|---|\n"
            + rows)


DOCS = Path(__file__).resolve().parents[2] / "docs"


def committed_comparisons(docs: Path = DOCS) -> list[Path]:
    """The committed comparisons of the bundled model: docs/compare-*/results.json (one per
    target once the experiment lands), found on disk, never listed by hand."""
    return sorted(p for p in docs.glob("compare-*/results.json") if p.is_file())


def measured_html(paths: list[Path] | None = None) -> str:
    """The paper's claims beside what the committed comparisons of the bundled model measured:
    each one's verdict generated from its results.json (medln.compare.summary), which compares
    every scope with the image-blind row and the probe ceiling on the same items."""
    import json

    from medln.compare.summary import verdict_from_file

    from . import views

    found = []
    for path in committed_comparisons() if paths is None else paths:
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        verdict = verdict_from_file(path)
        if not verdict:
            continue
        seeds = res.get("seeds") or [(res.get("config") or {}).get("seed", 0)]
        batch = (res.get("config") or {}).get("batch_size")
        found.append((f"{path.parent.name} (`{res.get('data')}`, target split {res.get('eval_split')}; "
                      f"{res.get('steps')} steps per scope{f' of batch {batch}' if batch else ''}, "
                      f"{'4-bit' if res.get('quant') == '4bit' else 'full precision'}, "
                      f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})", verdict, res.get("rows") or []))
    if not found:
        return views.claims_html(None)
    if len(found) == 1:
        where, verdict, rows = found[0]
        return views.claims_html(rows, where=f"the bundled model's comparison {where}", verdict=verdict)
    return views.claims_html([], where="the bundled model's comparisons",
                             verdicts=[(where, verdict) for where, verdict, _ in found])


def licences_md() -> str:
    models = "\n".join(f"| `{b.name}` | `{b.hub_id}` | {b.license}{' (gated)' if b.gated else ''} |" for b in BACKBONES)
    return f"""
### Licences

**Bundled sample data** (`assets/sample`): the synthetic studies (every `scanner-*`, `findings-*` and
`source-test-*` image and every synthetic question and answer) are generated by
`medln.make.task` and dedicated to the public domain (**CC0 1.0**); they depict no patient.
The real example images are converted from files shipped in permissively licensed packages:
pydicom and pydicom-data test files (**MIT**), scikit-image's `retina.jpg` (Wikimedia Commons,
**CC0 1.0**) and `ihc.png` (no known copyright restrictions). `assets/sample/ATTRIBUTION.md`
lists each file.

**Models**: the bundled `medln-tiny` is MedLN's own (**MIT**), trained on the synthetic sample
data. The other backbones are downloaded from the Hugging Face Hub under their own licences:

| name | hub id | licence |
|---|---|---|
{models}

Uploaded datasets keep their own licences (VQA-RAD CC0, SLAKE CC BY 4.0, IU-Xray CC BY-NC-ND 4.0;
PathVQA images are © their publishers). MedLN's code: MIT.
"""


def storage_md(ctx) -> str:
    """Where runs and downloaded models are kept, and whether a restart keeps them."""
    from medln.storage import hf_cache

    from .gpu import zerogpu

    s = ctx.settings
    gpu = (" Training and answers run on **ZeroGPU**: each fine-tune (and each scope of a comparison) is "
           "one GPU call, charged to your Hugging Face quota." if zerogpu() else "")
    return (f"Runs (adapters, metrics, configs): `{s.runs_root}`, {s.storage or 'on this machine'}. "
            f"Downloaded backbones and datasets: `{hf_cache()}`. Each browser session sees only its own runs; "
            f"**Download adapter** keeps a copy.{gpu}")


def build(ctx) -> None:
    import gradio as gr

    gr.Markdown(f"## MedLN {__version__}\n\nLayerNorm fine-tuning of medical vision-language models, after\n{PAPER}")
    gr.Markdown(WHAT)
    gr.HTML(measured_html(), elem_id="about-claims")
    gr.Markdown(WHAT_MORE)
    gr.Markdown(scopes_md(ctx.settings.default_backbone))
    gr.Markdown(licences_md())
    gr.Markdown(f"""
### Not for clinical use

{DISCLAIMER} The bundled model has 1.6 million parameters trained on synthetic pictures: its
answers demonstrate the method, not medicine. No answer or report from this app may be used for
diagnosis or treatment.

### Where your runs live

{storage_md(ctx)}

### Scripting

This app is also an API: `gradio_client` can call `/param_counts`, `/finetune`, `/job`, `/stop`,
`/runs`, `/ask` and `/report` (see "Use via API" at the bottom of the page, and docs/app.md in the repository).
""")
