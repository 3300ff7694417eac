"""medln.methods: every tuning method's scopes on tiny random models of every family, loaded
through the hub code path.

What the scope promises is checked against facts the test finds out for itself, never against
medln.methods.select: the norms are found by module type, the dead ones by an actual gradient
probe, the projections are listed from the config's layer counts, and the tensors that change
in one optimizer step are found by comparing the whole state_dict (base weights included).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import FAMILY_NAMES, llava_7b_config_dir
from medln.backbones import load_backbone
from medln.config import ConfigError, TrainConfig
from medln.prompts import encode_for_training
from medln.methods import PROMPT_TOKENS, SCOPES, ScopeError, get_scope, param_groups, select, select_in_model
from medln.structure import ModuleInfo, trainable_summary
from medln.train import fit, prepare
from test_train import assert_same, differs, outputs

# The scopes added for the paper's whole method table (ia3, bitfit, prompt, ln-lora) are tested
# below (NEW_SCOPES) with the same independent oracles.
SCOPE_NAMES = ["ln", "ln-vision", "ln-llm", "attn", "ffn", "lora", "full"]

# peft warns for every LN-tuning target that is not a known layer type; wrapping norms (and
# whole projections for attn/ffn) is exactly what medln asks of it.
pytestmark = [pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning"),
              pytest.mark.filterwarnings("ignore:Detected that the base layer has no bias:UserWarning")]

LR = 0.05  # large: every element with a non-zero gradient moves visibly in one Adam step

# The test's own map of where each family keeps its parts (module-name prefixes).
PARTS = {
    "llava": {"vision": ("model.vision_tower.",), "connector": ("model.multi_modal_projector.",),
              "llm": ("model.language_model.", "lm_head")},
    "blip": {"vision": ("vision_model.",), "connector": (), "llm": ("text_encoder.", "text_decoder.")},
    "idefics3": {"vision": ("model.vision_model.",), "connector": ("model.connector.",),
                 "llm": ("model.text_model.", "lm_head")},
    "qwen2_vl": {"vision": ("model.visual.blocks.", "model.visual.patch_embed."),
                 "connector": ("model.visual.merger.",), "llm": ("model.language_model.", "lm_head")},
    "gemma3": {"vision": ("model.vision_tower.",), "connector": ("model.multi_modal_projector.",),
               "llm": ("model.language_model.", "lm_head")},
}
NORM_PARTS = {"ln": ("vision", "connector", "llm"), "ln-vision": ("vision",), "ln-llm": ("llm",)}
DECODER_ROOT = {"llava": "model.language_model", "idefics3": "model.text_model",
                "qwen2_vl": "model.language_model", "gemma3": "model.language_model"}


def part(family: str, name: str) -> str | None:
    for p, prefixes in PARTS[family].items():
        if name.startswith(prefixes):
            return p
    return None


def is_norm_module(module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def projections(family: str, config, kind: str) -> list[str]:
    """Full module names of the language model's attention ("attn") or MLP ("ffn")
    projections, listed from the layer count in the config."""
    n = config.get_text_config().num_hidden_layers
    if family == "blip":
        names = []
        for tower in ("text_encoder", "text_decoder.bert"):
            for i in range(n):
                layer = f"{tower}.encoder.layer.{i}"
                if kind == "attn":
                    for att in ("attention", "crossattention"):
                        names += [f"{layer}.{att}.self.{x}" for x in ("query", "key", "value")]
                        names.append(f"{layer}.{att}.output.dense")
                else:
                    names += [f"{layer}.intermediate.dense", f"{layer}.output.dense"]
        return names
    root = DECODER_ROOT[family]
    leaves = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj") if kind == "attn" \
        else ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    return [f"{root}.layers.{i}.{leaf}" for i in range(n) for leaf in leaves]


@dataclass
class Facts:
    """What the test found out about one family's base model."""

    path: str
    config: object
    norms: dict[str, dict[str, int]]  # norm module -> {param name: numel}
    dead: set[str]  # norm modules whose parameters got no (or an all-zero) gradient
    grad_params: set[str]  # every parameter name (tied names too) that got a non-zero gradient
    linears: dict[str, tuple[int, int, int]]  # module -> (in_features, out_features, own numel)
    total: int  # parameters of the base model, tied weights once


def probe(family: str, path, samples) -> Facts:
    """One forward + backward with labels, every parameter requiring grad."""
    bb = load_backbone(str(path))
    model = bb.model
    norms = {n: {k: p.numel() for k, p in m.named_parameters(recurse=False)}
             for n, m in model.named_modules() if is_norm_module(m) and any(True for _ in m.parameters(recurse=False))}
    linears = {n: (m.in_features, m.out_features, sum(p.numel() for p in m.parameters(recurse=False)))
               for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    model.requires_grad_(True)
    model.train()
    model(**encode_for_training(bb, samples)).loss.backward()
    mods = dict(model.named_modules())
    dead = {n for n in norms
            if all(p.grad is None or not p.grad.any() for p in mods[n].parameters(recurse=False))}
    grad_params = {n for n, p in model.named_parameters(remove_duplicate=False) if p.grad is not None and p.grad.any()}
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    return Facts(str(path), model.config, norms, dead, grad_params, linears, total)


def few(samples):
    """Two closed, one open VQA and one report sample: one batch of 4."""
    vqa = [s for s in samples if s.task == "vqa"]
    return [vqa[0], vqa[1], vqa[2], next(s for s in samples if s.task == "report")]


@dataclass
class Expected:
    modules: list[str]
    tensors: set[str]  # trainable parameter names in the scoped (peft-wrapped) model
    count: int


def expected(family: str, f: Facts, scope: str, lora_r: int = 8) -> Expected:
    kind = get_scope(scope).kind
    if scope in NORM_PARTS:
        modules = [n for n in f.norms if part(family, n) in NORM_PARTS[scope] and n not in f.dead]
        tensors = {f"base_model.model.{m}.ln_tuning_layers.default.{k}" for m in modules for k in f.norms[m]}
        return Expected(modules, tensors, sum(sum(f.norms[m].values()) for m in modules))
    if scope in ("attn", "ffn"):
        modules = projections(family, f.config, scope)
        tensors = {f"base_model.model.{m}.ln_tuning_layers.default.{k}" for m in modules
                   for k in (("weight", "bias") if f.linears[m][2] > f.linears[m][0] * f.linears[m][1] else ("weight",))}
        return Expected(modules, tensors, sum(f.linears[m][2] for m in modules))
    if scope == "lora":
        modules = projections(family, f.config, "attn") + projections(family, f.config, "ffn")
        tensors = {f"base_model.model.{m}.lora_{ab}.default.weight" for m in modules for ab in "AB"}
        return Expected(modules, tensors, sum(lora_r * (f.linears[m][0] + f.linears[m][1]) for m in modules))
    assert kind == "full"
    return Expected([""], set(), f.total)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    after = model.state_dict()
    assert set(after) >= set(before)
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def train_cfg(path, scope: str, **kw) -> TrainConfig:
    return TrainConfig(backbone=str(path), scope=scope, lr=LR, steps=kw.pop("steps", 1), batch_size=4, warmup=0.0,
                       eval_split="", ood_split="", **kw).validate()


# --------------------------------------------------------------------------- dead norms


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dead_norm_rule_matches_gradient_probe(family, facts):
    f = facts(family)
    from medln.backbones import FAMILIES

    prefixes = tuple(FAMILIES[family].dead_norms(f.config))
    by_rule = {n for n in f.norms if prefixes and n.startswith(prefixes)}
    assert by_rule == f.dead
    if family == "llava":
        # vision_feature_layer -2: the last vision block and post_layernorm never see a gradient
        n = f.config.vision_config.num_hidden_layers
        assert f.dead == {f"model.vision_tower.encoder.layers.{n - 1}.layer_norm1",
                          f"model.vision_tower.encoder.layers.{n - 1}.layer_norm2",
                          "model.vision_tower.post_layernorm"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_has_norms_in_each_part_it_tunes(family, facts):
    f = facts(family)
    parts = {part(family, n) for n in f.norms}
    assert {"vision", "llm"} <= parts, parts
    assert None not in parts, [n for n in f.norms if part(family, n) is None]


# --------------------------------------------------------------------------- scopes x families


@pytest.mark.parametrize("scope", SCOPE_NAMES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scope_trains_exactly_the_expected_tensors(family, scope, facts, train_samples):
    f = facts(family)
    exp = expected(family, f, scope)
    # LoRA's B starts at zero, so A gets no gradient in the first step: take two.
    cfg = train_cfg(f.path, scope, steps=2 if scope == "lora" else 1)
    tunable = prepare(cfg, backbone=load_backbone(f.path))
    model, sel = tunable.model, tunable.selection

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    count = sum(p.numel() for p in trainable.values())
    assert sel.total == f.total
    assert count == exp.count == sel.trainable
    assert trainable_summary(model, f.total) == (exp.count, pytest.approx(100.0 * exp.count / f.total))
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    if scope == "full":
        assert set(trainable) == {n for n, _ in model.named_parameters()}
    else:
        assert set(trainable) == exp.tensors
        assert sorted(sel.modules) == sorted(exp.modules)
    if scope in NORM_PARTS:
        dead_in_scope = [n for n in f.dead if part(family, n) in NORM_PARTS[scope]]
        assert sorted(sel.dead_modules) == sorted(dead_in_scope)
        assert sel.dead == sum(sum(f.norms[n].values()) for n in dead_in_scope)

    before = snapshot(model)
    records = list(fit(tunable, cfg, few(train_samples)))
    assert [r["step"] for r in records] == list(range(1, cfg.steps + 1))
    # Only the trained tensors moved; the frozen originals (peft's base_layer) did not.
    assert changed(before, model) == (f.grad_params if scope == "full" else exp.tensors)


def test_ln_count_is_all_norms_minus_dead(facts):
    for family in FAMILY_NAMES:
        f = facts(family)
        all_norms = sum(sum(v.values()) for v in f.norms.values())
        dead = sum(sum(f.norms[n].values()) for n in f.dead)
        assert expected(family, f, "ln").count == all_norms - dead


def test_ln_scopes_never_touch_projector_embeddings_or_head(facts):
    """peft's default LNTuningConfig would also train these for LLaVA (docs/design.md, Traps)."""
    f = facts("llava")
    bb = load_backbone(f.path)
    sel = select_in_model(bb.model, bb.model.config, bb.family, get_scope("ln"))
    assert not [m for m in sel.modules if "multi_modal_projector.linear" in m or "embed_tokens" in m or m == "lm_head"]


# --------------------------------------------------------------------------- 4-bit


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_4bit_ln_trains_norms_on_cpu(family, facts, train_samples):
    import bitsandbytes as bnb

    f = facts(family)
    exp = expected(family, f, "ln")
    cfg = train_cfg(f.path, "ln", quant="4bit")
    tunable = prepare(cfg, device="cpu")
    model = tunable.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == exp.tensors
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert tunable.selection.trainable == exp.count
    assert tunable.selection.total == f.total  # 4-bit weights counted at their logical size
    before = snapshot(model)
    records = list(fit(tunable, cfg, few(train_samples)))
    assert records and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert changed(before, model) == exp.tensors


@pytest.mark.parametrize("family", ["llava", "blip", "gemma3"])
def test_4bit_attn_keeps_projections_unquantized_and_trains_them(family, facts, train_samples):
    import bitsandbytes as bnb

    f = facts(family)
    exp = expected(family, f, "attn")
    cfg = train_cfg(f.path, "attn", quant="4bit")
    tunable = prepare(cfg, device="cpu")
    model = tunable.model
    for m in exp.modules:
        base = model.get_submodule(f"base_model.model.{m}.base_layer")
        assert type(base) is nn.Linear, (m, type(base))
        assert base.weight.dtype == torch.float32
    for m in projections(family, f.config, "ffn"):
        assert isinstance(model.get_submodule(f"base_model.model.{m}"), bnb.nn.Linear4bit), m
    assert {n for n, p in model.named_parameters() if p.requires_grad} == exp.tensors
    assert tunable.selection.trainable == exp.count
    before = snapshot(model)
    list(fit(tunable, cfg, few(train_samples)))
    assert changed(before, model) == exp.tensors


def test_full_under_4bit_is_refused_clearly(facts):
    f = facts("llava")
    with pytest.raises(ConfigError, match="4-bit"):
        TrainConfig(backbone=f.path, scope="full", quant="4bit").validate()
    bb = load_backbone(f.path)
    with pytest.raises(ScopeError, match="4-bit"):
        select_in_model(bb.model, bb.model.config, bb.family, get_scope("full"), quant="4bit")
    from medln.accounting import param_rows

    (row,) = param_rows(f.path, ["full"], quant="4bit")
    assert "4-bit" in row["skipped"] and "trainable" not in row
    assert "refused" in get_scope("full").quant_4bit


# --------------------------------------------------------------------------- params from config.json alone


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_params_from_a_folder_with_only_config_json(family, facts, tmp_path, medln_cache):
    from medln.accounting import cache_dir, param_rows

    f = facts(family)
    only = tmp_path / "config-only"
    only.mkdir()
    shutil.copy(f"{f.path}/config.json", only / "config.json")
    rows = {r["scope"]: r for r in param_rows(str(only))}
    assert set(rows) == {s.name for s in SCOPES}
    for scope in SCOPE_NAMES:
        exp = expected(family, f, scope)
        row = rows[scope]
        assert (row["total"], row["trainable"]) == (f.total, exp.count), scope
        assert row["percent"] == pytest.approx(100.0 * exp.count / f.total, abs=1e-5)
        if scope in NORM_PARTS:
            assert row["dead"] == sum(sum(f.norms[n].values()) for n in f.dead if part(family, n) in NORM_PARTS[scope])
            assert sorted(row["modules"]) == sorted(exp.modules)
    # The structure is cached (MEDLN_CACHE points at a temporary folder in tests).
    assert cache_dir().parent == medln_cache
    assert any(cache_dir().glob("*.json"))
    assert param_rows(str(only), ["ln"]) == [rows["ln"]]


def test_params_llava_7b_matches_published_numbers(tmp_path):
    from medln.accounting import param_rows

    folder = llava_7b_config_dir(tmp_path / "llava-7b")
    (row,) = param_rows(str(folder), ["ln"])
    # 368,640 norm parameters, of which 6,144 (vision layer 24's two LayerNorms and
    # post_layernorm, 3 x 2 x 1024) get no gradient.
    assert row["trainable"] == 362_496
    assert row["dead"] == 6_144
    assert row["total"] == 7_566_743_552
    # The same from the architecture by hand: CLIP LayerNorms (w + b) and Mistral RMSNorms (w).
    vision_norms = (24 * 2 + 2) * 2 * 1024
    llm_norms = (32 * 2 + 1) * 4096
    assert row["trainable"] + row["dead"] == vision_norms + llm_norms == 368_640
    assert row["percent"] == pytest.approx(100 * 362_496 / 7_566_743_552, abs=1e-6)


# ---------------------------------------------------------------------- ia3, bitfit, prompt, ln-lora
# The rest of the paper's method table, with the same independent oracles: what should train
# is found by the test itself (module types, the config's layer counts, a real gradient probe),
# never read back from medln.methods; then exactly those tensors must train and move, the
# adapter must reload with PeftModel.from_pretrained to the same outputs, and the adapter off
# must give the base.

NEW_SCOPES = ["ia3", "bitfit", "prompt", "ln-lora"]
PROMPT_FAMILIES = {"llava", "idefics3"}  # where peft's virtual tokens reach the model intact (checked below)


def ia3_modules(family: str, config) -> tuple[list[str], list[str]]:
    """(k/v projections, MLP down-projections) from the config's layer counts."""
    n = config.get_text_config().num_hidden_layers
    if family == "blip":
        kv, down = [], []
        for tower in ("text_encoder", "text_decoder.bert"):
            for i in range(n):
                layer = f"{tower}.encoder.layer.{i}"
                kv += [f"{layer}.{att}.self.{x}" for att in ("attention", "crossattention") for x in ("key", "value")]
                down.append(f"{layer}.output.dense")
        return kv, down
    kv = [m for m in projections(family, config, "attn") if m.endswith(("k_proj", "v_proj"))]
    return kv, [m for m in projections(family, config, "ffn") if m.endswith("down_proj")]


def expected_more(family: str, f: Facts, scope: str, lora_r: int = 8) -> tuple[set[str], int]:
    """(trainable tensor names in the peft model, parameter count)."""
    if scope == "ia3":
        kv, down = ia3_modules(family, f.config)
        return ({f"base_model.model.{m}.ia3_l.default" for m in kv + down},
                sum(f.linears[m][1] for m in kv) + sum(f.linears[m][0] for m in down))
    if scope == "bitfit":  # every linear with a bias whose bias got a gradient in the probe
        biased = [m for m, (i, o, n) in f.linears.items() if n > i * o and f"{m}.bias" in f.grad_params]
        return {f"base_model.model.{m}.beft_bias.default" for m in biased}, sum(f.linears[m][1] for m in biased)
    if scope == "prompt":
        return {"prompt_encoder.default.embedding.weight"}, PROMPT_TOKENS * f.config.get_text_config().hidden_size
    assert scope == "ln-lora"
    norms = [n for n in f.norms if part(family, n) in NORM_PARTS["ln"] and n not in f.dead]
    lora = projections(family, f.config, "attn") + projections(family, f.config, "ffn")
    tensors = {f"base_model.model.{m}.modules_to_save.default.{k}" for m in norms for k in f.norms[m]}
    tensors |= {f"base_model.model.{m}.lora_{ab}.default.weight" for m in lora for ab in "AB"}
    return tensors, (sum(sum(f.norms[m].values()) for m in norms)
                     + sum(lora_r * (f.linears[m][0] + f.linears[m][1]) for m in lora))


def refused(family: str, scope: str) -> bool:
    return scope == "prompt" and family not in PROMPT_FAMILIES


# --------------------------------------------------------------------------- every family x new scope


@pytest.mark.parametrize("scope", NEW_SCOPES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_new_scope_trains_exactly_the_expected_tensors_and_reloads(family, scope, facts, train_samples, tmp_path):
    from peft import PeftModel

    f = facts(family)
    if refused(family, scope):
        with pytest.raises(ScopeError, match=f"cannot run on a {family} model: .+"):
            prepare(train_cfg(f.path, scope), backbone=load_backbone(f.path))
        return
    tensors, count = expected_more(family, f, scope)
    # LoRA's B starts at zero, so A gets no gradient in the first step: take two.
    cfg = train_cfg(f.path, scope, steps=2 if scope == "ln-lora" else 1)
    bb = load_backbone(f.path)
    batch = encode_for_training(bb, few(train_samples))
    base_out = outputs(bb.model, batch)
    tunable = prepare(cfg, backbone=bb)
    model, sel = tunable.model, tunable.selection
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == tensors
    assert sum(p.numel() for p in trainable.values()) == count == sel.trainable
    assert sel.total == f.total
    assert {p.dtype for p in trainable.values()} == {torch.float32}

    before = snapshot(model)
    list(fit(tunable, cfg, few(train_samples)))
    assert changed(before, model) == tensors

    # The adapter reloads on a fresh base to the same outputs; off, it gives the base's.
    model.save_pretrained(tmp_path / "adapter")
    tuned_out = outputs(model, batch)
    assert differs(base_out, tuned_out), "training did not change the outputs: the comparison would be vacuous"
    fresh = load_backbone(f.path)
    reloaded = PeftModel.from_pretrained(fresh.model, tmp_path / "adapter")
    assert_same(outputs(reloaded, batch), tuned_out)
    with reloaded.disable_adapter():
        assert_same(outputs(reloaded, batch), base_out)


def test_ln_lora_gives_each_part_its_own_learning_rate(facts):
    f = facts("llava")
    cfg = train_cfg(f.path, "ln-lora", ln_lr=0.02)
    tunable = prepare(cfg, backbone=load_backbone(f.path))
    groups = param_groups(tunable.model, get_scope("ln-lora"), cfg.effective_lr, cfg.effective_ln_lr)
    names = {id(p): n for n, p in tunable.model.named_parameters()}
    by_lr = {g["lr"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert set(by_lr) == {cfg.lr, 0.02}
    assert by_lr[cfg.lr] and all(".lora_" in n for n in by_lr[cfg.lr])
    assert by_lr[0.02] and all(".modules_to_save." in n for n in by_lr[0.02])
    assert len(by_lr[cfg.lr]) + len(by_lr[0.02]) == sum(p.requires_grad for p in tunable.model.parameters())


# --------------------------------------------------------------------------- prompt tuning and image tokens


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_vl", "gemma3"])
def test_virtual_tokens_equal_a_real_token_prefix_where_allowed(family, tiny_model, train_samples):
    """Virtual tokens set to the embeddings of real tokens must give the logits of those tokens
    written before the prompt: then the image tokens are read as without them. Where medln
    refuses `prompt`, peft's path differs (Qwen2-VL's M-RoPE positions, Gemma 3's token_type_ids):
    if this ever starts to hold there, the refusal can go."""
    from peft import PromptTuningConfig, get_peft_model

    bb = load_backbone(str(tiny_model(family)))
    batch = encode_for_training(bb, few(train_samples)[:1])
    batch.pop("labels")
    tok = getattr(bb.processor, "tokenizer", bb.processor)
    ids = torch.tensor([tok.encode(" the lungs are clear and", add_special_tokens=False)[:4]])
    prefixed = {**batch, "input_ids": torch.cat([ids, batch["input_ids"]], 1),
                "attention_mask": torch.cat([torch.ones_like(ids), batch["attention_mask"]], 1)}
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in batch:
            prefixed[key] = torch.cat([torch.zeros_like(ids), batch[key]], 1)
    with torch.no_grad():
        ref = bb.model(**prefixed).logits
        model = get_peft_model(bb.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=ids.shape[1]))
        model.prompt_encoder.default.embedding.weight.copy_(bb.model.get_input_embeddings()(ids[0]))
        got = model(**batch).logits
    same = torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert same == (family in PROMPT_FAMILIES), (family, (got - ref).abs().max().item())


# --------------------------------------------------------------------------- 4-bit, counts, messages


@pytest.mark.parametrize("scope", ["ia3", "bitfit", "prompt", "ln-lora"])
def test_new_scopes_train_on_a_4bit_base(scope, facts, train_samples):
    """Stated behaviour: each trains normally beside 4-bit weights, which stay Linear4bit."""
    import bitsandbytes as bnb

    assert "trains normally" in get_scope(scope).quant_4bit
    f = facts("llava")
    tensors, count = expected_more("llava", f, scope)
    cfg = train_cfg(f.path, scope, quant="4bit", steps=2 if scope == "ln-lora" else 1)
    tunable = prepare(cfg, device="cpu")
    model = tunable.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == tensors
    assert tunable.selection.trainable == count
    before = snapshot(model)
    records = list(fit(tunable, cfg, few(train_samples)))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert changed(before, model) == tensors


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_new_scope_counts_from_config_alone(family, facts, tmp_path):
    from medln.accounting import param_rows

    f = facts(family)
    only = tmp_path / "config-only"
    only.mkdir()
    shutil.copy(f"{f.path}/config.json", only / "config.json")
    rows = {r["scope"]: r for r in param_rows(str(only), NEW_SCOPES)}
    for scope in NEW_SCOPES:
        if refused(family, scope):
            assert "cannot run" in rows[scope]["skipped"]
            continue
        assert (rows[scope]["total"], rows[scope]["trainable"]) == (f.total, expected_more(family, f, scope)[1]), scope


def test_bitfit_on_a_model_without_biases_selects_nothing_and_says_why():
    from medln.backbones import FAMILIES

    structure = [ModuleInfo("model.language_model.layers.0.self_attn.q_proj", "linear", 64 * 64, 64, 64, False),
                 ModuleInfo("model.vision_tower.encoder.layers.0.mlp.fc1", "linear", 64 * 64, 64, 64, False),
                 ModuleInfo("model.language_model.norm", "norm", 64)]
    with pytest.raises(ScopeError, match="no linear layer with a bias term"):
        select(structure, [], FAMILIES["llava"], get_scope("bitfit"))


def test_bitfit_says_when_only_the_vision_side_has_biases(facts):
    """LLaVA's Llama decoder has no biases: bitfit trains the vision tower and projector and says so."""
    from medln.methods import select_in_model

    f = facts("llava")
    bb = load_backbone(f.path)
    sel = select_in_model(bb.model, bb.model.config, bb.family, get_scope("bitfit"))
    assert any("language model has no bias terms" in n for n in sel.notes)
    assert not [m for m in sel.modules if part("llava", m) == "llm"]
