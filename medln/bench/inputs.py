"""Synthetic inputs at a shape: one image, as its family's processor would expand it (each
Family record carries its `image_block`, medln.backbones), plus random text."""

from __future__ import annotations

from ..backbones import Family, ImageBlock
from ..config import ConfigError
from .shapes import Shape


def image_block(shape: Shape, config, family: Family) -> ImageBlock:
    """One image of `shape` as `family`'s processor lays it out (Family.image_block)."""
    if family.image_block is None:
        raise ConfigError(f"{shape.name}: the benchmark has no input builder for the {family.name} family")
    return family.image_block(config, shape.image_side)


def _special_ids(config) -> set[int]:
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "boi_token_index",
             "eoi_token_index")
    return {i for i in (getattr(config, n, None) for n in names) if isinstance(i, int)}


def synthetic_batch(shape: Shape, config, family: Family, batch: int, seq: int, *, labels: bool = True,
                    seed: int = 0) -> dict:
    """`batch` sequences of `seq` tokens: <bos> + one image block + random text. Labels cover
    the text (the image block and <bos> are -100), as a VQA answer would."""
    import torch

    block = image_block(shape, config, family)
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
    return image_block(shape, config, family).image_tokens
