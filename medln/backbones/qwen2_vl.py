"""Qwen2-VL: a ViT at any resolution (2x2 patch merge) and a Qwen2 decoder with M-RoPE, whose
3-D rotary positions come from the image tokens in input_ids."""

from __future__ import annotations

from .family import DECODER_PROJECTIONS, Family, ImageBlock, forward_takes, randn
from .tiny import TinySpec, content, decoder_sizes, token_ids

MODEL_CLASS = "Qwen2VLForConditionalGeneration"


def image_block(config, image_side: int | None) -> ImageBlock:
    import torch

    v = config.vision_config
    factor = v.patch_size * v.spatial_merge_size
    side = max(factor, (image_side or 448) // factor * factor)
    grid = side // v.patch_size
    n = grid * grid // v.spatial_merge_size**2

    def pixels(k, g):  # flattened patches (k * grid^2, C * T * P * P) and their (t, h, w) grid
        return {"pixel_values": randn(k * grid * grid, 3 * v.temporal_patch_size * v.patch_size**2, g=g),
                "image_grid_thw": torch.tensor([[1, grid, grid]] * k)}

    ids = [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
    # transformers >= 5.2x computes M-RoPE positions from the processor's mm_token_type_ids
    takes = forward_takes(MODEL_CLASS, "mm_token_type_ids")
    return ImageBlock(ids, n, pixels, type_ids="mm_token_type_ids" if takes else None)


# ------------------------------------------------------------------ the tiny checkpoint

# Qwen2-VL: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + content("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MERGE = 2  # spatial_merge_size: 2x2 patches -> one language token


def tiny_config(tok, s):
    from transformers import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

    head_dim = s.hidden_size // s.num_heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    vision = Qwen2VLVisionConfig(
        depth=s.vision_layers,
        embed_dim=s.vision_hidden_size,
        hidden_size=s.hidden_size,  # merger output = language width
        mlp_ratio=s.vision_intermediate_size // s.vision_hidden_size,
        num_heads=s.vision_heads,
        patch_size=s.patch_size,
        spatial_merge_size=MERGE,
        temporal_patch_size=2,
    )
    text = Qwen2VLTextConfig(
        **decoder_sizes(tok, s),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
    )
    image, video, start, end = token_ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        tie_word_embeddings=False,
    )


def tiny_processor(tok, s, chat_template):
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor
    from transformers.utils import is_torchvision_available

    from ..no_torchvision import _image_only_video_processor_class, allow_processors_without_torchvision

    factor = s.patch_size * MERGE
    # Dynamic resolution, capped so an image becomes at most (image_size/factor)^2 tokens.
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=factor * factor,
        max_pixels=s.image_size * s.image_size,
        patch_size=s.patch_size,
        merge_size=MERGE,
        temporal_patch_size=2,
    )
    video_kwargs = dict(patch_size=s.patch_size, temporal_patch_size=2, merge_size=MERGE)
    if is_torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(**video_kwargs)
    else:
        allow_processors_without_torchvision()
        video_processor = _image_only_video_processor_class()[0](**video_kwargs)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=chat_template,
    )


FAMILY = Family(
    "qwen2_vl",
    ("qwen2_vl",),
    MODEL_CLASS,
    {
        "vision": ("model.visual.blocks.", "model.visual.patch_embed."),
        "connector": ("model.visual.merger.",),
        "llm": ("model.language_model.", "lm_head"),
    },
    DECODER_PROJECTIONS,
    TinySpec(
        auto_class="AutoModelForImageTextToText",
        processor_class="Qwen2VLProcessor",
        tokenizer_kind="bpe",
        # As Qwen2-VL-Instruct: no BOS; <|endoftext|> pads; <|im_end|> ends a turn.
        named_tokens={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
        extra_tokens=(
            "<|im_start|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ),
        add_bos=False,
        chat_template=TEMPLATE,
        prompt_words=("user\n", "assistant\n", "system\n"),
        build_config=tiny_config,
        build_processor=tiny_processor,
    ),
    image_block=image_block,
    not_quantized=("lm_head", "merger"),
    prompt_refusal="Qwen2-VL places image tokens with 3-D rotary positions computed from input_ids; "
                   "peft's virtual tokens replace input_ids by embeddings, so those positions would be wrong",
)
