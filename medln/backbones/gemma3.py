"""Gemma 3 / MedGemma: a SigLIP vision tower, a pooling projector (tokens per image fixed) and a
Gemma 3 decoder whose RMSNorm computes x * (1 + w); bf16 or fp32 only (fp16 overflows)."""

from __future__ import annotations

from .family import DECODER_PROJECTIONS, Family, ImageBlock, randn
from .tiny import TinySpec, content, decoder_sizes, token_ids


def dead_head(config) -> list[str]:
    # Gemma3 uses the SigLIP tower's last_hidden_state; a pooling head, if configured, is unused.
    return ["model.vision_tower.head."] if getattr(config.vision_config, "vision_use_head", False) else []


def image_block(config, image_side: int | None) -> ImageBlock:
    v = config.vision_config
    n = config.mm_tokens_per_image
    ids = [config.boi_token_index] + [config.image_token_id] * n + [config.eoi_token_index]
    return ImageBlock(ids, n, lambda k, g: {"pixel_values": randn(k, 3, v.image_size, v.image_size, g=g)},
                      type_ids="token_type_ids")  # bidirectional attention within the image


# ------------------------------------------------------------------ the tiny checkpoint

# Gemma 3 / MedGemma: "<bos><start_of_turn>user\n<start_of_image>{question}<end_of_turn>\n<start_of_turn>model\n".
# Like the real template it renders bos_token itself (see build_tiny's note on double BOS).
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    + content("<start_of_image>")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def tokens_per_image(s) -> int:
    side = s.image_size // s.patch_size
    return (side // 2) ** 2  # Gemma3's projector average-pools the patch grid 2x2 in the tiny build


def tiny_config(tok, s):
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    head_dim = s.hidden_size // s.num_heads
    text = Gemma3TextConfig(
        **decoder_sizes(tok, s),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=64,
        # One local and one global layer, as the real 5:1 pattern has both kinds.
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s.num_layers)],
    )
    vision = SiglipVisionConfig(
        hidden_size=s.vision_hidden_size,
        intermediate_size=s.vision_intermediate_size,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
        vision_use_head=False,
    )
    boi, eoi, image = token_ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens_per_image(s),
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
        tie_word_embeddings=True,
    )


def tiny_processor(tok, s, chat_template):
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    image_processor = Gemma3ImageProcessorPil(size={"height": s.image_size, "width": s.image_size})
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=chat_template,
        image_seq_length=tokens_per_image(s),
    )


FAMILY = Family(
    "gemma3",
    ("gemma3",),
    "Gemma3ForConditionalGeneration",
    {
        "vision": ("model.vision_tower.",),
        "connector": ("model.multi_modal_projector.",),
        "llm": ("model.language_model.", "lm_head"),
    },
    DECODER_PROJECTIONS,
    TinySpec(
        auto_class="AutoModelForImageTextToText",
        processor_class="Gemma3Processor",
        tokenizer_kind="bpe",
        named_tokens={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            # Read by Gemma3Processor as tokenizer.boi_token / eoi_token / image_token.
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        extra_tokens=("<start_of_turn>", "<end_of_turn>"),
        add_bos=True,
        chat_template=TEMPLATE,
        # As google/medgemma-4b-it: a turn ends with <end_of_turn>, which also stops generation.
        stop_tokens=("<end_of_turn>",),
        prompt_words=("user\n", "model\n"),
        build_config=tiny_config,
        build_processor=tiny_processor,
    ),
    image_block=image_block,
    nested_images=True,
    image_features="batch",
    dead_norms=dead_head,
    not_quantized=("lm_head", "multi_modal_projector"),
    prompt_refusal="Gemma 3 lets image tokens attend to each other through token_type_ids, which peft's "
                   "prompt tuning drops; the image would be read with the wrong attention mask",
    # Gemma 3's activations exceed fp16's range (NaN losses and answers): bf16 or fp32 only
    fp16_ok=False,
)
