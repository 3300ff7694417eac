"""Synthetic inputs at a shape: one image block per family, as its processor would expand it,
plus random text. Keyed by medln.backbones.FAMILIES (a test checks the keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..backbones import FAMILIES, Family, model_class
from ..config import ConfigError
from .shapes import Shape


@dataclass
class ImageBlock:
    """One image as the family's processor expands it in the token sequence, and its pixels."""

    ids: list[int]  # placeholder tokens, image tokens included
    image_tokens: int  # tokens that carry image features
    pixels: Callable  # (n images, torch.Generator) -> dict of model inputs
    type_ids: str | None = None  # input marking image tokens with 1, as the processor returns it


def _randn(*shape, g):
    import torch

    return torch.randn(*shape, generator=g)


def _llava_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 + (1 if config.vision_feature_select_strategy == "full" else 0)
    return ImageBlock([config.image_token_id] * n, n,
                      lambda k, g: {"pixel_values": _randn(k, 3, v.image_size, v.image_size, g=g)})


def _idefics3_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2  # pixel shuffle
    return ImageBlock([config.image_token_id] * n, n,  # one tile per image: (k, tiles, 3, H, W)
                      lambda k, g: {"pixel_values": _randn(k, 1, 3, v.image_size, v.image_size, g=g)})


def _qwen2_vl_block(config, shape: Shape) -> ImageBlock:
    import torch

    v = config.vision_config
    factor = v.patch_size * v.spatial_merge_size
    side = max(factor, (shape.image_side or 448) // factor * factor)
    grid = side // v.patch_size
    n = grid * grid // v.spatial_merge_size**2

    def pixels(k, g):  # flattened patches (k * grid^2, C * T * P * P) and their (t, h, w) grid
        return {"pixel_values": _randn(k * grid * grid, 3 * v.temporal_patch_size * v.patch_size**2, g=g),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * k)}

    ids = [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
    # transformers >= 5.2x computes M-RoPE positions from the processor's mm_token_type_ids
    takes = _forward_takes(FAMILIES[shape.family], "mm_token_type_ids")
    return ImageBlock(ids, n, pixels, type_ids="mm_token_type_ids" if takes else None)


def _forward_takes(family: Family, name: str) -> bool:
    import inspect

    return name in inspect.signature(model_class(family).forward).parameters


def _gemma3_block(config, shape: Shape) -> ImageBlock:
    v = config.vision_config
    n = config.mm_tokens_per_image
    ids = [config.boi_token_index] + [config.image_token_id] * n + [config.eoi_token_index]
    return ImageBlock(ids, n, lambda k, g: {"pixel_values": _randn(k, 3, v.image_size, v.image_size, g=g)},
                      type_ids="token_type_ids")  # bidirectional attention within the image


IMAGE_BLOCKS: dict[str, Callable[[object, Shape], ImageBlock]] = {
    "llava": _llava_block, "idefics3": _idefics3_block, "qwen2_vl": _qwen2_vl_block, "gemma3": _gemma3_block,
}


def _special_ids(config) -> set[int]:
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "boi_token_index",
             "eoi_token_index")
    return {i for i in (getattr(config, n, None) for n in names) if isinstance(i, int)}


def synthetic_batch(shape: Shape, config, family: Family, batch: int, seq: int, *, labels: bool = True,
                    seed: int = 0) -> dict:
    """`batch` sequences of `seq` tokens: <bos> + one image block + random text. Labels cover
    the text (the image block and <bos> are -100), as a VQA answer would."""
    import torch

    block = IMAGE_BLOCKS[family.name](config, shape)
    text_cfg = config.get_text_config()
    prefix = [text_cfg.bos_token_id if text_cfg.bos_token_id is not None else 1] + block.ids
    if seq < len(prefix) + 2:
        raise ConfigError(f"--seq {seq} is too short for {shape.name}: one image takes {len(prefix)} tokens")
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, text_cfg.vocab_size, (batch, seq - len(prefix)), generator=g)
    for special in _special_ids(config):  # random text must not look like image placeholders
        text[text == special] = 3
    ids = torch.cat([torch.tensor(prefix).expand(batch, -1), text], dim=1)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **block.pixels(batch, g)}
    if block.type_ids:
        out[block.type_ids] = (ids == config.image_token_id).long()
    if labels:
        lab = ids.clone()
        lab[:, : len(prefix)] = -100
        out["labels"] = lab
    return out


def image_tokens(shape: Shape, config, family: Family) -> int:
    return IMAGE_BLOCKS[family.name](config, shape).image_tokens
