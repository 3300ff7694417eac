"""What a model family is, as data: where its parts live, which linears are its attention and
MLP projections, how its prompts look, which norms never get a gradient, how to build a tiny
random checkpoint of it (`tiny`, medln.make.tiny), and how one image looks in its token
sequence at any shape (`image_block`, medln.bench). One module of this package per family
holds its record; registry.py lists them.

Nothing branches on substrings of a model name: the family of an unknown checkpoint comes
from its config's `model_type`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .tiny import TinySpec


@dataclass
class ImageBlock:
    """One image as the family's processor expands it in the token sequence, and its pixels
    (synthetic inputs for the benchmark, medln.bench.inputs)."""

    ids: list[int]  # placeholder tokens, image tokens included
    image_tokens: int  # tokens that carry image features
    pixels: Callable  # (n images, torch.Generator) -> dict of model inputs
    type_ids: str | None = None  # input marking image tokens with 1, as the processor returns it


def randn(*shape, g):
    import torch

    return torch.randn(*shape, generator=g)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values of this family
    model_class: str  # transformers class loaded for it
    parts: dict[str, tuple[str, ...]]  # part -> module-name prefixes: vision / connector / llm
    # group -> regex on module names within the llm part: attn, ffn; kv (attention keys/values)
    # and down (the MLP down-projection), IA³'s targets
    projections: dict[str, str]
    tiny: TinySpec  # how medln.make.tiny builds a random checkpoint of this family
    # (config, image side in pixels or None) -> one image in the token sequence; None: the
    # benchmark has no input builder for this family
    image_block: Callable[[object, int | None], ImageBlock] | None = None
    prompt: str | None = None  # template with {question}; None -> the processor's chat template
    nested_images: bool = False  # processor wants [[img], [img]] rather than [img, img]
    encoder_decoder: bool = False  # BLIP: question -> encoder, answer -> decoder labels
    dead_norms: Callable[[object], list[str]] = lambda config: []
    not_quantized: tuple[str, ...] = ("lm_head",)  # kept in full precision under 4-bit
    # Soft prompt tuning: None if peft's virtual tokens reach this family's model correctly,
    # else why not (tests/test_methods.py checks both against real-token prefixes).
    prompt_refusal: str | None = None
    fp16_ok: bool = True  # False: activations overflow fp16 (NaNs); medln.precision refuses fp16
    # How `get_image_features` lays out one image's features, so scoring encodes an image once
    # for all its questions (medln.generation): "list" (one tensor per image), "batch" (a tensor
    # whose first dim is the image); None: every question encodes its image (Idefics3 splits
    # images into tiles; Qwen2-VL's M-RoPE needs the grid beside the features; BLIP has no such path).
    image_features: str | None = None


# The projection groups of a Llama-style decoder (LLaVA's Llama/Mistral, SmolVLM, Qwen2, Gemma 3).
DECODER_PROJECTIONS = {
    "attn": r"\.self_attn\.(q_proj|k_proj|v_proj|o_proj)$",
    "ffn": r"\.mlp\.(gate_proj|up_proj|down_proj)$",
    "kv": r"\.self_attn\.(k_proj|v_proj)$",
    "down": r"\.mlp\.down_proj$",
}


def part_of(family: Family, module_name: str) -> str | None:
    for part, prefixes in family.parts.items():
        if any(module_name.startswith(p) or module_name == p.rstrip(".") for p in prefixes):
            return part
    return None


def forward_takes(model_class: str, name: str) -> bool:
    """Whether the installed transformers' `model_class.forward` has an argument `name`."""
    import inspect

    import transformers

    return name in inspect.signature(getattr(transformers, model_class).forward).parameters
