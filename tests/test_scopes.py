"""Tuning scopes on tiny random models of every family, loaded through the hub code path.

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
from medln.methods import SCOPES, ScopeError, get_scope, select_in_model
from medln.structure import trainable_summary
from medln.train import fit, prepare

# The scopes added for the paper's whole method table (ia3, bitfit, prompt, ln-lora) have their
# own file with the same independent oracles: tests/test_new_scopes.py.
SCOPE_NAMES = ["ln", "ln-vision", "ln-llm", "attn", "ffn", "lora", "full"]

# peft warns for every LN-tuning target that is not a known layer type; wrapping norms (and
# whole projections for attn/ffn) is exactly what medln asks of it.
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type:UserWarning")

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
