"""The forms' widget values -> a validated TrainConfig: the Fine-tune and Compare forms and the
/finetune endpoint build their config here, through TrainConfig.from_dict, so they take the
config's own field names, types and ranges (every problem listed, as for the CLI); and the
batch field that follows the chosen backbone."""

from __future__ import annotations

from medln.config import TrainConfig
from medln.methods import default_batch

from .errors import UserError
from .uploads import DataChoice


def config_fields(backbone, scope, quant4, steps, lr, batch_size, eval_limit, seed, precision="auto") -> dict:
    """The form's widgets -> TrainConfig fields: the 4-bit box becomes a quant value, number
    widgets' 12.0 becomes 12, and an empty learning-rate field is None: the scope's default."""
    return {"backbone": backbone, "scope": scope, "quant": "4bit" if quant4 else "none", "steps": _whole(steps),
            "lr": _rate(lr), "batch_size": _whole(batch_size),
            "eval_limit": _whole(eval_limit or 0), "seed": _whole(seed or 0), "precision": precision or "auto"}


def build_config(fields: dict, data: DataChoice, settings=None) -> TrainConfig:
    """TrainConfig fields (the form's, or /finetune's) and a data choice -> a validated
    TrainConfig, by TrainConfig.from_dict: unknown fields, types and ranges are refused there,
    every problem listed, as for the CLI. With the app's `settings`, the backbone is what a
    visitor may name (Settings.app_backbone: a registry name, a Hub id, or a folder under
    MEDLN_MODELS_ROOT), checked before anything reads it."""
    backbone = fields.get("backbone")
    if not isinstance(backbone, str) or not backbone.strip():
        raise UserError("choose a backbone")
    if settings is not None:
        backbone = settings.app_backbone(backbone)
    data_fields = {"data": data.spec, "eval_split": data.eval_split, "ood_split": data.ood_split}
    return TrainConfig.from_dict({**fields, "backbone": backbone.strip(), **data_fields}).validate()


def _rate(value):
    """The learning-rate field: empty (or blank) is None, the scope's default; text that reads
    as a number is that number; anything else goes to validate() as it is, which names it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value.strip()
    return value


def _whole(value):
    """Number widgets send 12.0 for 12; anything else goes to validate() as it is, which names
    the field and what it got (a string, 1.5, 10**9) instead of int() failing or truncating."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def followed_batch(backbone: str, batch, previous: str) -> int | None:
    """The batch field when another backbone is chosen: that backbone's default (the batch its
    budget was measured with: medln-tiny's is no batch for a 7B model), unless the field holds a
    batch the user typed, i.e. not the previous backbone's default (None: leave the field)."""
    if batch not in (None, default_batch((previous or "").strip())):
        return None
    return default_batch((backbone or "").strip())


def follow_batch(backbone, batch, default_backbone: str) -> None:
    """Wire a form's batch field to follow its backbone field (followed_batch); a State keeps
    the backbone the field's value was the default of."""
    import gradio as gr

    previous = gr.State(default_backbone)

    def on_backbone(backbone_v, batch_v, previous_v):
        value = followed_batch(backbone_v, batch_v, previous_v)
        return (gr.skip() if value is None else value), backbone_v

    backbone.input(on_backbone, [backbone, batch, previous], [batch, previous], api_visibility="private", queue=False)
