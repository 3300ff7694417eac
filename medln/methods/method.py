"""What a tuning method is, and the selection rule most of them share.

A scope (medln.methods.registry: one line each) is a method applied to named targets. A
method is one module of this package, laid out as peft lays out its tuners: which modules
it trains (`select`), the peft config that makes exactly those trainable (`peft_config`),
how inspect reads how far they moved (`moved`), and how merge folds them into the base
weights (`fold`, or `no_weights` when there is nothing to fold). Everything else
(accounting, training, the adapter checks of medln.runs, the plots) reads these
attributes, so a new method is one new module and one registry line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..backbones import part_of


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class TuningScope:
    """A scope: a method applied to named targets. A target is a model part of the family
    ("vision", "connector", "llm": Family.parts) or a projection group of its language model
    ("attn", "ffn", "kv", "down": Family.projections); the method says which modules of the
    target count."""

    name: str
    description: str
    default_lr: float
    method: "Method"
    targets: tuple[str, ...] = ()
    colour: str | None = None  # its colour in every plot (medln.plots)

    @property
    def kind(self) -> str:
        return self.method.name

    @property
    def quant_4bit(self) -> str:
        """What happens under 4-bit, shown in every listing."""
        return self.method.quant_note

    @property
    def trains_whole_linears(self) -> bool:
        return self.method.quant_4bit == "keep"

    @property
    def refuses_4bit(self) -> bool:
        return self.method.quant_4bit == "refuse"


@dataclass
class Selection:
    """The modules a scope trains, and the norms it leaves out because they get no gradient."""

    scope: TuningScope
    modules: list[str]  # full module names (exact peft targets)
    trainable: int  # parameters trained (LoRA: the A/B matrices)
    total: int  # parameters of the base model
    dead: int  # norm parameters excluded because they receive no gradient
    dead_modules: list[str]
    notes: list[str]
    extra: list[str] = field(default_factory=list)  # ln-lora: norms trained whole (peft modules_to_save)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class Moved:
    """How far one trained tensor went from the base model's (read by medln.inspect)."""

    param: str  # gain / bias (norms), weight (whole linears), lora, ia3, beft: a key of some Method.params
    base_norm: float
    delta_norm: float
    numel: int


class Method:
    """One way of training the modules a scope selects. Subclasses set the attributes and
    override what differs; the defaults are those of a method that adds nothing special."""

    name: str = ""
    peft_type: str | None = None  # what peft saves in adapter_config.json; None: whole weights, no adapter
    # Under 4-bit the method trains as is ("ok"), keeps its selected modules unquantized
    # ("keep": Linear4bit weights take no gradient), or cannot run ("refuse").
    quant_4bit: str = "ok"
    quant_note: str = "trains normally"
    # movement params it produces -> (how plots label them, whether their change is read as an
    # absolute ‖Δ‖ (biases) rather than relative to the base tensor)
    params: dict[str, tuple[str, bool]] = {}
    # marker in a saved tensor's name -> expected shape (layer, param, saved shape): medln.runs
    # checks an adapter against a base before peft attaches it
    saved_shapes: dict[str, Callable] = {}
    fold: str = ""  # how peft's merge_and_unload folds it into the base weights (medln.merge)
    no_weights: str | None = None  # why there is nothing to merge or inspect (a soft prompt)
    swaps_in: bool = False  # tuned answers run its trained copies swapped in (medln.merge.swapped_in)

    def select(self, structure, dead_prefixes, family, scope: TuningScope, *, lora_r: int) -> Selection:
        raise NotImplementedError

    def peft_config(self, selection: Selection, family, *, lora_r: int, lora_alpha: int, lora_dropout: float):
        """The peft config that trains exactly `selection`; None: train the model's own weights."""
        return None

    def after_wrap(self, model, config) -> None:
        """Anything to set once peft has wrapped the model (a soft prompt's initial tokens)."""

    def param_groups(self, model, lr: float, ln_lr: float) -> list[dict]:
        """Optimizer groups: one, at the scope's rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def moved(self, module, adapter: str) -> list[Moved] | None:
        """The movement of `module` when it is a layer this method's adapter put there, else None."""
        return None


def in_target(family, module_name: str, target: str) -> bool:
    """Whether a module lies in a scope target: a family part, or a projection group of the LLM."""
    if target in family.projections:
        return part_of(family, module_name) == "llm" and re.search(family.projections[target], module_name) is not None
    if target in family.parts:
        return part_of(family, module_name) == target
    raise ScopeError(f"unknown scope target {target!r}: a part ({', '.join(family.parts)}) or a projection group "
                     f"({', '.join(family.projections)}) of the {family.name} family")


def pick(structure, dead_prefixes, family, scope: TuningScope, *, selects: str,
         count: Callable[[object, str], int], needs_bias: bool = False, skips_dead: bool = False) -> Selection:
    """The rule of the methods that train modules of one kind ("norm" or "linear") inside the
    scope's targets. `count(module, target)`: trainable numbers it adds per selected module.
    `needs_bias`: only linears with a bias count (BitFit). `skips_dead`: modules under the
    family's dead prefixes (no gradient) are left out and reported."""
    total = sum(m.params for m in structure)
    dead_prefixes = tuple(dead_prefixes)
    modules, dead_modules, trainable, dead, notes = [], [], 0, 0, []
    for m in structure:
        # (A tied bias counts at its first owner: BLIP's output layer owns no parameter of its
        # own, yet its bias is a bias term BitFit trains.)
        if m.kind != selects or (m.params == 0 and not needs_bias) or (needs_bias and not m.bias):
            continue
        target = next((t for t in scope.targets if in_target(family, m.name, t)), None)
        if target is None:
            continue
        # Modules after the layer a model reads its features from never get a gradient: left out.
        if skips_dead and m.name.startswith(dead_prefixes):
            dead_modules.append(m.name)
            dead += m.out_features if needs_bias else m.params
            continue
        modules.append(m.name)
        trainable += count(m, target)
    if dead_modules:
        notes.append(f"{len(dead_modules)} {'biases' if needs_bias else 'norms'} ({dead:,} parameters) get no "
                     "gradient and are left out")
    return Selection(scope, modules, trainable, total, dead, dead_modules, notes)


def nothing_selected(scope: TuningScope, family) -> ScopeError:
    return ScopeError(f"scope {scope.name!r} selects nothing in this {family.name} model")
