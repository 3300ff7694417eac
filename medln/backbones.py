"""Backbones: the model families MedLN understands and the public checkpoints of each.

Both are data. A family says where a model's parts live (vision tower, connector,
language model), which linear layers are its attention and MLP projections, how its
prompts look, and which norms never receive a gradient. A backbone is a named
checkpoint of a family. Nothing here branches on substrings of a model name: the family
of an unknown checkpoint comes from its config's `model_type`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import ASSETS
REPORT_PROMPT = "Write the radiology report for this image."


class BackboneError(RuntimeError):
    """A backbone cannot be resolved or loaded; the message says why and what to do."""


# --------------------------------------------------------------------------- families


def _llava_dead_vision_layers(config) -> list[str]:
    """LLaVA reads image features from vision layer `vision_feature_layer` (-2 in 1.5), so
    every encoder layer after it and `post_layernorm` never see a gradient."""
    layer = config.vision_feature_layer
    if isinstance(layer, (list, tuple)):  # multi-layer features: the deepest one decides
        layer = max(l if l >= 0 else config.vision_config.num_hidden_layers + 1 + l for l in layer)
    n = config.vision_config.num_hidden_layers
    first_unused = layer if layer >= 0 else n + 1 + layer  # hidden_states[0] is the embedding output
    dead = [f"model.vision_tower.encoder.layers.{i}." for i in range(first_unused, n)]
    return dead + ["model.vision_tower.post_layernorm"]


def _gemma3_dead(config) -> list[str]:
    # Gemma3 uses the SigLIP tower's last_hidden_state; a pooling head, if configured, is unused.
    return ["model.vision_tower.head."] if getattr(config.vision_config, "vision_use_head", False) else []


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values of this family
    model_class: str  # transformers class loaded for it
    parts: dict[str, tuple[str, ...]]  # part -> module-name prefixes: vision / connector / llm
    # group -> regex on module names within the llm part: attn, ffn; kv (attention keys/values)
    # and down (the MLP down-projection), IA³'s targets
    projections: dict[str, str]
    prompt: str | None = None  # template with {question}; None -> the processor's chat template
    nested_images: bool = False  # processor wants [[img], [img]] rather than [img, img]
    encoder_decoder: bool = False  # BLIP: question -> encoder, answer -> decoder labels
    dead_norms: Callable[[object], list[str]] = lambda config: []
    not_quantized: tuple[str, ...] = ("lm_head",)  # kept in full precision under 4-bit
    # Soft prompt tuning: None if peft's virtual tokens reach this family's model correctly,
    # else why not (tests/test_new_scopes.py checks both against real-token prefixes).
    prompt_refusal: str | None = None
    fp16_ok: bool = True  # False: activations overflow fp16 (NaNs); medln.precision refuses fp16


DECODER_PROJECTIONS = {
    "attn": r"\.self_attn\.(q_proj|k_proj|v_proj|o_proj)$",
    "ffn": r"\.mlp\.(gate_proj|up_proj|down_proj)$",
    "kv": r"\.self_attn\.(k_proj|v_proj)$",
    "down": r"\.mlp\.down_proj$",
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "llava",
            ("llava",),
            "LlavaForConditionalGeneration",
            {
                "vision": ("model.vision_tower.",),
                "connector": ("model.multi_modal_projector.",),
                "llm": ("model.language_model.", "lm_head"),
            },
            DECODER_PROJECTIONS,
            prompt="USER: <image>\n{question} ASSISTANT:",
            dead_norms=_llava_dead_vision_layers,
            not_quantized=("lm_head", "multi_modal_projector"),
        ),
        Family(
            "blip",
            ("blip",),
            "BlipForQuestionAnswering",
            {"vision": ("vision_model.",), "connector": (), "llm": ("text_encoder.", "text_decoder.")},
            # BERT naming: attention.self.{query,key,value} + attention.output.dense (and the
            # cross-attention twins); the MLP is intermediate.dense + the layer's output.dense.
            {"attn": r"\.(attention|crossattention)\.(self\.(query|key|value)|output\.dense)$",
             "ffn": r"\.layer\.\d+\.(intermediate\.dense|output\.dense)$",
             "kv": r"\.(attention|crossattention)\.self\.(key|value)$",
             "down": r"\.layer\.\d+\.output\.dense$"},
            encoder_decoder=True,
            prompt_refusal="BLIP answers with a separate text decoder (BlipForQuestionAnswering), which peft's "
                           "prompt tuning (causal-LM / seq2seq wrappers) cannot drive",
            # its output layer is tied to the word embeddings and must stay unquantized
            not_quantized=("text_decoder.cls.predictions.decoder",),
        ),
        Family(
            "idefics3",
            ("idefics3", "smolvlm"),
            "Idefics3ForConditionalGeneration",
            {
                "vision": ("model.vision_model.",),
                "connector": ("model.connector.",),
                "llm": ("model.text_model.", "lm_head"),
            },
            DECODER_PROJECTIONS,
            nested_images=True,
            not_quantized=("lm_head", "connector"),
        ),
        Family(
            "qwen2_vl",
            ("qwen2_vl",),
            "Qwen2VLForConditionalGeneration",
            {
                "vision": ("model.visual.blocks.", "model.visual.patch_embed."),
                "connector": ("model.visual.merger.",),
                "llm": ("model.language_model.", "lm_head"),
            },
            DECODER_PROJECTIONS,
            not_quantized=("lm_head", "merger"),
            prompt_refusal="Qwen2-VL places image tokens with 3-D rotary positions computed from input_ids; "
                           "peft's virtual tokens replace input_ids by embeddings, so those positions would be wrong",
        ),
        Family(
            "gemma3",
            ("gemma3",),
            "Gemma3ForConditionalGeneration",
            {
                "vision": ("model.vision_tower.",),
                "connector": ("model.multi_modal_projector.",),
                "llm": ("model.language_model.", "lm_head"),
            },
            DECODER_PROJECTIONS,
            nested_images=True,
            dead_norms=_gemma3_dead,
            not_quantized=("lm_head", "multi_modal_projector"),
            prompt_refusal="Gemma 3 lets image tokens attend to each other through token_type_ids, which peft's "
                           "prompt tuning drops; the image would be read with the wrong attention mask",
            # Gemma 3's activations exceed fp16's range (NaN losses and answers): bf16 or fp32 only
            fp16_ok=False,
        ),
    ]
}


def family_of_model_type(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise BackboneError(f"unsupported model_type {model_type!r}; MedLN supports: {known}")


def part_of(family: Family, module_name: str) -> str | None:
    for part, prefixes in family.parts.items():
        if any(module_name.startswith(p) or module_name == p.rstrip(".") for p in prefixes):
            return part
    return None


# --------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    hub_id: str  # a hub id, or a folder under assets/ for bundled models
    family: str
    license: str
    gated: bool = False  # needs a Hub token (accept the licence on the model page first)
    prompt: str | None = None  # overrides the family prompt (LLaVA-Med's [INST] format)
    note: str = ""
    lrs: dict[str, float] = field(default_factory=dict)  # per-scope learning rates measured on this backbone
    hub_license: str = "other"  # the Hub's licence id for model cards (medln.card); "other": see `license`


BACKBONES: list[BackboneSpec] = [
    BackboneSpec(
        "medln-tiny",
        "medln-tiny",
        "llava",
        "MIT (MedLN); pretrained on MedLN's synthetic sample data",
        hub_license="mit",
        note="bundled 4.8 M-parameter LLaVA-architecture model; runs offline on a CPU",
        # Chosen on the bundled validation split, never on test. A tiny model's norms take far
        # larger steps than a 7B model's: these are not defaults for other backbones.
        # (`compare --tune-lr --steps 100`: docs/compare-medln-tiny/tuning.json for the first seven,
        # docs/compare-medln-tiny/results.json "tuning" for all; ln-vision's, ia3's and ln-lora's best
        # sat on the grid's upper edge when the cap stopped it; ln-lora's rate is its LoRA part's,
        # its norms train at ln's).
        lrs={"ln": 0.3, "ln-vision": 0.0999, "ln-llm": 0.316, "attn": 0.000949, "ffn": 0.000949, "lora": 0.00316,
             "full": 0.0002, "ia3": 0.03, "bitfit": 0.00316, "prompt": 0.00949, "ln-lora": 0.003},
    ),
    BackboneSpec(
        "llava-med-v1.5-7b",
        "chaoyinshe/llava-med-v1.5-mistral-7b-hf",
        "llava",
        "LLaVA-Med research licence (Apache-2.0 code; research use only)",
        prompt="[INST] <image>\n{question} [/INST]",
        note="community transformers conversion of microsoft/llava-med-v1.5-mistral-7b (the paper's large model)",
    ),
    BackboneSpec("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava", "Llama 2 Community Licence", hub_license="llama2"),
    BackboneSpec(
        "blip-vqa-base",
        "Salesforce/blip-vqa-base",
        "blip",
        "BSD-3-Clause",
        hub_license="bsd-3-clause",
        note="encoder-decoder, the family of the paper's small model (MISS)",
    ),
    BackboneSpec("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "idefics3", "Apache-2.0", hub_license="apache-2.0"),
    BackboneSpec("smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", "idefics3", "Apache-2.0", hub_license="apache-2.0"),
    BackboneSpec("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", "Apache-2.0", hub_license="apache-2.0"),
    BackboneSpec(
        "medgemma-4b",
        "google/medgemma-4b-it",
        "gemma3",
        "Health AI Developer Foundations terms of use",
        gated=True,
        note="gated: accept the terms on the model page, then `hf auth login` or set HF_TOKEN; no fp16 (NaNs)",
    ),
]
BACKBONES_BY_NAME = {b.name: b for b in BACKBONES}


@dataclass(frozen=True)
class Resolved:
    """Where a backbone argument points: a local folder or a hub id, and its registry entry."""

    source: str  # local folder path or hub id
    local: bool
    spec: BackboneSpec | None = None
    revision: str | None = None  # a hub id's branch, tag or commit (`owner/name@REVISION`; medln.hub)

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else self.source

    @property
    def portable_name(self) -> str:
        """How an adapter names its base for another machine: the hub id, the bundled model's
        registry name, or a local folder's name (never this machine's absolute path)."""
        if self.spec is not None:
            return self.spec.hub_id
        return Path(self.source).name if self.local else self.source


def resolve(arg: str) -> Resolved:
    """A registry name, a local folder, or a hub id (`owner/name`); a hub model (by id or
    registry name) may name a revision: `owner/name@REVISION`."""
    if "@" in arg and not Path(arg).expanduser().is_dir():
        import dataclasses

        from .hub import HubError, split_revision

        try:
            name, revision = split_revision(arg)
        except HubError as e:
            raise BackboneError(str(e)) from None
        resolved = resolve(name)
        if resolved.local:
            raise BackboneError(f"{arg!r}: {name} is a local folder (or the bundled model); a revision (@...) "
                                "applies to Hub models only")
        return dataclasses.replace(resolved, revision=revision)
    spec = BACKBONES_BY_NAME.get(arg)
    if spec is not None:
        bundled = ASSETS / spec.hub_id
        if bundled.is_dir():
            return Resolved(str(bundled), True, spec)
        return Resolved(spec.hub_id, False, spec)
    path = Path(arg).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{path} is a folder but has no config.json")
        return Resolved(str(path.resolve()), True, None)
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", arg):
        spec = next((b for b in BACKBONES if b.hub_id == arg), None)
        return Resolved(arg, False, spec)
    names = ", ".join(BACKBONES_BY_NAME)
    raise BackboneError(f"unknown backbone {arg!r}: not a registry name ({names}), a folder, or a hub id owner/name")


def hf_token() -> str | None:
    """The Hub token (medln.data.hub.hub_token: HF_TOKEN or `hf auth login`'s); never printed."""
    from .data.hub import hub_token

    return hub_token()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Answers in seconds instead of a long retry loop. An HTTP probe, not a TCP connect:
    some networks accept every connection and then stay silent (medln.data.hub)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from .data.hub import hub_reachable as answers

    return answers(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def check_access(resolved: Resolved) -> dict:
    """kwargs for from_pretrained; raises BackboneError early for offline / gated cases."""
    if resolved.local:
        return {}
    kwargs: dict = {"revision": resolved.revision} if resolved.revision else {}
    if resolved.spec is not None and resolved.spec.gated and hf_token() is None:
        raise BackboneError(
            f"{resolved.source} is gated: accept its terms on the Hugging Face model page, "
            "then log in with `hf auth login` or set the HF_TOKEN environment variable"
        )
    token = hf_token()
    if token:
        kwargs["token"] = token
    if not hub_reachable():
        # Fall back to the local cache; fail with a message rather than a retry loop.
        kwargs["local_files_only"] = True
    return kwargs


def offline_message(resolved: Resolved) -> str:
    return (
        f"cannot load {resolved.source}: the Hugging Face Hub is not reachable from here and the "
        "model is not in the local cache. Use the bundled 'medln-tiny', a local folder, or run "
        "where the network is available."
    )


def load_config(arg: str, *, trust_remote_code: bool = False):
    """The model config alone (config.json): enough to count parameters on the meta device."""
    from transformers import AutoConfig

    resolved = resolve(arg)
    kwargs = check_access(resolved)
    try:
        config = AutoConfig.from_pretrained(resolved.source, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as e:
        if kwargs.get("local_files_only"):
            raise BackboneError(offline_message(resolved)) from None
        raise BackboneError(f"cannot read the config of {resolved.source}: {e}") from None
    except ValueError as e:  # transformers' long advice for an unknown model_type or remote code
        raise BackboneError(_config_refusal(resolved, e)) from None
    return resolved, config, family_of_model_type(config.model_type)


def _config_refusal(resolved: Resolved, error: ValueError) -> str:
    """One line for a config transformers cannot build: custom code it was not allowed to
    run, or a model_type it does not know."""
    import json

    raw: dict = {}
    if resolved.local:
        try:
            raw = json.loads((Path(resolved.source) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    if (isinstance(raw, dict) and "auto_map" in raw) or "trust_remote_code" in str(error):
        return (f"{resolved.source}: its config needs custom code from the model's repository (auto_map); MedLN "
                "runs no remote code unless asked: `train --trust-remote-code` allows it, only if you trust that code")
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    return (f"{resolved.source}: unsupported model_type {model_type!r} (unknown to the installed transformers); "
            f"MedLN supports: {known}")


@dataclass
class Backbone:
    """A loaded model with its processor; `model` may later be wrapped by peft."""

    name: str
    source: str
    family: Family
    model: object
    processor: object
    quant: str
    prompt: str | None  # {question} template, or None for the processor's chat template
    dtype: str = "float32"  # of the unquantized weights, as loaded
    portable_name: str = ""  # Resolved.portable_name
    notes: list[str] = field(default_factory=list)  # what loading changed, for the user (4-bit on a CPU)
    precision: object = None  # medln.precision.Precision it computes in (None: from `dtype`)


def allow_processors_without_torchvision() -> None:
    """Qwen2-VL's processor insists on a video processor, which needs torchvision (there is no
    CPU build here); medln.no_torchvision installs an image-only stand-in when it is absent."""
    from .no_torchvision import allow_processors_without_torchvision as allow

    allow()


def model_class(family: Family):
    import transformers

    return getattr(transformers, family.model_class)


def quantization_config(family: Family, quant: str, keep_full_precision: list[str], compute_dtype):
    """NF4 with double quantisation (QLoRA's recipe). `keep_full_precision` holds the linear
    layers a scope trains as whole weights: Linear4bit weights cannot take gradients."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(family.not_quantized) + list(keep_full_precision),
    )


def default_dtype(arg: str, device: str, precision: str = "auto") -> str:
    """The torch dtype name a load of `arg` on `device` uses for `precision` (medln.precision):
    auto is bf16 on a GPU with bf16, fp16 on one without (fp32 for a family that refuses
    fp16), fp32 on a CPU."""
    from .precision import resolve_precision

    try:
        return resolve_precision(precision, device=device, fp16_ok=_fp16_ok(arg)).dtype_name
    except ValueError as e:
        raise BackboneError(str(e)) from None


def _fp16_ok(arg: str) -> bool:
    """The family's fp16_ok: from the registry, else from config.json (when readable)."""
    spec = BACKBONES_BY_NAME.get(arg) or next((b for b in BACKBONES if b.hub_id == arg), None)
    if spec is not None:
        return FAMILIES[spec.family].fp16_ok
    try:
        return load_config(arg)[2].fp16_ok
    except Exception:  # unreadable here: loading will say why
        return True


# bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a Linear4bit's weight for its fused
# kernel at the first no-grad forward (bitsandbytes.functional._convert_weight_packed_for_cpu):
# it asserts out_features % 32 == 0 ("N must be divisible by block_n") and K even, and
# reshapes the per-block scales to (out_features, in_features // 64), which needs
# in_features % 64 == 0 (the NF4 block size). Layers that break either rule stay unquantized
# on every CPU, so a model loads and answers the same on CPUs with and without that kernel.
CPU_4BIT_ROWS = 32
CPU_4BIT_BLOCK = 64


def cpu_unpackable(config, family: Family, skip: list[str]) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of the linear layers the CPU 4-bit kernel cannot pack."""
    from .scopes import describe, meta_model

    skipped = lambda name: any(name == k or name.startswith(k + ".") or name.endswith("." + k) for k in skip)  # noqa: E731
    return [(m.name, m.in_features, m.out_features) for m in describe(meta_model(config, family))
            if m.kind == "linear" and not skipped(m.name)
            and (m.out_features % CPU_4BIT_ROWS or m.in_features % CPU_4BIT_BLOCK)]


def load_backbone(
    arg: str,
    *,
    quant: str = "none",
    device: str | None = None,
    keep_full_precision: list[str] = (),
    dtype: str | None = None,
    trust_remote_code: bool = False,
    precision: str = "auto",
) -> Backbone:
    """Load model + processor from a registry name, a folder or a hub id.

    The frozen weights (and the 4-bit compute) take the run's precision (medln.precision):
    `auto` is bf16 on a GPU with bf16, fp16 on one without (fp32 for a family that gives NaNs
    in fp16), fp32 on a CPU; `dtype` (a torch dtype name) overrides it (medln.runs.BaseSpec:
    as a run was trained).
    """
    import torch
    from transformers import AutoProcessor

    from .precision import from_dtype, resolve_precision

    resolved, config, family = load_config(arg, trust_remote_code=trust_remote_code)
    kwargs = check_access(resolved)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        prec = from_dtype(dtype, "as the run was trained") if dtype else resolve_precision(
            precision, device=device, fp16_ok=family.fp16_ok, model=f"{resolved.name} ({family.name})")
    except ValueError as e:  # the same for every scope of a sweep: a backbone problem, not a row
        raise BackboneError(str(e)) from None
    dtype = prec.dtype
    keep, notes = list(keep_full_precision), []
    if quant == "4bit" and not device.startswith("cuda"):
        odd = cpu_unpackable(config, family, list(family.not_quantized) + keep)
        if odd:
            keep += [name for name, _, _ in odd]
            name, k, n = odd[0]
            notes.append(f"{len(odd)} linear layer(s) kept unquantized (fp32): bitsandbytes' CPU 4-bit kernel needs "
                         f"out_features divisible by {CPU_4BIT_ROWS} and in_features by {CPU_4BIT_BLOCK} "
                         f"(e.g. {name}: {k} -> {n})")
    qconfig = quantization_config(family, quant, keep, dtype)
    allow_processors_without_torchvision()
    try:
        processor = AutoProcessor.from_pretrained(resolved.source, trust_remote_code=trust_remote_code, **kwargs)
        model = model_class(family).from_pretrained(
            resolved.source,
            dtype=dtype,
            quantization_config=qconfig,
            device_map={"": device},
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except OSError as e:
        if kwargs.get("local_files_only"):
            raise BackboneError(offline_message(resolved)) from None
        raise BackboneError(f"cannot load {resolved.source}: {e}") from None
    model.eval()
    prompt = (resolved.spec.prompt if resolved.spec else None) or family.prompt
    return Backbone(resolved.name, resolved.source, family, model, processor, quant, prompt,
                    str(dtype).removeprefix("torch."), resolved.portable_name, notes, prec)
