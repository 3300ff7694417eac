"""Tiny, random-weight but fully real checkpoints of every vision-language family MedLN supports.

`build_tiny(family, out_dir)` writes a folder (config.json, model.safetensors, tokenizer, image
processor, processor config, chat template) that loads offline through the same code path as a
hub id: `AutoModelForImageTextToText.from_pretrained(folder)` (blip:
`AutoModelForVisualQuestionAnswering`) and `AutoProcessor.from_pretrained(folder)`. Tests, the
benchmark and the bundled offline backbone use it, so nothing ever needs the model hub.

Everything is built locally: the tokenizer is trained on a small corpus with the `tokenizers`
library (byte-level BPE; WordPiece for BLIP's BERT text side), the configs are the real
`transformers` config classes at toy sizes, and the processors are the real processor classes
with their real special tokens, so prompt formatting, image-token expansion, label masking and
4-bit loading behave as they do on the full-size checkpoints.

Sizes: widths default to 64 because bitsandbytes' `Linear4bit` quantizes in blocks of 64 along
`in_features`; every Linear's input width stays a multiple of 64 (vision, projector, decoder).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

from ..no_torchvision import _image_only_video_processor_class, allow_processors_without_torchvision

__all__ = [
    "DEFAULT_CORPUS",
    "TINY_SPECS",
    "FamilySpec",
    "TinySizes",
    "build_tiny",
    "build_tokenizer",
]


# A few hundred words of radiology-style questions and answers, so the BPE merges look like the
# bundled sample data rather than random bytes.
DEFAULT_CORPUS: tuple[str, ...] = (
    "Is there evidence of pneumothorax on this chest radiograph? No, there is no pneumothorax.",
    "What imaging modality was used to acquire this image? This is a computed tomography scan.",
    "Is the heart size normal? Yes, the cardiac silhouette is within normal limits.",
    "Which lung lobe shows consolidation? There is consolidation in the right lower lobe.",
    "Is there a pleural effusion? A small left pleural effusion is present.",
    "What organ is shown in this image? The liver is shown with a hypodense lesion.",
    "Are the costophrenic angles sharp? Yes, both costophrenic angles are sharp.",
    "Is this an MRI or a CT scan? This is a T2 weighted MRI of the brain.",
    "Where is the mass located? The mass is located in the left upper lobe near the hilum.",
    "Is there free air under the diaphragm? No free air is seen under the diaphragm.",
    "What abnormality is seen in the brain? There is an acute infarct in the left MCA territory.",
    "Is the trachea midline? Yes, the trachea is midline.",
    "How many ribs are fractured? Two right posterior rib fractures are visible.",
    "Is there cardiomegaly? Mild cardiomegaly is present.",
    "What is the plane of this image? This is an axial image.",
    "Are there calcified granulomas? Yes, a few calcified granulomas are present in both lungs.",
    "Is the kidney enlarged? The right kidney is enlarged with hydronephrosis.",
    "Does the patient have pulmonary edema? There are signs of interstitial pulmonary edema.",
    "Is there a fracture of the femur? No acute fracture is identified.",
    "What contrast was used? Intravenous contrast was administered.",
    "Findings: The lungs are clear. No focal consolidation, effusion or pneumothorax.",
    "Findings: Heart size is normal. The mediastinal contours are unremarkable.",
    "Impression: No acute cardiopulmonary abnormality.",
    "Impression: Right lower lobe pneumonia. Recommend follow up radiograph in six weeks.",
    "Findings: Degenerative changes of the thoracic spine. Osseous structures are intact.",
    "Findings: Bibasilar atelectasis. Stable enlargement of the cardiac silhouette.",
    "The endotracheal tube terminates above the carina. A central line is in the superior vena cava.",
    "Yes. No. Left. Right. Normal. Abnormal. Axial. Coronal. Sagittal. Chest. Abdomen. Head.",
    "yes no left right upper lower lobe lung heart liver kidney spleen brain bone fracture mass",
)


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
class FamilySpec:
    """How to build one family: registry entry (data, plus the two builders it needs)."""

    name: str
    model_class: str
    """transformers class of the model (the class `build_tiny` instantiates)."""
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
    build_config: Callable[[PreTrainedTokenizerFast, TinySizes], Any]
    build_processor: Callable[[PreTrainedTokenizerFast, TinySizes, str | None], Any]
    padding_side: str = "right"
    stop_tokens: tuple[str, ...] = ()
    """Tokens that end an answer besides eos_token (generation_config.eos_token_id gets all of them)."""
    prompt_words: tuple[str, ...] = ()
    """Literal words of the chat template, added to the corpus so role names are single tokens."""


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int,
    special_tokens: list[str],
    kind: str = "bpe",
    named_tokens: dict[str, str] | None = None,
    add_bos: bool = False,
    chat_template: str | None = None,
    padding_side: str = "right",
) -> PreTrainedTokenizerFast:
    """Train a small tokenizer offline and wrap it as a `PreTrainedTokenizerFast`.

    `special_tokens` get the first ids, in order, and are never split. `named_tokens` maps a role
    (bos_token, eos_token, pad_token, unk_token, sep_token, cls_token, mask_token, or a
    processor-specific one such as image_token / boi_token) to one of them; transformers v5 turns
    unknown `*_token` kwargs into attributes (`tokenizer.image_token`, `tokenizer.image_token_id`)
    which the Gemma3 and Qwen2-VL processors read.
    """
    named_tokens = dict(named_tokens or {})
    specials = list(dict.fromkeys([*special_tokens, *named_tokens.values()]))
    corpus = list(corpus)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "wordpiece":
        unk = named_tokens.get("unk_token", "[UNK]")
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'wordpiece'")
    tok.train_from_iterator(corpus, trainer=trainer)

    if kind == "wordpiece":
        cls, sep = named_tokens["cls_token"], named_tokens["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    else:
        # ByteLevel keeps character offsets right (Idefics3's processor maps chars to tokens).
        post = [processors.ByteLevel(trim_offsets=False)]
        if add_bos:
            bos = named_tokens["bos_token"]
            post.append(
                processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
                )
            )
        tok.post_processor = processors.Sequence(post)

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side=padding_side,
        chat_template=chat_template,
        model_max_length=4096,
        **named_tokens,
    )
    # Register every special token with transformers as well, so decode(skip_special_tokens=True)
    # drops them and they survive save/load as added tokens.
    extra = [t for t in specials if t not in named_tokens.values()]
    if extra:
        hf.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    return hf


def _token_ids(tokenizer: PreTrainedTokenizerFast, *names: str) -> list[int]:
    """Ids of tokens the config must point at; fails loudly instead of silently using unk."""
    ids = tokenizer.convert_tokens_to_ids(list(names))
    missing = [n for n, i in zip(names, ids) if i is None or (i == tokenizer.unk_token_id and n != tokenizer.unk_token)]
    if missing:
        raise ValueError(f"tokens {missing} are not in the tiny tokenizer vocabulary")
    return ids


# ---------------------------------------------------------------------------------------------
# Chat templates: the structure of the real ones, without their default system prompts.

_CONTENT_LOOP = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)


def _content(image: str) -> str:
    return _CONTENT_LOOP.replace("IMAGE", image)


# llava-1.5-hf: "USER: <image>\n{question} ASSISTANT: {answer}</s>"
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: " + _content("<image>\n") + " "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: " + _content("") + "{{ eos_token }}"
    "{% else %}" + _content("") + " {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# SmolVLM / Idefics3: "<|im_start|>User:<image>{question}<end_of_utterance>\nAssistant:"
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + _content("<image>")
    + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

# Qwen2-VL: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _content("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Gemma 3 / MedGemma: "<bos><start_of_turn>user\n<start_of_image>{question}<end_of_turn>\n<start_of_turn>model\n".
# Like the real template it renders bos_token itself (see build_tiny's note on double BOS).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    + _content("<start_of_image>")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# Per-family config and processor builders


def _clip_vision(s: TinySizes, **kw):
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


def _decoder_sizes(tok: PreTrainedTokenizerFast, s: TinySizes) -> dict:
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


def _llama_text(tok: PreTrainedTokenizerFast, s: TinySizes, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(**_decoder_sizes(tok, s), tie_word_embeddings=False, **kw)


def _llava_config(tok, s):
    from transformers import LlavaConfig

    n_patches = (s.image_size // s.patch_size) ** 2
    return LlavaConfig(
        vision_config=_clip_vision(s, projection_dim=s.vision_hidden_size),
        text_config=_llama_text(tok, s),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=n_patches,
        vision_feature_layer=-2,  # as LLaVA-1.5: the last vision block's output is never used
        vision_feature_select_strategy="default",  # drop CLIP's CLS token
        projector_hidden_act="gelu",
    )


def _llava_processor(tok, s, chat_template):
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


def _blip_config(tok, s):
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(
        hidden_size=s.vision_hidden_size,
        intermediate_size=s.vision_intermediate_size,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
        projection_dim=s.vision_hidden_size,
        # BlipVisionConfig defaults to initializer_range=1e-10 (harmless under trained weights):
        # a random tower at that scale feeds ~zero image features and passes ~1e-27 gradients
        # to its norms, so nothing in it could learn.
        initializer_range=0.02,
    )
    text = BlipTextConfig(
        vocab_size=len(tok),
        hidden_size=s.hidden_size,
        encoder_hidden_size=s.vision_hidden_size,
        intermediate_size=s.intermediate_size,
        projection_dim=s.hidden_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        max_position_embeddings=s.max_position_embeddings,
        # As Salesforce/blip-vqa-base: the answer decoder starts from [DEC] (bos) and stops at [SEP].
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id,
    )
    return BlipConfig(
        vision_config=vision, text_config=text, projection_dim=s.hidden_size, image_text_hidden_size=s.hidden_size
    )


def _blip_processor(tok, s, chat_template):
    from transformers import BlipImageProcessorPil, BlipProcessor

    image_processor = BlipImageProcessorPil(size={"height": s.image_size, "width": s.image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tok)


def _idefics3_scale_factor(s: TinySizes) -> int:
    return 2


def _idefics3_config(tok, s):
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
        text_config=_llama_text(tok, s),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=_idefics3_scale_factor(s),
        tie_word_embeddings=False,
    )


def _idefics3_processor(tok, s, chat_template):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    # No image splitting and a single tile of image_size: one image -> one global tile
    # -> (image_size/patch)^2 patches -> pixel shuffle by scale_factor^2 -> image_seq_len tokens.
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": s.image_size},
        max_image_size={"longest_edge": s.image_size},
    )
    seq_len = (s.image_size // s.patch_size) ** 2 // _idefics3_scale_factor(s) ** 2
    return Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=seq_len, chat_template=chat_template
    )


_QWEN2_VL_MERGE = 2  # spatial_merge_size: 2x2 patches -> one language token


def _qwen2_vl_config(tok, s):
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
        spatial_merge_size=_QWEN2_VL_MERGE,
        temporal_patch_size=2,
    )
    text = Qwen2VLTextConfig(
        **_decoder_sizes(tok, s),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
    )
    image, video, start, end = _token_ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        tie_word_embeddings=False,
    )


def _qwen2_vl_processor(tok, s, chat_template):
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor
    from transformers.utils import is_torchvision_available

    factor = s.patch_size * _QWEN2_VL_MERGE
    # Dynamic resolution, capped so an image becomes at most (image_size/factor)^2 tokens.
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=factor * factor,
        max_pixels=s.image_size * s.image_size,
        patch_size=s.patch_size,
        merge_size=_QWEN2_VL_MERGE,
        temporal_patch_size=2,
    )
    video_kwargs = dict(patch_size=s.patch_size, temporal_patch_size=2, merge_size=_QWEN2_VL_MERGE)
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


def _gemma3_tokens_per_image(s: TinySizes) -> int:
    side = s.image_size // s.patch_size
    return (side // 2) ** 2  # Gemma3's projector average-pools the patch grid 2x2 in the tiny build


def _gemma3_config(tok, s):
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    head_dim = s.hidden_size // s.num_heads
    text = Gemma3TextConfig(
        **_decoder_sizes(tok, s),
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
    boi, eoi, image = _token_ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=_gemma3_tokens_per_image(s),
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
        tie_word_embeddings=True,
    )


def _gemma3_processor(tok, s, chat_template):
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    image_processor = Gemma3ImageProcessorPil(size={"height": s.image_size, "width": s.image_size})
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=chat_template,
        image_seq_length=_gemma3_tokens_per_image(s),
    )


TINY_SPECS: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            name="llava",
            model_class="LlavaForConditionalGeneration",
            auto_class="AutoModelForImageTextToText",
            processor_class="LlavaProcessor",
            tokenizer_kind="bpe",
            named_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
            extra_tokens=("<image>",),
            add_bos=True,
            chat_template=LLAVA_TEMPLATE,
            prompt_words=("USER:", "ASSISTANT:"),
            build_config=_llava_config,
            build_processor=_llava_processor,
        ),
        FamilySpec(
            name="blip",
            model_class="BlipForQuestionAnswering",
            auto_class="AutoModelForVisualQuestionAnswering",
            processor_class="BlipProcessor",
            tokenizer_kind="wordpiece",
            named_tokens={
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "mask_token": "[MASK]",
                "bos_token": "[DEC]",
            },
            extra_tokens=(),
            add_bos=False,
            chat_template=None,
            build_config=_blip_config,
            build_processor=_blip_processor,
        ),
        FamilySpec(
            name="idefics3",
            model_class="Idefics3ForConditionalGeneration",
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
            chat_template=IDEFICS3_TEMPLATE,
            prompt_words=("User:", "Assistant:"),
            build_config=_idefics3_config,
            build_processor=_idefics3_processor,
        ),
        FamilySpec(
            name="qwen2_vl",
            model_class="Qwen2VLForConditionalGeneration",
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
            chat_template=QWEN2_VL_TEMPLATE,
            prompt_words=("user\n", "assistant\n", "system\n"),
            build_config=_qwen2_vl_config,
            build_processor=_qwen2_vl_processor,
        ),
        FamilySpec(
            name="gemma3",
            model_class="Gemma3ForConditionalGeneration",
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
            chat_template=GEMMA3_TEMPLATE,
            # As google/medgemma-4b-it: a turn ends with <end_of_turn>, which also stops generation.
            stop_tokens=("<end_of_turn>",),
            prompt_words=("user\n", "model\n"),
            build_config=_gemma3_config,
            build_processor=_gemma3_processor,
        ),
    )
}


def _sizes(overrides: dict[str, Any]) -> TinySizes:
    known = {f.name for f in dataclasses.fields(TinySizes)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown size overrides {unknown}; expected some of {sorted(known)}")
    return TinySizes(**overrides)


def build_tiny(
    family: str,
    out_dir: Path | str,
    *,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Build a random-weight `family` checkpoint with its processor and save both to `out_dir`.

    `overrides` replace fields of `TinySizes` (e.g. hidden_size=256, num_layers=4 for a
    ~5-10 M parameter backbone). Weights are float32 safetensors; the same seed gives the same
    tokenizer and weights. Returns `out_dir`.
    """
    import transformers

    if family not in TINY_SPECS:
        raise KeyError(f"unknown family {family!r}; expected one of {sorted(TINY_SPECS)}")
    spec = TINY_SPECS[family]
    sizes = _sizes(overrides)
    out_dir = Path(out_dir)

    corpus = list(DEFAULT_CORPUS if corpus is None else corpus)
    if spec.prompt_words:
        corpus.extend([" ".join(spec.prompt_words)] * 20)  # frequent enough to get merged
    tokenizer = build_tokenizer(
        corpus,
        vocab_size=sizes.vocab_size,
        special_tokens=list(spec.extra_tokens),
        kind=spec.tokenizer_kind,
        named_tokens=spec.named_tokens,
        add_bos=spec.add_bos,
        chat_template=spec.chat_template,
        padding_side=spec.padding_side,
    )
    config = spec.build_config(tokenizer, sizes)
    config.dtype = torch.float32

    torch.manual_seed(seed)
    model = getattr(transformers, spec.model_class)(config).to(torch.float32).eval()
    # transformers initialises some matrices to zero (Gemma 3's `mm_input_projection_weight`):
    # fine before loading trained weights, but in a random model a zero matrix cuts every
    # gradient upstream of it (Gemma 3's whole vision tower would look "dead"). Trained
    # checkpoints never have all-zero matrices, so give them random values.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, config.get_text_config().initializer_range)
    text_cfg = config.get_text_config()
    eos = [text_cfg.eos_token_id, *tokenizer.convert_tokens_to_ids(list(spec.stop_tokens))]
    model.generation_config = GenerationConfig(
        bos_token_id=text_cfg.bos_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        pad_token_id=text_cfg.pad_token_id,
    )
    processor = spec.build_processor(tokenizer, sizes, spec.chat_template)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir
