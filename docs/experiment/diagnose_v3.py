"""What holds the v3 experiment's two missed bars back (source-test >= 0.85; findings best >= blind + 25)?

Measures, on the committed v3 sample and any medln-tiny-style model folder (session 7):

    python docs/experiment/diagnose_v3.py source MODEL [MODEL ...]  # source-test vs 300 fresh source studies
    python docs/experiment/diagnose_v3.py presence [MODEL]          # new findings' presence/size, read linearly from frozen features
    python docs/experiment/diagnose_v3.py fit RUN [RUN ...]         # a run's accuracy per (question type, finding kind) on findings-train
    python docs/experiment/diagnose_v3.py answers RUN [RUN ...]     # what a run answers to findings-validation's abnormality questions
                                                                    # (--name N: writes v3-N.json)
    python docs/experiment/diagnose_v3.py patch4 OUT                # medln-tiny's recipe with 4 px patches (256 image tokens)

Each writes docs/experiment/diagnosis/v3-<part>.json (patch4: OUT/MEDLN_PRETRAIN.json) and prints a
summary. Offline, CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent / "diagnosis"
FRESH_SOURCE_SEED = 102  # a source stream no committed split, pretraining (100) or tokenizer (101) uses
NEW_KIND_WORDS = {"pneumothorax": "pneumothorax", "infarct": "infarct", "kidney stone": "stone"}


def _save(part: str, data: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"v3-{part}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {path.relative_to(REPO)}")


def _per_type(m: dict) -> dict:
    return {k: {"n": v["n"], "accuracy": round(v["accuracy"], 3)} for k, v in m["by_question_type"].items()}


def source(models: list[str], studies: int = 300, boot: int = 2000) -> None:
    """The committed source-test (42 studies) is the bar's split; 300 fresh source-style studies
    (stream FRESH_SOURCE_SEED, every question kind, seen wordings) say how far that draw is from
    the model's ability. The interval resamples *studies* (a study's questions share an image)."""
    import numpy as np

    from medln.backbones import load_backbone
    from medln.data import load_samples
    from medln.evaluate import evaluate, predict, score
    from medln.make.task import make_study, study_samples

    fresh = []
    for i in range(studies):
        st = make_study(FRESH_SOURCE_SEED, i, "source")
        fresh += study_samples(st, f"val-{i:04d}", st.image, "source", with_report=False)
    test = [s for s in load_samples("sample", "source-test").samples if not s.is_report]
    result = {"fresh": {"stream_seed": FRESH_SOURCE_SEED, "studies": studies}, "models": {}}
    for model in models:
        bb = load_backbone(model, device="cpu")
        preds = predict(bb, bb.model, test, adapter=False)
        hits = defaultdict(list)  # study (its image) -> one hit per question, the project's hit rule
        for s, p in zip(test, preds):
            hits[str(s.image)].append(score([s], [p], by_phrasing=False)["overall"])
        per_study = [sum(v) for v in hits.values()]
        sizes = [len(v) for v in hits.values()]
        rng = np.random.default_rng(0)
        idx = rng.integers(len(per_study), size=(boot, len(per_study)))
        draws = np.take(per_study, idx).sum(1) / np.take(sizes, idx).sum(1)
        m_test = score(test, preds, by_phrasing=False)
        m_fresh = evaluate(bb, bb.model, fresh, adapter=False)
        result["models"][model] = {
            "source_test": {"n": m_test["n"], "studies": len(per_study), "overall": round(m_test["overall"], 4),
                            "study_bootstrap_95": [round(float(q), 3) for q in np.quantile(draws, [0.025, 0.975])],
                            "by_question_type": _per_type(m_test)},
            "fresh_source": {"n": m_fresh["n"], "overall": round(m_fresh["overall"], 4),
                             "by_question_type": _per_type(m_fresh)},
        }
        r = result["models"][model]
        print(f"{model}: source-test {r['source_test']['overall']:.3f} (n = {m_test['n']}, 95 % over studies "
              f"{r['source_test']['study_bootstrap_95']}); {studies} fresh studies {r['fresh_source']['overall']:.3f} "
              f"(n = {m_fresh['n']})")
    _save("source", result)


def presence(model: str = "medln-tiny", train_studies: int = 400, val_studies: int = 300) -> None:
    """Is a new finding's presence (and size) in the frozen vision features? The project's ridge
    classifiers (medln.probe.fit_ridges) per kind, fitted on findings-train's stream (seed 21), scored on the validation stream (seed 22,
    whose first 84 studies are findings-validation); the strength is the best of four on that
    stream, so the figures are a slightly optimistic read-out, not a test score."""
    import numpy as np

    from medln.backbones import load_backbone
    from medln.make.task import SPLITS, make_study
    from medln.probe import fit_ridges, vision_features

    bb = load_backbone(model, device="cpu")

    def stream(seed: int, n: int):
        studies = [make_study(seed, i, "findings") for i in range(n)]
        x = vision_features(bb, [s.image for s in studies])
        return (x, np.array([s.findings.kind for s in studies]), np.array([s.findings.present for s in studies]),
                np.array([s.findings.size or "" for s in studies]))

    xtr, ktr, ptr, size_tr = stream(SPLITS["findings-train"].seed, train_studies)
    xva, kva, pva, size_va = stream(SPLITS["findings-validation"].seed, val_studies)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    alphas = (10.0, 100.0, 1000.0, 10000.0)

    def accuracy(clf, x, truth) -> float:
        return float((np.array(clf.predict(x)) == truth).mean())

    out = {"model": model, "classifier": "medln.probe.fit_ridges (ridge on one-hot answers, argmax)",
           "train": {"seed": SPLITS["findings-train"].seed, "studies": train_studies},
           "validation": {"seed": SPLITS["findings-validation"].seed, "studies": val_studies}, "kinds": {}}
    for kind in sorted(set(ktr)):
        a, b = ktr == kind, kva == kind
        fits = fit_ridges(xtr[a], [str(p) for p in ptr[a]], alphas)
        pres = {alpha: accuracy(clf, xva[b], pva[b].astype(str)) for alpha, clf in fits.items()}
        entry = {"n_validation": int(b.sum()), "presence": round(max(pres.values()), 3), "presence_by_alpha": pres,
                 "presence_chance": 0.5}
        sa, sb = a & ptr, b & pva
        if size_tr[sa].size and size_tr[sa][0]:
            clf = fit_ridges(xtr[sa], list(size_tr[sa]), (1000.0,))[1000.0]
            entry["size"] = round(accuracy(clf, xva[sb], size_va[sb]), 3)
            entry["size_chance"] = round(1 / len(set(size_tr[sa])), 3)
        out["kinds"][kind] = entry
        print(f"{kind:13s} presence {entry['presence']:.2f}  size {entry.get('size', '-')}  (n = {entry['n_validation']})")
    _save("presence", out)


def fit(runs: list[str], limit: int = 400) -> None:
    """How much of findings-train a run fits (in-sample), per question type and finding kind:
    a run that cannot fit its own train items is limited by the budget, not by generalisation."""
    from medln.data import load_samples
    from medln.evaluate import predict, score
    from medln.runs import load_run

    items = [s for s in load_samples("sample:findings", "train").samples if not s.is_report][:limit]

    def kind_of(s) -> str:
        text = f"{s.question} {s.answer}".lower()
        return next((k for k, w in NEW_KIND_WORDS.items() if w in text), "(none named)")

    out = {"items": len(items), "split": "findings-train (first items, in-sample)", "runs": {}}
    for run in runs:
        cfg = json.loads((Path(run) / "config.json").read_text())
        bb = load_run(run, device="cpu")
        preds = predict(bb, bb.model, items)
        cells: dict = defaultdict(lambda: [0, 0])
        for s, p in zip(items, preds):
            key = f"{s.question_type} {kind_of(s)}" + (f" ({s.answer})" if s.question_type == "PRES" else "")
            cells[key][0] += int(score([s], [p], by_phrasing=False)["overall"])  # the project's own hit rule
            cells[key][1] += 1
        train_cfg = cfg.get("config", cfg)
        name = f"{cfg.get('scope')} lr {cfg.get('lr')} steps {train_cfg.get('steps')} seed {train_cfg.get('seed')}"
        out["runs"][name] = {k: {"correct": c, "n": n} for k, (c, n) in sorted(cells.items())}
        print(name)
        for k, (c, n) in sorted(cells.items()):
            print(f"  {k:32s} {c:3d} / {n}")
    _save("fit", out)


def answers(runs: list[str], name: str = "answers") -> None:
    """What a findings run answers when asked which abnormality a study shows (findings-validation,
    every wording): does it name the new kinds, or a kind whose word it already knew? By region,
    studies with and without the finding: naming a kind for normal studies of its region as often
    is a region prior, not a read-out of the finding."""
    from collections import Counter

    from medln.data import load_samples
    from medln.evaluate import predict
    from medln.runs import load_run

    items = [s for s in load_samples("sample:findings", "validation").samples if s.question_type == "ABN"]
    out = {"split": "findings-validation, abnormality questions", "items": len(items), "runs": {}}
    for run in runs:
        bb = load_run(run, device="cpu")
        preds = predict(bb, bb.model, items)
        pairs = Counter(zip((s.answer for s in items), preds))
        named = sum(n for (gold, pred), n in pairs.items() if gold != "none" and pred == gold)
        abnormal = sum(n for (gold, _), n in pairs.items() if gold != "none")
        by_region: dict = defaultdict(Counter)
        for s, p in zip(items, preds):
            f = s.meta["findings"]
            by_region[f"{f['region']}, {'present' if f['present'] else 'normal'}"][p] += 1
        out["runs"][run] = {"new_kind_named": named, "abnormal": abnormal,
                            "answers": [{"gold": g, "pred": p, "n": n} for (g, p), n in pairs.most_common()],
                            "by_region": {k: dict(c.most_common()) for k, c in sorted(by_region.items())}}
        print(f"{run}: names the new kind for {named} of {abnormal} abnormal studies")
        for k, c in sorted(by_region.items()):
            print(f"  {k:20} n = {sum(c.values()):3d}: " + ", ".join(f"{p!r} {n}" for p, n in c.most_common(3)))
    _save(name, out)


def patch4(out: str) -> None:
    """Pretrain medln-tiny's recipe (PretrainArgs defaults) with 4 px patches into `out`: four
    times the image tokens, for the small findings' position, size and count. Not installed."""
    import medln.make.pretrain as pretrain

    pretrain.SIZES = {**pretrain.SIZES, "patch_size": 4}
    pretrain.pretrain_tiny(pretrain.PretrainArgs(out=out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("source", "presence", "fit", "answers", "patch4"))
    ap.add_argument("paths", nargs="*", help="model folders (source, presence), run folders (fit) or the output folder (patch4)")
    ap.add_argument("--name", default="answers", help="answers: the output's name (diagnosis/v3-NAME.json)")
    a = ap.parse_args()
    if a.name != "answers" and (a.part != "answers" or not a.name.replace("-", "").replace("_", "").isalnum()):
        ap.error("--name is for `answers` only: letters, digits, - and _ (diagnosis/v3-NAME.json)")
    if a.part == "source":
        source(a.paths or ["medln-tiny"])
    elif a.part == "patch4":
        if len(a.paths) != 1:
            ap.error("patch4 needs one output folder")
        patch4(a.paths[0])
    elif a.part == "presence":
        presence(*(a.paths[:1] or ["medln-tiny"]))
    else:
        if not a.paths:
            ap.error(f"{a.part} needs run folders (medln train --data sample:findings ...)")
        fit(a.paths) if a.part == "fit" else answers(a.paths, a.name)


if __name__ == "__main__":
    main()
