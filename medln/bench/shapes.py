"""The published shapes bench measures (configs from hyper-parameters, random weights), and
their toy-width twins for a CPU dry run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..backbones import FAMILIES
from ..config import ConfigError
from ..structure import count_params


@dataclass(frozen=True)
class Shape:
    """A model at its published size: a transformers config built from hyper-parameters."""

    name: str
    family: str  # key of medln.backbones.FAMILIES
    build_config: Callable[[], object]
    reference_params: int | None  # docs/reference.md's (computed) count; None: none published
    image_side: int | None = None  # Qwen2-VL takes any resolution: the side (pixels) benchmarked
    note: str = ""


def _llava_7b():
    """LLaVA-Med v1.5 (`-hf` conversion): CLIP ViT-L/14-336 + Mistral-7B-Instruct-v0.2, MLP projector."""
    from transformers import CLIPVisionConfig, LlavaConfig, MistralConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                                       hidden_act="quick_gelu"),
        text_config=MistralConfig(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                                  rope_theta=1e6, sliding_window=None, tie_word_embeddings=False),
        image_token_index=32000,
        image_seq_length=576,
        vision_feature_layer=-2,  # as LLaVA-1.5: the last CLIP block's output is never used
        vision_feature_select_strategy="default",  # CLS dropped: 576 image tokens
        projector_hidden_act="gelu",
    )


def _smolvlm_256m():
    """SmolVLM-256M: SigLIP base-patch16-512 + SmolLM2-135M, pixel shuffle by 4 (64 tokens per tile)."""
    from transformers import Idefics3Config, Idefics3VisionConfig, LlamaConfig

    return Idefics3Config(
        vision_config=Idefics3VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=LlamaConfig(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                rope_theta=100000.0, tie_word_embeddings=False),
        scale_factor=4,
        image_token_id=49190,
        tie_word_embeddings=False,
    )


def _qwen2_vl_2b():
    """Qwen2-VL-2B: 675M ViT (patch 14, 2x2 merge) + Qwen2-1.5B decoder with M-RoPE, tied embeddings."""
    from transformers import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

    return Qwen2VLConfig(
        vision_config=Qwen2VLVisionConfig(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16,
                                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=Qwen2VLTextConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                      num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                      max_position_embeddings=32768, tie_word_embeddings=True,
                                      rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                       "mrope_section": [16, 24, 24]}),
        tie_word_embeddings=True,
    )


def _medgemma_4b():
    """MedGemma-4B (Gemma 3 4B): SigLIP so400m at 896 px, 256 pooled image tokens; 5 local : 1 global layers."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    layers = 34
    return Gemma3Config(
        text_config=Gemma3TextConfig(vocab_size=262208, hidden_size=2560, intermediate_size=10240,
                                     num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                     head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                                     layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                                  for i in range(layers)]),
        vision_config=SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                         num_attention_heads=16, image_size=896, patch_size=14,
                                         vision_use_head=False),
        mm_tokens_per_image=256,
    )


def _tiny():
    """A 0.23 M-parameter LLaVA for CPU tests (widths multiples of 64: the 4-bit block size)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=32, patch_size=8, projection_dim=64),
        text_config=LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                tie_word_embeddings=False),
        image_token_index=511,
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in [
        Shape("llava-7b", "llava", _llava_7b, 7_567_000_000,
              note="LLaVA-Med v1.5 (Mistral-7B + CLIP ViT-L/14-336): 576 image tokens"),
        Shape("smolvlm-256m", "idefics3", _smolvlm_256m, 256_500_000,
              note="one 512 px tile (64 image tokens); the processor splits large images into up to 16 tiles + 1"),
        Shape("qwen2-vl-2b", "qwen2_vl", _qwen2_vl_2b, 2_209_000_000, image_side=672,
              note="672x672 image: 48x48 patches, 576 image tokens after the 2x2 merge"),
        Shape("medgemma-4b", "gemma3", _medgemma_4b, 4_300_000_000,
              note="896 px image: 4,096 patches pooled to 256 image tokens"),
        Shape("tiny", "llava", _tiny, None, note="CPU test model: 16 image tokens"),
    ]
}

# "Toy" widths keep a shape's image geometry and sequence layout (so its input building is
# checked on a CPU) but shrink every width and depth, and the vocabulary to TOY_VOCAB (special
# token ids renumbered below it): a 262k-entry logits matrix would dominate a CPU step.
TOY_VOCAB = 512
TOY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16}
TOY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "projection_dim": 64, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2}


def toy_config(config):
    """The same model type at toy widths (2 layers, width 64): a CPU dry run of a real shape."""
    d = config.to_dict()
    renumber: dict[int, int] = {}  # old special id -> new one, the same in every sub-config
    for sub in (d, d["text_config"]):
        if "vocab_size" in sub:
            sub["vocab_size"] = TOY_VOCAB
        for k, v in sub.items():
            if k.endswith(("_token_id", "_token_index")) and isinstance(v, int) and v >= TOY_VOCAB - 64:
                sub[k] = renumber.setdefault(v, TOY_VOCAB - 1 - len(renumber))
            elif k == "eos_token_id" and isinstance(v, list):
                sub[k] = [renumber.setdefault(i, TOY_VOCAB - 1 - len(renumber)) if i >= TOY_VOCAB - 64 else i
                          for i in v]
    for key, sizes in (("text_config", TOY_TEXT), ("vision_config", TOY_VISION)):
        sub = d[key]
        sub.update({k: v for k, v in sizes.items() if k in sub})
        if sub.get("layer_types"):  # keep one layer of each kind (Gemma 3: sliding and full)
            kinds = list(dict.fromkeys(sub["layer_types"]))
            sub["layer_types"] = [kinds[i % len(kinds)] for i in range(TOY_TEXT["num_hidden_layers"])]
        rope = sub.get("rope_parameters") or {}
        if "mrope_section" in rope:  # M-RoPE splits head_dim/2 frequencies into (t, h, w)
            half = TOY_TEXT["head_dim"] // 2
            rope["mrope_section"] = [half - 2 * (half // 3), half // 3, half // 3]
    return type(config).from_dict(d)


def shape_config(name: str, *, toy: bool = False):
    try:
        shape = SHAPES[name]
    except KeyError:
        raise ConfigError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}") from None
    config = shape.build_config()
    return shape, (toy_config(config) if toy else config), FAMILIES[shape.family]


def meta_param_count(name: str) -> int:
    """Parameters of a shape, counted on the meta device (no memory; tied weights once)."""
    from ..backbones import meta_model

    shape, config, family = shape_config(name)
    return count_params(meta_model(config, family))
