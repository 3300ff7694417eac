"""LLaVA (llava-1.5, LLaVA-Med v1.5 `-hf` conversions, the bundled medln-tiny): a CLIP vision
tower, an MLP projector and a Llama/Mistral decoder; image features from vision layer -2."""

from __future__ import annotations

from .family import DECODER_PROJECTIONS, Family, ImageBlock, randn
from .tiny import TinySpec, clip_vision, content, llama_text


def dead_vision_layers(config) -> list[str]:
    """LLaVA reads image features from vision layer `vision_feature_layer` (-2 in 1.5), so
    every encoder layer after it and `post_layernorm` never see a gradient."""
    layer = config.vision_feature_layer
    if isinstance(layer, (list, tuple)):  # multi-layer features: the deepest one decides
        layer = max(l if l >= 0 else config.vision_config.num_hidden_layers + 1 + l for l in layer)
    n = config.vision_config.num_hidden_layers
    first_unused = layer if layer >= 0 else n + 1 + layer  # hidden_states[0] is the embedding output
    dead = [f"model.vision_tower.encoder.layers.{i}." for i in range(first_unused, n)]
    return dead + ["model.vision_tower.post_layernorm"]


def image_block(config, image_side: int | None) -> ImageBlock:
    v = config.vision_config
    n = (v.image_size // v.patch_size) ** 2 + (1 if config.vision_feature_select_strategy == "full" else 0)
    return ImageBlock([config.image_token_id] * n, n,
                      lambda k, g: {"pixel_values": randn(k, 3, v.image_size, v.image_size, g=g)})


# ------------------------------------------------------------------ the tiny checkpoint

# llava-1.5-hf: "USER: <image>\n{question} ASSISTANT: {answer}</s>"
TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: " + content("<image>\n") + " "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: " + content("") + "{{ eos_token }}"
    "{% else %}" + content("") + " {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def tiny_config(tok, s):
    from transformers import LlavaConfig

    n_patches = (s.image_size // s.patch_size) ** 2
    return LlavaConfig(
        vision_config=clip_vision(s, projection_dim=s.vision_hidden_size),
        text_config=llama_text(tok, s),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=n_patches,
        vision_feature_layer=-2,  # as LLaVA-1.5: the last vision block's output is never used
        vision_feature_select_strategy="default",  # drop CLIP's CLS token
        projector_hidden_act="gelu",
    )


def tiny_processor(tok, s, chat_template):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=s.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token (then dropped by the "default" strategy)
        chat_template=chat_template,
    )


FAMILY = Family(
    "llava",
    ("llava",),
    "LlavaForConditionalGeneration",
    {
        "vision": ("model.vision_tower.",),
        "connector": ("model.multi_modal_projector.",),
        "llm": ("model.language_model.", "lm_head"),
    },
    DECODER_PROJECTIONS,
    TinySpec(
        auto_class="AutoModelForImageTextToText",
        processor_class="LlavaProcessor",
        tokenizer_kind="bpe",
        named_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        extra_tokens=("<image>",),
        add_bos=True,
        chat_template=TEMPLATE,
        prompt_words=("USER:", "ASSISTANT:"),
        build_config=tiny_config,
        build_processor=tiny_processor,
    ),
    image_block=image_block,
    prompt="USER: <image>\n{question} ASSISTANT:",
    dead_norms=dead_vision_layers,
    not_quantized=("lm_head", "multi_modal_projector"),
    image_features="list",
)
