"""The language stage of medln-tiny (v3.1): candidates, their validation checks, the record.

Why: on both targets every scope scored held-out question wordings at or below the image-blind
row (docs/experiment.md, "The language stage"). A second pretraining stage on the source with
more question wordings (medln.make.questions.EXTRA, never in a committed split) was tried in a
few variants; each was checked on validation only (the targets' validation splits, and 300
fresh source studies from stream 102 instead of source-test), one seed unless named.

    python docs/experiment/language_stage.py pretrain NAME [pretrain-tiny options]
    python docs/experiment/language_stage.py check MODEL NAME    # the validation runs (2 lanes)
    python docs/experiment/language_stage.py check3 MODEL NAME [v3.3]  # three seeds of the runs that decide (session 10;
                                                                       # v3.3: at v3.3's chosen rates, session 13)
    python docs/experiment/language_stage.py gather3 NAME=MODEL ...  # -> diagnosis/v3.3-wide-source.json
    python docs/experiment/language_stage.py gather3-v3.3 NAME=MODEL ...  # -> diagnosis/v3.3-longer-wide-stage.json
    python docs/experiment/language_stage.py gather NAME=MODEL ...  # adds rows to diagnosis/v3.1-language-stage.json

v3.2 (installed until session 11): the same decoder-only stage on tiny-v4, the 5,000-step
pretraining of session 6 (docs/experiment.md, "Measured on the task (v3.0)"). v3.3 (D5, installed
since): a wide stage between the two (docs/experiment.md, "Session 10").

Runs go to $WORK (default /tmp/medln-language-stage). Every run: `medln train` at medln-tiny
v3.0's chosen rates (docs/experiment/v3.0-compare-*), 200 steps, scored on validation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from diagnose_v3 import FRESH_SOURCE_SEED  # the same fresh source stream as the v3 diagnosis

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("WORK", "/tmp/medln-language-stage"))
FRESH_STUDIES = 300
# (name, data, scope, lr, seed): v3.0's rates (chosen on each target's validation split)
RUNS = [("scanner-ln", "sample", "ln", 0.0534, 0), ("scanner-ln-s1", "sample", "ln", 0.0534, 1),
        ("scanner-attn", "sample", "attn", 0.000999, 0), ("findings-full", "sample:findings", "full", 0.000356, 0),
        ("findings-lora", "sample:findings", "lora", 0.00178, 0)]

# Three seeds of the runs a candidate must not lose (session 10: single-seed scanner runs moved by
# 7 points between seeds); `check3` runs these for a candidate and for the installed model alike.
RUNS3 = [(f"{key}-s{seed}", data, scope, lr, seed) for key, data, scope, lr in
         (("scanner-ln", "sample", "ln", 0.0534), ("scanner-attn", "sample", "attn", 0.000999),
          ("findings-full", "sample:findings", "full", 0.000356)) for seed in (0, 1, 2)]
# The same runs at v3.3's chosen rates (docs/compare-medln-tiny*/; session 13's candidates).
RUNS3_V33 = [(f"{key}-s{seed}", data, scope, lr, seed) for key, data, scope, lr in
             (("scanner-ln", "sample", "ln", 0.169), ("scanner-attn", "sample", "attn", 0.000999),
              ("findings-full", "sample:findings", "full", 0.000357)) for seed in (0, 1, 2)]
RUNS3_BY_RATES = {"v3.0": RUNS3, "v3.3": RUNS3_V33}
# gather3's record per rate set: (file in diagnosis/, what it holds)
GATHER3 = {"v3.0": ("v3.3-wide-source.json", "medln-tiny candidates with a wider source (pretrain-tiny --wide), "
                    "checked on validation"),
           "v3.3": ("v3.3-longer-wide-stage.json", "medln-tiny v3.3 continued by a longer wide stage, checked on "
                    "validation at v3.3's rates")}


def pretrain(name: str, *options: str) -> None:
    out = WORK / name
    subprocess.run([sys.executable, "-m", "medln", "pretrain-tiny", "--out", str(out), *options], check=True)


def _train(model: str, name: str, run: tuple) -> None:
    key, data, scope, lr, seed = run
    d = WORK / f"check-{name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDLN_CACHE": str(d / f"cache-{data}")}
    subprocess.run([sys.executable, "-m", "medln", "train", "--backbone", model, "--data", data, "--scope", scope,
                    "--lr", str(lr), "--seed", str(seed), "--eval-split", "validation", "--ood-split", "",
                    "--eval-limit", "0",  # the whole split (findings validation: 506 questions since session 11)
                    "--out", str(d / key), "--overwrite", "--quiet", "--json"], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def fresh_source(model: str) -> dict:
    """The model on FRESH_STUDIES source studies no split or pretraining stream uses."""
    from medln.backbones import load_backbone
    from medln.evaluate import evaluate
    from medln.make.task import make_study, study_samples

    items = []
    for i in range(FRESH_STUDIES):
        st = make_study(FRESH_SOURCE_SEED, i, "source")
        items += study_samples(st, f"fresh-{i:04d}", st.image, "source", with_report=False)
    bb = load_backbone(model, device="cpu")
    m = evaluate(bb, bb.model, items, adapter=False)
    return {"n": m["n"], "overall": round(m["overall"], 4),
            "by_question_type": {k: round(v["accuracy"], 3) for k, v in m["by_question_type"].items()}}


def check(model: str, name: str, runs: list = RUNS) -> None:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: _train(model, name, r), runs))
    (WORK / f"check-{name}" / "fresh_source.json").write_text(json.dumps(fresh_source(model)))


def check3(model: str, name: str, rates: str = "v3.0") -> None:
    """RUNS3_BY_RATES[rates] (3 seeds each) and the fresh source; prints each run's mean over the seeds."""
    runs = RUNS3_BY_RATES[rates]
    check(model, name, runs)
    d = WORK / f"check-{name}"
    scores: dict[str, list[float]] = {}
    for key, *_ in runs:
        e = json.loads((d / key / "eval.json").read_text())
        scores.setdefault(key.rsplit("-s", 1)[0], []).append(e["tuned"]["validation"]["overall"])
    summary = {k: {"seeds": [round(v, 4) for v in vs], "mean": round(sum(vs) / len(vs), 4)} for k, vs in scores.items()}
    summary["fresh_source"] = json.loads((d / "fresh_source.json").read_text())["overall"]
    (d / "summary3.json").write_text(json.dumps(summary, indent=1))
    print(name, json.dumps(summary))


def gather(pairs: list[str]) -> None:
    out = {"what": __doc__.split("\n")[0], "validation": "each target's validation split; fresh source studies "
           f"(stream {FRESH_SOURCE_SEED}, {FRESH_STUDIES} studies)", "runs": {r[0]: dict(zip(
               ("data", "scope", "lr", "seed"), r[1:])) for r in RUNS}, "models": {}}
    for pair in pairs:
        name, model = pair.split("=", 1)
        d = WORK / f"check-{name}"
        row: dict = {"model": model}
        pre = Path(model) / "MEDLN_PRETRAIN.json"
        if pre.is_file():
            rec = json.loads(pre.read_text())
            p = rec["pretraining"]
            row["stage"] = {k: p.get(k) for k in ("steps", "studies", "stream", "lr", "extra_wordings", "wide_kinds",
                                                  "decoder_only") if k in p}
            if "earlier_stage" in rec:  # what the stage started from (v3.0's 2,500 steps or v4's 5,000)
                e = rec["earlier_stage"]["pretraining"]
                row["earlier_stage"] = {k: e.get(k) for k in ("steps", "studies", "lr")}
        for key, *_ in RUNS:
            e = json.loads((d / key / "eval.json").read_text())
            t, b = e["tuned"]["validation"], e["blind"]["validation"]
            row[key] = {"n": t["n"], "overall": round(t["overall"], 4), "blind": round(b["overall"], 4),
                        "by_phrasing": {k: round(v["overall"], 4) for k, v in t["by_phrasing"].items()}}
        row["fresh_source"] = json.loads((d / "fresh_source.json").read_text())
        out["models"][name] = row
        print(name, {k: v["overall"] for k, v in row.items() if isinstance(v, dict) and "overall" in v})
    path = HERE / "diagnosis" / "v3.1-language-stage.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    out["models"] = {**old.get("models", {}), **out["models"]}  # rows checked earlier stay as they were
    if "notes" in old:
        out["notes"] = old["notes"]  # written by hand: runs this script no longer makes
    path.write_text(json.dumps(out, indent=1) + "\n")


def gather3(pairs: list[str], rates: str = "v3.0") -> None:
    """check3 summaries (and each model's stages) -> diagnosis/GATHER3[rates][0], rows added."""
    file, what = GATHER3[rates]
    path = HERE / "diagnosis" / file
    out = json.loads(path.read_text()) if path.is_file() else {
        "what": what, "runs": {r[0]: dict(zip(("data", "scope", "lr", "seed"), r[1:])) for r in RUNS3_BY_RATES[rates]},
        "models": {}}
    for pair in pairs:
        name, model = pair.split("=", 1)
        row = json.loads((WORK / f"check-{name}" / "summary3.json").read_text())
        stages, rec = [], json.loads((Path(model) / "MEDLN_PRETRAIN.json").read_text())
        while rec:  # newest stage first
            p = rec["pretraining"]
            stages.append({k: p.get(k) for k in ("init", "steps", "studies", "stream", "lr", "extra_wordings",
                                                  "wide_kinds", "decoder_only") if k in p})
            rec = rec.get("earlier_stage")
        out["models"][name] = {"model": model, "stages": stages[::-1], **row}
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    {"pretrain": lambda: pretrain(*rest), "check": lambda: check(*rest), "check3": lambda: check3(*rest),
     "gather": lambda: gather(rest), "gather3": lambda: gather3(rest),
     "gather3-v3.3": lambda: gather3(rest, "v3.3")}[cmd]()
