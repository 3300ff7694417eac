"""Backbones: the model families MedLN understands (one module each: llava, blip, idefics3,
qwen2_vl, gemma3), the public checkpoints of each (registry.py), and loading them (load.py).

    family.py    the Family record: parts, projections, prompts, dead norms, tiny spec, bench input block
    tiny.py      the tiny-model spec a family carries (toy sizes, tokens, config builders)
    registry.py  FAMILIES and BACKBONES (one line each), resolve()
    load.py      load_config(), load_backbone(), meta_model(), 4-bit and precision choices
"""

from .. import ASSETS
from .family import DECODER_PROJECTIONS, Family, ImageBlock, part_of
from .load import (CPU_4BIT_BLOCK, CPU_4BIT_ROWS, Backbone, allow_processors_without_torchvision, check_access,
                   cpu_unpackable, default_dtype, hf_token, hub_reachable, load_backbone, load_config, meta_model,
                   model_class, offline_message, quantization_config)
from .registry import (BACKBONES, BACKBONES_BY_NAME, FAMILIES, REPORT_PROMPT, BackboneError, BackboneSpec, Resolved,
                       family_of_model_type, registry_spec, resolve)
from .tiny import TinySizes, TinySpec

__all__ = ["ASSETS", "BACKBONES", "BACKBONES_BY_NAME", "CPU_4BIT_BLOCK", "CPU_4BIT_ROWS", "DECODER_PROJECTIONS",
           "FAMILIES", "REPORT_PROMPT", "Backbone", "BackboneError", "BackboneSpec", "Family", "ImageBlock",
           "Resolved", "TinySizes", "TinySpec", "allow_processors_without_torchvision", "check_access",
           "cpu_unpackable", "default_dtype", "family_of_model_type", "hf_token", "hub_reachable", "load_backbone",
           "load_config", "meta_model", "model_class", "offline_message", "part_of", "quantization_config", "registry_spec", "resolve"]
