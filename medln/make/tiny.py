"""Tiny, random-weight but fully real checkpoints of every vision-language family MedLN supports.

`build_tiny(family, out_dir)` writes a folder (config.json, model.safetensors, tokenizer, image
processor, processor config, chat template) that loads offline through the same code path as a
hub id: `AutoModelForImageTextToText.from_pretrained(folder)` (blip:
`AutoModelForVisualQuestionAnswering`) and `AutoProcessor.from_pretrained(folder)`. Tests, the
benchmark and the bundled offline backbone use it, so nothing ever needs the model hub.

What each family's checkpoint is made of lives in its Family record (`Family.tiny`,
medln.backbones.<family>): its special tokens, chat template and the two builders of the real
`transformers` config and processor classes at toy sizes. This module does what every family
shares: it trains the tokenizer on a small corpus with the `tokenizers` library (byte-level
BPE; WordPiece for BLIP's BERT text side), builds the model with random weights and saves it,
so prompt formatting, image-token expansion, label masking and 4-bit loading behave as they do
on the full-size checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

from ..backbones import FAMILIES, TinySizes

__all__ = ["DEFAULT_CORPUS", "TinySizes", "build_tiny", "build_tokenizer"]


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

    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    spec = FAMILIES[family].tiny
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
    model = getattr(transformers, FAMILIES[family].model_class)(config).to(torch.float32).eval()
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
