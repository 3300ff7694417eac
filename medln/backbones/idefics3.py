"""Idefics3 / SmolVLM: a SigLIP-style vision tower, a pixel-shuffle connector and a Llama
(SmolLM2) decoder; images nested per sample, one tile per image in the tiny build."""

from __future__ import annotations

from .family import DECODER_PROJECTIONS, Family, ImageBlock, randn
from .tiny import TinySpec, content, llama_text


def image_block(config, image_side: int | None) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2  # pixel shuffle
    return ImageBlock([config.image_token_id] * n, n,  # one tile per image: (k, tiles, 3, H, W)
                      lambda k, g: {"pixel_values": randn(k, 1, 3, v.image_size, v.image_size, g=g)})


# ------------------------------------------------------------------ the tiny checkpoint

# SmolVLM / Idefics3: "<|im_start|>User:<image>{question}<end_of_utterance>\nAssistant:"
TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + content("<image>")
    + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
SCALE_FACTOR = 2  # the tiny build's pixel shuffle


def tiny_config(tok, s):
    from transformers import Idefics3Config, Idefics3VisionConfig

    vision = Idefics3VisionConfig(
        hidden_size=s.vision_hidden_size,
        intermediate_size=s.vision_intermediate_size,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
    )
    return Idefics3Config(
        vision_config=vision,
        text_config=llama_text(tok, s),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE_FACTOR,
        tie_word_embeddings=False,
    )


def tiny_processor(tok, s, chat_template):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    # No image splitting and a single tile of image_size: one image -> one global tile
    # -> (image_size/patch)^2 patches -> pixel shuffle by scale_factor^2 -> image_seq_len tokens.
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": s.image_size},
        max_image_size={"longest_edge": s.image_size},
    )
    seq_len = (s.image_size // s.patch_size) ** 2 // SCALE_FACTOR**2
    return Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len, chat_template=chat_template
    )


FAMILY = Family(
    "idefics3",
    ("idefics3", "smolvlm"),
    "Idefics3ForConditionalGeneration",
    {
        "vision": ("model.vision_model.",),
        "connector": ("model.connector.",),
        "llm": ("model.text_model.", "lm_head"),
    },
    DECODER_PROJECTIONS,
    TinySpec(
        auto_class="AutoModelForImageTextToText",
        processor_class="Idefics3Processor",
        tokenizer_kind="bpe",
        # As HuggingFaceTB/SmolVLM: no BOS prepended (the template starts with <|im_start|>).
        named_tokens={
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
        },
        extra_tokens=(
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
        ),
        add_bos=False,
        chat_template=TEMPLATE,
        prompt_words=("User:", "Assistant:"),
        build_config=tiny_config,
        build_processor=tiny_processor,
    ),
    image_block=image_block,
    nested_images=True,
    not_quantized=("lm_head", "connector"),
)
