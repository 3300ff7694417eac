"""Every tiny family loads through the hub code path and trains, generates, batches and loads in 4-bit.

The checkpoints come from `medln.make.tiny.build_tiny` (random weights, locally trained tokenizer) and
are loaded back with the Auto classes exactly as a hub id would be. Every family of the registry
(medln.backbones.FAMILIES) is tested; its Family record carries what its tiny checkpoint is made of.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoProcessor, BitsAndBytesConfig

from medln.backbones import FAMILIES
from medln.make.tiny import build_tiny
from medln.no_torchvision import allow_processors_without_torchvision

ALL_FAMILIES = list(FAMILIES)
CHAT_FAMILIES = [f for f in FAMILIES if not FAMILIES[f].encoder_decoder]  # BLIP: encoder-decoder
QUESTIONS = ["Is there a pleural effusion?", "Which lung lobe shows a consolidation in this chest radiograph?"]
ANSWERS = ["No.", "The right lower lobe."]


def gradient_image(size: int = 64, flip: bool = False) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    channels = [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 128, np.uint8)]
    rgb = np.stack(channels, -1)
    return Image.fromarray(rgb[:, ::-1].copy() if flip else rgb)


def image_for(question: str) -> Image.Image:
    """A different image per question, the same one whether the question is batched or alone."""
    return gradient_image(flip=QUESTIONS.index(question) % 2 == 1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """family -> folder, each built once per test module."""
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return get


def load(folder, family: str, **kwargs):
    allow_processors_without_torchvision()  # Qwen2-VL's processor needs it without torchvision
    auto = getattr(transformers, FAMILIES[family].tiny.auto_class)
    return auto.from_pretrained(folder, **kwargs), AutoProcessor.from_pretrained(folder)


def chat_batch(processor, questions, answers=None, *, padding_side="right"):
    """Inputs (and labels when answers are given) for chat families.

    Labels: the prompt (template, image placeholders, question) and the padding are -100; the
    answer and its end-of-turn tokens are learned. The prompt length is measured by processing
    the prompt alone, so image-token expansion is counted the same way.
    """
    tok = processor.tokenizer
    tok.padding_side = padding_side
    images = [image_for(q) for q in questions]
    user = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}] for q in questions]
    prompts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in user]
    if answers is None:
        texts = prompts
    else:
        reply = [[{"role": "assistant", "content": [{"type": "text", "text": a}]}] for a in answers]
        texts = [processor.apply_chat_template(m + r, tokenize=False) for m, r in zip(user, reply)]
    # Templates that render bos_token themselves (Gemma 3) would get a second one from the tokenizer.
    special = {"add_special_tokens": False} if tok.bos_token and texts[0].startswith(tok.bos_token) else {}
    # Llava, Qwen2-VL: a flat list of images; Idefics3 and Gemma 3 want one list per sample.
    nested = [[im] for im in images]
    inputs = processor(images=nested, text=texts, padding=True, return_tensors="pt", **special)
    if answers is None:
        return inputs
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        assert text.startswith(prompt)
        n_prompt = processor(images=[images[i]], text=[prompt], return_tensors="pt", **special)["input_ids"].shape[1]
        real = inputs["attention_mask"][i].nonzero().flatten()
        labels[i, real[:n_prompt]] = -100
    inputs["labels"] = labels
    return inputs


def blip_batch(processor, questions, answers=None, *, padding_side="right", bos_token_id=None):
    """BLIP: the question goes to the text encoder, the answer to the decoder.

    The decoder reads the answer ids themselves as `decoder_input_ids` (labels are not shifted
    by BlipForQuestionAnswering), so labels keep the ids and only pads become -100; the first
    token is replaced by the decoder's bos ([DEC]) as `generate` starts from it.
    """
    tok = processor.tokenizer
    tok.padding_side = padding_side
    images = [image_for(q) for q in questions]
    inputs = processor(images=images, text=questions, padding=True, return_tensors="pt")
    if answers is not None:
        ans = tok(answers, padding=True, return_tensors="pt")
        dec = ans["input_ids"].clone()
        dec[:, 0] = bos_token_id
        inputs["decoder_input_ids"] = dec
        inputs["decoder_attention_mask"] = ans["attention_mask"]
        inputs["labels"] = dec.masked_fill(ans["attention_mask"] == 0, -100)
    return inputs


def make_batch(family, model, processor, questions, answers=None, *, padding_side="right"):
    if FAMILIES[family].encoder_decoder:
        return blip_batch(
            processor, questions, answers, padding_side=padding_side, bos_token_id=model.config.text_config.bos_token_id
        )
    return chat_batch(processor, questions, answers, padding_side=padding_side)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_saved_folder_is_float32_safetensors(tiny_dir, family):
    folder = tiny_dir(family)
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    model, processor = load(folder, family)
    assert type(model).__name__ == FAMILIES[family].model_class
    assert type(processor).__name__ == FAMILIES[family].tiny.processor_class
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_train_step_and_generate(tiny_dir, family):
    model, processor = load(tiny_dir(family), family)
    model.train()
    inputs = make_batch(family, model, processor, QUESTIONS[:1], ANSWERS[:1])
    assert (inputs["labels"] != -100).any()
    out = model(**inputs)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.eval()
    prompt = make_batch(family, model, processor, QUESTIONS[:1])
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 1
    if not FAMILIES[family].encoder_decoder:  # BLIP returns only the decoder's tokens
        assert generated.shape[1] > prompt["input_ids"].shape[1]


def last_token_logits(model, inputs):
    """Logits at each sample's last real (non-pad) position: (batch, vocab)."""
    logits = model(**inputs).logits
    last = [mask.nonzero().flatten()[-1] for mask in inputs["attention_mask"]]
    return torch.stack([logits[i, j] for i, j in enumerate(last)])


@pytest.mark.parametrize("family", CHAT_FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single_samples(tiny_dir, family, side):
    model, processor = load(tiny_dir(family), family)
    model.eval()
    with torch.no_grad():
        batch = make_batch(family, model, processor, QUESTIONS, ANSWERS, padding_side=side)
        pad = batch["attention_mask"] == 0
        assert pad.any(), "questions of different lengths must pad"
        assert pad[:, 0 if side == "left" else -1].any()
        loss = model(**batch).loss
        assert math.isfinite(loss.item())
        batched = last_token_logits(model, {k: v for k, v in batch.items() if k != "labels"})
        for i in range(2):
            single = make_batch(family, model, processor, QUESTIONS[i : i + 1], ANSWERS[i : i + 1])
            single.pop("labels")
            torch.testing.assert_close(batched[i], last_token_logits(model, single)[0], atol=1e-4, rtol=1e-4)
        prompts = make_batch(family, model, processor, QUESTIONS, padding_side=side)
        assert model.generate(**prompts, max_new_tokens=3).shape[0] == 2


@pytest.mark.parametrize("side", ["left", "right"])
def test_blip_padded_batch(tiny_dir, side):
    model, processor = load(tiny_dir("blip"), "blip")
    model.eval()
    with torch.no_grad():
        batch = make_batch("blip", model, processor, QUESTIONS, ANSWERS, padding_side=side)
        assert (batch["attention_mask"] == 0).any()
        assert math.isfinite(model(**batch).loss.item())
        prompts = make_batch("blip", model, processor, QUESTIONS, padding_side=side)
        assert model.generate(**prompts, max_new_tokens=3).shape[0] == 2


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_nf4_load_runs_forward_on_cpu(tiny_dir, family):
    import bitsandbytes as bnb

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model, processor = load(tiny_dir(family), family, quantization_config=quant, dtype=torch.float32)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    with torch.no_grad():
        out = model(**make_batch(family, model, processor, QUESTIONS[:1], ANSWERS[:1]))
    assert math.isfinite(out.loss.item())


def norm_modules(model):
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith(("RMSNorm", "LayerNorm"))
    }


# Norms that never receive a gradient, by family (found here by a real backward pass, not read from
# the registry). LLaVA reads vision layer -2, so its last vision block and post_layernorm are dead;
# the other families use the vision tower's last hidden state: a family not listed must have none.
DEAD_NORMS = {
    "llava": {
        "model.vision_tower.encoder.layers.1.layer_norm1",
        "model.vision_tower.encoder.layers.1.layer_norm2",
        "model.vision_tower.post_layernorm",
    },
    "blip": set(),
    "idefics3": set(),
    "qwen2_vl": set(),
    "gemma3": set(),
}


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_dead_norms(tiny_dir, family):
    model, processor = load(tiny_dir(family), family)
    model.train()
    model(**make_batch(family, model, processor, QUESTIONS[:1], ANSWERS[:1])).loss.backward()
    dead = {name for name, m in norm_modules(model).items() if all(p.grad is None for p in m.parameters())}
    assert dead == DEAD_NORMS.get(family, set())


def test_overrides_change_sizes_and_reject_unknown(tmp_path):
    folder = build_tiny("llava", tmp_path / "wide", hidden_size=128, num_layers=3, corpus=["a tiny corpus"] * 3)
    model, _ = load(folder, "llava")
    assert model.config.text_config.hidden_size == 128
    assert model.config.text_config.num_hidden_layers == 3
    with pytest.raises(TypeError, match="unknown size overrides"):
        build_tiny("llava", tmp_path / "bad", hiden_size=1)
    with pytest.raises(ValueError, match="num_heads"):
        build_tiny("llava", tmp_path / "bad", hidden_size=100, num_heads=3)
    with pytest.raises(KeyError, match="unknown family"):
        build_tiny("llama", tmp_path / "bad")
