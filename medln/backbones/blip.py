"""BLIP for VQA (blip-vqa-base, the family of the paper's small model MISS): a ViT, a BERT text
encoder that reads the question with cross-attention to the image, and a separate text
decoder that writes the answer."""

from __future__ import annotations

from .family import Family
from .tiny import TinySpec


def tiny_config(tok, s):
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


def tiny_processor(tok, s, chat_template):
    from transformers import BlipImageProcessorPil, BlipProcessor

    image_processor = BlipImageProcessorPil(size={"height": s.image_size, "width": s.image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tok)


FAMILY = Family(
    "blip",
    ("blip",),
    "BlipForQuestionAnswering",
    {"vision": ("vision_model.",), "connector": (), "llm": ("text_encoder.", "text_decoder.")},
    # BERT naming: attention.self.{query,key,value} + attention.output.dense (and the
    # cross-attention twins); the MLP is intermediate.dense + the layer's output.dense.
    {"attn": r"\.(attention|crossattention)\.(self\.(query|key|value)|output\.dense)$",
     "ffn": r"\.layer\.\d+\.(intermediate\.dense|output\.dense)$",
     "kv": r"\.(attention|crossattention)\.self\.(key|value)$",
     "down": r"\.layer\.\d+\.output\.dense$"},
    TinySpec(
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
        build_config=tiny_config,
        build_processor=tiny_processor,
    ),
    encoder_decoder=True,
    prompt_refusal="BLIP answers with a separate text decoder (BlipForQuestionAnswering), which peft's "
                   "prompt tuning (causal-LM / seq2seq wrappers) cannot drive",
    # its output layer is tied to the word embeddings and must stay unquantized
    not_quantized=("text_decoder.cls.predictions.decoder",),
)
