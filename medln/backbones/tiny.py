"""The tiny-model spec every Family carries: toy sizes, what a family's tiny checkpoint is
made of (TinySpec), and the config pieces the families share. medln.make.tiny builds a
checkpoint from them (a locally trained tokenizer, the real transformers config and
processor classes at toy sizes, random weights), so tests, the benchmark and the bundled
backbone never need the model hub.

Sizes: widths default to 64 because bitsandbytes' `Linear4bit` quantizes in blocks of 64 along
`in_features`; every Linear's input width stays a multiple of 64 (vision, projector, decoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TinySizes:
    """Toy sizes shared by every family; `build_tiny(..., **overrides)` replaces any of them."""

    vocab_size: int = 512
    """Target tokenizer size (byte-level BPE needs >= 256 + special tokens)."""
    hidden_size: int = 64
    """Language-model width (a multiple of 64: bitsandbytes 4-bit block size)."""
    intermediate_size: int = 128
    """Language-model MLP width (a multiple of 64: it is `down_proj`'s in_features)."""
    num_layers: int = 2
    """Language-model decoder layers (BLIP: text encoder and decoder layers each)."""
    num_heads: int = 4
    """Language-model attention heads; head_dim = hidden_size / num_heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention) where the family supports it."""
    vision_hidden_size: int = 64
    """Vision-tower width (a multiple of 64)."""
    vision_intermediate_size: int = 128
    """Vision-tower MLP width (a multiple of 64)."""
    vision_layers: int = 2
    """Vision-tower layers."""
    vision_heads: int = 4
    """Vision-tower attention heads."""
    image_size: int = 32
    """Input image side in pixels (Qwen2-VL: images are resized to at most image_size**2 pixels)."""
    patch_size: int = 8
    """Vision patch side; (image_size / patch_size)**2 patches per image."""
    max_position_embeddings: int = 512
    """Longest text sequence (learned positions for BLIP, RoPE table size elsewhere)."""

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        elif (self.hidden_size // self.num_heads) % 4:
            problems.append("head_dim (hidden_size / num_heads) must be a multiple of 4 (RoPE, Qwen2-VL M-RoPE)")
        if self.num_heads % self.num_kv_heads:
            problems.append(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.vision_hidden_size % self.vision_heads:
            problems.append(f"vision_hidden_size {self.vision_hidden_size} is not a multiple of vision_heads")
        side, rest = divmod(self.image_size, self.patch_size)
        if rest or side % 2:
            # Idefics3's pixel shuffle, Qwen2-VL's 2x2 merge and Gemma 3's pooling need an even grid.
            problems.append(f"image_size / patch_size must be an even integer, got {self.image_size}/{self.patch_size}")
        if problems:
            raise ValueError("invalid tiny sizes: " + "; ".join(problems))


@dataclass(frozen=True)
class TinySpec:
    """How medln.make.tiny builds one family's random checkpoint (its Family record carries it):
    the tokenizer's kind and special tokens, the chat template, and two builders of the real
    transformers config and processor classes at toy sizes."""

    auto_class: str
    """transformers Auto class that loads it from a folder or a hub id."""
    processor_class: str
    tokenizer_kind: str
    """"bpe" (byte-level BPE) or "wordpiece" (BERT-style, BLIP)."""
    named_tokens: dict[str, str]
    """Role -> token: bos/eos/pad/unk/... and the processor's named image tokens (image_token, boi_token)."""
    extra_tokens: tuple[str, ...]
    """Further special tokens the processor or the chat template need."""
    add_bos: bool
    """Whether the tokenizer prepends bos_token (Llama, Gemma) or not (Qwen2, SmolVLM)."""
    chat_template: str | None
    build_config: Callable[[Any, TinySizes], Any]
    """(tokenizer, sizes) -> the transformers config."""
    build_processor: Callable[[Any, TinySizes, str | None], Any]
    """(tokenizer, sizes, chat template) -> the processor."""
    padding_side: str = "right"
    stop_tokens: tuple[str, ...] = ()
    """Tokens that end an answer besides eos_token (generation_config.eos_token_id gets all of them)."""
    prompt_words: tuple[str, ...] = ()
    """Literal words of the chat template, added to the corpus so role names are single tokens."""


# Chat templates: the structure of the real ones, without their default system prompts.

_CONTENT_LOOP = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)


def content(image: str) -> str:
    return _CONTENT_LOOP.replace("IMAGE", image)


def token_ids(tokenizer, *names: str) -> list[int]:
    """Ids of tokens the config must point at; fails loudly instead of silently using unk."""
    ids = tokenizer.convert_tokens_to_ids(list(names))
    missing = [n for n, i in zip(names, ids) if i is None or (i == tokenizer.unk_token_id and n != tokenizer.unk_token)]
    if missing:
        raise ValueError(f"tokens {missing} are not in the tiny tokenizer vocabulary")
    return ids


def clip_vision(s: TinySizes, **kw):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=s.vision_hidden_size,
        intermediate_size=s.vision_intermediate_size,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
        **kw,
    )


def decoder_sizes(tok, s: TinySizes) -> dict:
    """The decoder hyper-parameters every family's text config shares."""
    return dict(
        vocab_size=len(tok),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=s.num_kv_heads,
        max_position_embeddings=s.max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def llama_text(tok, s: TinySizes, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(**decoder_sizes(tok, s), tie_word_embeddings=False, **kw)
