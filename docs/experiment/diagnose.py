"""Why did tuning medln-tiny on the bundled sample (generator v2) not beat an image-blind row?

Measures each candidate cause named in issue 24, on the v2 sample and model (commit
dcf7ccc's assets/; this script was committed beside them, before the redesign):

    python docs/experiment/diagnose.py tokens   # answer vs report label tokens; answer tokenization
    python docs/experiment/diagnose.py base     # base model: image style x phrasing, one style factor at a time
    python docs/experiment/diagnose.py probe    # linear probes: pixels, vision tower, connector; source -> target
    python docs/experiment/diagnose.py train    # ln / full / lora runs: reports, steps, phrasing split

Each writes docs/experiment/diagnosis/<part>.json and prints a summary. Offline, CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent / "diagnosis"
FRESH_SEED = 900  # a stream no committed split or pretraining uses


def _save(part: str, data: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {OUT / (part + '.json')}")


def _vqa(split: str):
    from medln.data import load_samples

    return [s for s in load_samples("sample", split).samples if not s.is_report]


# --------------------------------------------------------------------------- tokens

def tokens(args) -> None:
    """Share of the training loss's label tokens that are report tokens; answer token counts."""
    from medln.backbones import load_backbone
    from medln.data import load_samples
    from medln.prompts import IGNORE, encode_for_training

    bb = load_backbone("medln-tiny", device="cpu")
    train = load_samples("sample", "train").samples
    per_task: dict[str, list[int]] = defaultdict(list)
    for s in train:
        batch = encode_for_training(bb, [s])
        per_task[s.task].append(int((batch["labels"] != IGNORE).sum()))
    tok = bb.processor.tokenizer
    answers = Counter(s.answer for s in train if not s.is_report)
    pieces = {a: tok.tokenize(" " + a) for a in answers}
    first = defaultdict(list)
    for a, p in pieces.items():
        first[p[0]].append(a)
    data = {
        "label_tokens": {t: {"items": len(v), "tokens": sum(v), "mean": round(sum(v) / len(v), 2)} for t, v in per_task.items()},
        "report_token_share": round(sum(per_task["report"]) / sum(sum(v) for v in per_task.values()), 3),
        "answer_tokens": {a: pieces[a] for a in sorted(answers, key=lambda a: -answers[a])},
        "shared_first_token": {t: v for t, v in first.items() if len(v) > 1},
    }
    _save("tokens", data)
    print(json.dumps({k: data[k] for k in ("label_tokens", "report_token_share")}, indent=1))
    print("answers sharing a first token:", data["shared_first_token"])


# --------------------------------------------------------------------------- base model

def _variant_studies(n: int, image_style: str, phrasing: str, spec=None):
    """Samples of n fresh studies: image drawn in `image_style` (or `spec`), questions in
    `phrasing` style (target: its shared, trained phrasings). Findings do not depend on style."""
    import numpy as np

    from medln.data.sample import Sample
    from medln.make import synth

    if spec is not None:
        synth.STYLES["_variant"] = spec
        image_style = "_variant"
    out = []
    for i in range(n):
        rng = np.random.default_rng([synth.GENERATOR_SEED, FRESH_SEED, i])
        flip = int(np.random.default_rng([synth.GENERATOR_SEED, FRESH_SEED, i // 2, 1]).integers(2))
        f = synth.sample_findings(rng, present=(i % 2) == flip)
        image = synth.draw(f, image_style, rng)
        qrng = np.random.default_rng([synth.GENERATOR_SEED, FRESH_SEED, i, 7])  # same questions for every image style
        for j, it in enumerate(synth.vqa_items(f, phrasing, qrng)):
            out.append(Sample(id=f"v{i}-q{j}", image=image, answer=it["answer"], question=it["question"],
                              answer_type=it["answer_type"], question_type=it["question_type"], synthetic=True))
    return out


def _brief(m: dict) -> dict:
    return {"n": m["n"], "overall": round(m["overall"], 3), "closed": round(m["closed_accuracy"] or 0, 3),
            "by_type": {t: round(v["accuracy"], 3) for t, v in m["by_question_type"].items()}}


def base(args) -> None:
    from medln.backbones import load_backbone
    from medln.evaluate import evaluate
    from medln.make import synth

    bb = load_backbone("medln-tiny", device="cpu")
    src, tgt = synth.STYLES["source"], synth.STYLES["target"]
    variants = {
        "source image, source phrasing": ("source", "source", None),
        "target image, source phrasing": ("target", "source", None),
        "source image, target phrasing": ("source", "target", None),
        "target image, target phrasing": ("target", "target", None),
    }
    # The target style with one factor set back to the source's (source phrasings throughout).
    factors = {
        "no x-ray inversion": dict(invert_xray=False),
        "T2 MRI (as source)": dict(mri="t2"),
        "no zoom": dict(zoom=1.0),
        "no banding": dict(banding=0.0),
        "source noise": dict(noise=src.noise, noise_block=1),
        "source contrast": dict(window=src.window, display=src.display, sigmoid=False),
        "source size and edges": dict(size=src.size, edge_px=src.edge_px),
        "no inversion, T2, no zoom": dict(invert_xray=False, mri="t2", zoom=1.0),
    }
    for name, change in factors.items():
        variants[f"target image, {name}"] = ("target", "source", dataclasses.replace(tgt, **change))
    data = {"n_studies": args.n, "stream_seed": FRESH_SEED, "committed": {}, "variants": {}}
    for split in () if args.skip_committed else ("source-test", "test"):
        data["committed"][split] = _brief(evaluate(bb, bb.model, _vqa(split), adapter=False))
        print(split, data["committed"][split])
    for name, (image_style, phrasing, spec) in variants.items():
        m = _brief(evaluate(bb, bb.model, _variant_studies(args.n, image_style, phrasing, spec), adapter=False))
        data["variants"][name] = m
        print(f"{name:45s} {m['overall']:.3f} {m['by_type']}")
    # Pretraining fit: studies the model was trained on (stream seed 100) vs held-out source-test.
    train_like = [s for s in synth.source_stream(args.n) if not s.is_report]
    data["pretraining_stream_first_studies"] = _brief(evaluate(bb, bb.model, train_like, adapter=False))
    print("pretraining stream (trained on)", data["pretraining_stream_first_studies"])
    _save("base", data)


# --------------------------------------------------------------------------- probes

LABELS = ("modality", "region", "present", "kind", "side", "size", "zone", "count")


def _study_labels(f: dict) -> dict:
    return {"modality": f["modality"], "region": f["region"], "present": str(f["present"]),
            "kind": f["kind"] if f["present"] else "none", "side": f["side"], "size": f["size"],
            "zone": f["zone"], "count": str(f["count"]) if f["present"] else None}


def _studies(split: str):
    """(PIL images, label dicts) of a committed split, one per study (its report line)."""
    from medln.data import load_samples
    from medln.data.images import load_image

    reports = [s for s in load_samples("sample", split).samples if s.is_report]
    return [load_image(s.image) for s in reports], [_study_labels(s.meta["findings"]) for s in reports]


def _stream(n: int):
    from medln.make import synth

    images, labels = [], []
    for i in range(n):
        study = synth.make_study(synth.SOURCE_TRAIN_SEED, i, "source")
        images.append(study.image.convert("RGB"))
        labels.append(_study_labels(study.findings.as_dict()))
    return images, labels


def _probe_acc(xtr, ytr, xte, yte) -> dict:
    import numpy as np

    from medln.probe import fit_logreg

    out = {}
    for label in LABELS:
        tr = [i for i, y in enumerate(ytr) if y[label] is not None]
        te = [i for i, y in enumerate(yte) if y[label] is not None]
        if not tr or not te:
            continue
        clf = fit_logreg(xtr[tr], [ytr[i][label] for i in tr], l2=1e-2)
        pred = clf.predict(xte[te])
        out[label] = {"n": len(te), "acc": round(float(np.mean([p == yte[i][label] for p, i in zip(pred, te)])), 3),
                      "majority": round(Counter(yte[i][label] for i in te).most_common(1)[0][1] / len(te), 3)}
    return out


def probe(args) -> None:
    from medln.backbones import load_backbone
    from medln.probe import vision_features

    bb = load_backbone("medln-tiny", device="cpu")
    sets = {"target-train": _studies("train"), "target-test": _studies("test"), "source-test": _studies("source-test"),
            "source-stream": _stream(args.n)}
    data = {"source_stream_studies": args.n, "probes": {}}
    for where in ("pixels", "vision", "connector"):
        feats = {k: vision_features(bb, ims, where=where) for k, (ims, _) in sets.items()}
        lab = {k: y for k, (_, y) in sets.items()}
        data["probes"][where] = {
            "target-train -> target-test": _probe_acc(feats["target-train"], lab["target-train"], feats["target-test"], lab["target-test"]),
            "source-stream -> source-test": _probe_acc(feats["source-stream"], lab["source-stream"], feats["source-test"], lab["source-test"]),
            "source-stream -> target-test": _probe_acc(feats["source-stream"], lab["source-stream"], feats["target-test"], lab["target-test"]),
        }
        for k, v in data["probes"][where].items():
            print(f"{where:9s} {k:30s} " + " ".join(f"{lab_}={r['acc']:.2f}" for lab_, r in v.items()))
    _save("probe", data)


# --------------------------------------------------------------------------- training runs

def _run(scope: str, steps: int, lr: float | None, train, test, seed: int = 0) -> dict:
    from medln.baselines import score_by_phrasing
    from medln.config import TrainConfig
    from medln.evaluate import predict, score
    from medln.train import fit, prepare

    cfg = TrainConfig(scope=scope, steps=steps, lr=lr, seed=seed)
    tunable = prepare(cfg, device="cpu")
    t0 = time.perf_counter()
    losses = [r["loss"] for r in fit(tunable, cfg, train) if r["event"] == "step"]
    train_s = time.perf_counter() - t0
    preds = predict(tunable.backbone, tunable.model, test)
    m = _brief(score(test, preds))
    m["by_phrasing"] = {k: round(v["overall"], 3) for k, v in score_by_phrasing(test, preds).items()}
    mixed = Counter()
    for s, p in zip(test, preds):  # open answers of another question kind's vocabulary
        if s.answer_type == "OPEN" and p != s.answer:
            mixed[s.question_type] += 1
    return {"scope": scope, "steps": steps, "lr": cfg.effective_lr, "train_s": round(train_s, 1),
            "loss_first_last": [losses[0], losses[-1]], **m}


def train(args) -> None:
    from medln.baselines import fit_blind, mark_phrasing, score_blind
    from medln.data import load_samples

    train_all = load_samples("sample", "train").samples
    train_vqa = [s for s in train_all if not s.is_report]
    test = _vqa("test")
    labels = mark_phrasing(test, train_all)
    for s in test:  # the v2 records do not carry the flag: mark by train questions
        s.meta["phrasing"] = labels[s.id]
    blind = score_blind(fit_blind(train_all), test)
    data = {"n_test": len(test), "held_out_share": round(sum(v == "held-out" for v in labels.values()) / len(labels), 3),
            "blind": {"overall": round(blind["overall"], 3),
                      "by_phrasing": {k: round(v["overall"], 3) for k, v in blind["by_phrasing"].items()}},
            "runs": {}}
    print("blind", data["blind"], "held-out share", data["held_out_share"])
    runs = {
        "ln 200 (default, reports in train)": ("ln", 200, None, train_all),
        "ln 200, VQA-only train": ("ln", 200, None, train_vqa),
        "ln 600, VQA-only train": ("ln", 600, None, train_vqa),
        "full 200, VQA-only train": ("full", 200, None, train_vqa),
        "lora 200, VQA-only train": ("lora", 200, None, train_vqa),
    }
    only = set(args.only.split(",")) if args.only else None
    for name, (scope, steps, lr, tr) in runs.items():
        if only and not any(o in name for o in only):
            continue
        data["runs"][name] = _run(scope, steps, lr, tr, test)
        print(f"{name:40s} {json.dumps(data['runs'][name])}")
        _save("train" + (f"-{args.tag}" if args.tag else ""), data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("tokens", "base", "probe", "train"))
    p.add_argument("--n", type=int, default=60, help="fresh studies per variant (base) / source-stream studies (probe)")
    p.add_argument("--only", default="", help="train: comma-separated substrings of the run names to do")
    p.add_argument("--tag", default="", help="train: suffix of the output file")
    p.add_argument("--skip-committed", action="store_true", help="base: skip scoring the committed splits")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    {"tokens": tokens, "base": base, "probe": probe, "train": train}[args.part](args)


if __name__ == "__main__":
    main()
