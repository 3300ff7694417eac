"""The registry: the model families MedLN understands (one module each, one line here) and
the public checkpoints of each. A backbone argument is a registry name, a local folder or a
hub id (`resolve`); the family of an unknown checkpoint comes from its config's `model_type`.

Adding a family is one module (its Family record: parts, projections, prompts, dead norms,
its tiny checkpoint and its benchmark input block) and one line in FAMILIES.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import ASSETS
from ..revisions import HubError, cached_commit, fingerprint, split_revision
from . import blip, gemma3, idefics3, llava, qwen2_vl
from .family import Family

REPORT_PROMPT = "Write the radiology report for this image."

FAMILIES: dict[str, Family] = {f.name: f for f in (
    llava.FAMILY,
    blip.FAMILY,
    idefics3.FAMILY,
    qwen2_vl.FAMILY,
    gemma3.FAMILY,
)}


class BackboneError(RuntimeError):
    """A backbone cannot be resolved or loaded; the message says why and what to do."""


def family_of_model_type(model_type: str) -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise BackboneError(f"unsupported model_type {model_type!r}; MedLN supports: {known}")


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
    batch_size: int | None = None  # the micro-batch its default budget was measured with (None: TrainConfig's generic one)
    hub_license: str = "other"  # the Hub's licence id for model cards (medln.card); "other": see `license`


BACKBONES: list[BackboneSpec] = [
    BackboneSpec(
        "medln-tiny",
        "medln-tiny",
        "llava",
        "MIT (MedLN); pretrained on MedLN's synthetic sample data",
        hub_license="mit",
        note="bundled 1.6 M-parameter LLaVA-architecture model; runs offline on a CPU",
        # Chosen on the bundled default target's (scanner) validation split, never on test: every
        # scope's grid of `compare --tune-lr` (3 rates, extended at an edge up to 6; seed 0) at
        # batch 32, in docs/compare-medln-tiny/results.json "tuning"; every chosen rate is inside
        # its grid. (Earlier rates: docs/experiment/v3.0- to v3.3-b8-compare-scanner.)
        # A tiny model's norms take far larger steps than a 7B model's: these are not defaults
        # for other backbones.
        lrs={"ln": 0.169, "ln-vision": 0.0949, "ln-llm": 0.3, "attn": 0.00316, "ffn": 0.00316,
             "lora": 0.00563, "full": 0.00113, "ia3": 0.3, "bitfit": 0.0999, "prompt": 0.0949, "ln-lora": 0.003},
        # 200 steps x 32 examples: at batch 8 the findings target's best scope scored 7.2 points lower on test
        # (docs/experiment.md, session 14, rule D); the default run trains in ~41 s on 2 CPU cores.
        batch_size=32,
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
    revision: str | None = None  # a hub id's branch, tag or commit (`owner/name@REVISION`)

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

    def revision_record(self) -> dict:
        """What a run's base model was (record it after loading): hub id + requested revision +
        the commit it was loaded at, or a local folder's fingerprint."""
        if self.local:
            return {"source": "local", "name": self.portable_name, "sha256": fingerprint(self.source)}
        return {"source": "hub", "id": self.source, "requested": self.revision,
                "commit": cached_commit(self.source, self.revision)}


def registry_spec(arg: str) -> BackboneSpec | None:
    """The registry's entry for a backbone argument, named as `resolve` takes it: a registry name
    or its hub id, with or without @REVISION (a local folder has none): where its measured
    defaults (rates, batch) are looked up, without touching the disk or the network."""
    name = arg.split("@", 1)[0] if isinstance(arg, str) else ""
    by_hub_id = (b for b in BACKBONES_BY_NAME.values() if "/" in name and b.hub_id == name)
    return BACKBONES_BY_NAME.get(name) or next(by_hub_id, None)


def resolve(arg: str) -> Resolved:
    """A registry name, a local folder, or a hub id (`owner/name`); a hub model (by id or
    registry name) may name a revision: `owner/name@REVISION`."""
    if "@" in arg and not Path(arg).expanduser().is_dir():
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
