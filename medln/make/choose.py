"""Choosing medln-tiny's defaults on validation data, and checking that a target can be learned.

    python -m medln.make.choose lr     --target scanner --scopes ln,lora --steps 200
    python -m medln.make.choose steps  --target scanner --scopes ln --steps 50,100,200,400
    python -m medln.make.choose check  --target findings --scopes ln,lora,full --steps 200 --seeds 0,1 \
                                       --rates docs/experiment/choice/lr-findings-200.json

`lr` trains each scope on a half-decade grid of rates around its registry default (seed 0) and
scores the target's *validation* split; while the best rate sits on an edge, one more rate past
it is tried (medln.tuning's rule, up to --cap rates). `steps` scores budgets at a fixed rate,
also on validation. `check` trains with given rates and scores the *test* split beside the
untuned base, the image-blind row and the image-aware probe ceiling (medln.baselines): the
learnability check of docs/experiment.md. Nothing here writes a run folder; every result goes
to a JSON file under docs/experiment/choice/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "docs" / "experiment" / "choice"


def _spec(target: str) -> str:
    return "sample" if target == "scanner" else f"sample:{target}"


def _load(target: str, split: str):
    from ..data import load_samples

    return load_samples(_spec(target), split).samples


def _brief(m: dict) -> dict:
    out = {"n": m["n"], "overall": round(m["overall"], 4)}
    if "by_phrasing" in m:
        out["by_phrasing"] = {k: round(v["overall"], 4) for k, v in m["by_phrasing"].items()}
    if "by_question_type" in m:
        out["by_question_type"] = {k: round(v["accuracy"], 4) for k, v in m["by_question_type"].items()}
    return out


def train_and_score(backbone: str, target: str, scope: str, steps: int, lr: float | None, seed: int,
                    splits: dict[str, list], train: list) -> dict:
    """One fine-tune (no run folder): {split: metrics} of the tuned model, plus timings."""
    from ..baselines import score_by_phrasing
    from ..config import TrainConfig
    from ..evaluate import predict, score
    from ..train import fit, prepare

    cfg = TrainConfig(backbone=backbone, data=_spec(target), scope=scope, steps=steps, lr=lr, seed=seed).validate()
    tunable = prepare(cfg, device="cpu")
    t0 = time.perf_counter()
    losses = [r["loss"] for r in fit(tunable, cfg, train) if r["event"] == "step"]
    out = {"scope": scope, "steps": steps, "lr": cfg.effective_lr, "seed": seed,
           "train_s": round(time.perf_counter() - t0, 1), "loss_last": losses[-1]}
    for name, samples in splits.items():
        preds = predict(tunable.backbone, tunable.model, samples)
        m = score(samples, preds)
        m["by_phrasing"] = score_by_phrasing(samples, preds)
        out[name] = _brief(m)
    return out


def base_scores(backbone: str, splits: dict[str, list]) -> dict:
    from ..backbones import load_backbone
    from ..baselines import score_by_phrasing
    from ..evaluate import predict, score

    bb = load_backbone(backbone, device="cpu")
    out = {}
    for name, samples in splits.items():
        preds = predict(bb, bb.model, samples, adapter=False)
        m = score(samples, preds)
        m["by_phrasing"] = score_by_phrasing(samples, preds)
        out[name] = _brief(m)
    return out


def _grid(centre: float, points: int) -> list[float]:
    from ..compare.tuning import Grid

    return Grid(points=points).initial(centre)


def choose_lr(a) -> dict:
    from ..methods.registry import default_lr
    from ..compare.tuning import Grid, best_rate, next_rate

    train, val = _load(a.target, "train"), _load(a.target, "validation")
    steps = int(a.steps.split(",")[0])
    result = {"target": a.target, "steps": steps, "split": "validation", "n": len(val), "seed": 0,
              "base": base_scores(a.backbone, {"validation": val})["validation"], "scopes": {}}
    grid = Grid(points=a.points, cap=a.cap)
    for scope in a.scopes.split(","):
        scores, runs = {}, []
        rates = _grid(default_lr(a.backbone, scope), a.points)
        while rates:
            for lr in rates:
                run = train_and_score(a.backbone, a.target, scope, steps, lr, 0, {"validation": val}, train)
                runs.append(run)
                scores[lr] = run["validation"]["overall"]
                print(f"{scope} lr {lr:g}: validation {scores[lr]:.3f} ({run['train_s']} s)", flush=True)
            nxt = next_rate(scores, grid) if len(scores) < grid.cap else None
            rates = [nxt] if nxt is not None and nxt not in scores else []
        chosen = best_rate(scores)
        result["scopes"][scope] = {"scores": {str(k): v for k, v in sorted(scores.items())}, "chosen": chosen,
                                   "capped": next_rate(scores, grid) is not None, "runs": runs}
        _write(a, f"lr-{a.target}-{steps}", result)
    return result


def choose_steps(a) -> dict:
    train, val = _load(a.target, "train"), _load(a.target, "validation")
    result = {"target": a.target, "split": "validation", "n": len(val), "seed": 0, "runs": []}
    for scope in a.scopes.split(","):
        for steps in (int(s) for s in a.steps.split(",")):
            lr = _rates(a).get(scope)
            run = train_and_score(a.backbone, a.target, scope, steps, lr, 0, {"validation": val}, train)
            result["runs"].append(run)
            print(f"{scope} {steps} steps lr {run['lr']:g}: validation {run['validation']['overall']:.3f} "
                  f"({run['train_s']} s)", flush=True)
            _write(a, f"steps-{a.target}", result)
    return result


def check(a) -> dict:
    """Tuned vs base vs blind vs probe ceiling on the target's test split."""
    from ..backbones import load_backbone
    from ..baselines import FeatureCache, fit_blind, fit_probe, score_blind, score_probe

    train, val, test = _load(a.target, "train"), _load(a.target, "validation"), _load(a.target, "test")
    steps = int(a.steps.split(",")[0])
    bb = load_backbone(a.backbone, device="cpu")
    features = FeatureCache(bb)
    probe = fit_probe(bb, train, validation=val, features=features)
    result = {"target": a.target, "steps": steps, "n_test": len(test), "rates": _rates(a),
              "base": base_scores(a.backbone, {"test": test})["test"],
              "blind": _brief(score_blind(fit_blind(train), test)),
              "probe": {**_brief(score_probe(probe, test, features)), "l2": probe.l2,
                        "validation": {str(k): v for k, v in probe.validation.items()}},
              "runs": []}
    print(f"base {result['base']['overall']:.3f}  blind {result['blind']['overall']:.3f}  "
          f"probe {result['probe']['overall']:.3f}  (test n = {len(test)})", flush=True)
    for scope in a.scopes.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            run = train_and_score(a.backbone, a.target, scope, steps, _rates(a).get(scope), seed, {"test": test}, train)
            result["runs"].append(run)
            print(f"{scope} seed {seed} lr {run['lr']:g}: test {run['test']['overall']:.3f} "
                  f"{run['test'].get('by_phrasing')} ({run['train_s']} s)", flush=True)
            _write(a, f"check-{a.target}-{steps}", result)
    summary = {}
    for scope in a.scopes.split(","):
        xs = [r["test"]["overall"] for r in result["runs"] if r["scope"] == scope]
        summary[scope] = {"mean": round(statistics.mean(xs), 4), "seeds": len(xs),
                          "vs_blind_points": round(100 * (statistics.mean(xs) - result["blind"]["overall"]), 1)}
    result["summary"] = summary
    _write(a, f"check-{a.target}-{steps}", result)
    return result


def _rates(a) -> dict:
    """{scope: rate} from --rates (a JSON written by `lr`: its chosen rates), else {} (registry defaults)."""
    if not a.rates:
        return {}
    data = json.loads(Path(a.rates).read_text())
    return {scope: rec["chosen"] for scope, rec in data.get("scopes", {}).items()}


def _write(a, name: str, result: dict) -> None:
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["machine"] = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    result["backbone"] = a.backbone
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("lr", "steps", "check"))
    p.add_argument("--backbone", default="medln-tiny")
    p.add_argument("--target", default="scanner", choices=("scanner", "findings"))
    p.add_argument("--scopes", default="ln")
    p.add_argument("--steps", default="200", help="lr / check: the budget; steps: comma-separated budgets")
    p.add_argument("--seeds", default="0")
    p.add_argument("--rates", default="", help="JSON written by `lr` (its chosen rates); default: registry rates")
    p.add_argument("--points", type=int, default=3, help="lr: initial grid points (half a decade apart)")
    p.add_argument("--cap", type=int, default=5, help="lr: most rates per scope")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"lr": choose_lr, "steps": choose_steps, "check": check}[a.what](a)


if __name__ == "__main__":
    main()
