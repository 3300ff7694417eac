"""VQA and report-generation metrics: the METRICS table (every score a split gets, its
direction, task, count, headline rank and format: the one list tables, summaries and the
headline rule read) and the scorers, pure functions: no torch, no network, no files and no
processes (METEOR's Java scorer and reading prediction files are medln.scoring).

VQA follows LLaVA-Med's fixed eval script (`llava/eval/run_eval_batch.py` with
`eval_metrics/glossary.py`); report metrics are the COCO caption scorer's own (`pycocoevalcap`
1.2: BLEU, ROUGE-L and CIDEr-D here, METEOR's jar in medln.scoring), the numbers Med-VLM papers
report, on a pure-Python approximation of its Java tokenizer. Deliberate departures are marked
"Departure" below.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass


# ------------------------------------------------------------- the METRICS table

@dataclass(frozen=True)
class Metric:
    """One score a split gets (a key of medln.evaluate.score's dict), and how every table,
    summary and rule treats it. A new metric is one row of METRICS (plus its scorer)."""

    name: str  # its key in a split's scores
    label: str  # how a table row names it (the app, the model card)
    short: str  # a column header (TABLE.md)
    task: str  # "vqa" | "report": the items it is computed on
    n_key: str  # the count it rests on
    headline: int | None = None  # its rank in the headline rule (0 first); None: never the headline
    brief: bool = False  # in one-line summaries: train's printout, TABLE.md's columns
    spread: bool = False  # summarised over seeds in a comparison (mean ± sd, 95 % interval)
    table: bool = True  # a row of the base-vs-tuned tables (the app, the adapter's model card)
    higher_is_better: bool = True  # its direction: which end is best
    fmt: str = ".3f"
    hub: str | None = None  # its Hugging Face metric id in a model card's model-index; None: not listed

    def format(self, value) -> str:
        return "–" if value is None else format(value, self.fmt)


METRICS: dict[str, Metric] = {m.name: m for m in (
    # Accuracy over every VQA item: a closed item by closed_correct, an open one by exact match.
    Metric("overall", "VQA overall accuracy", "overall", "vqa", "n", headline=0, brief=True, spread=True, hub="accuracy"),
    Metric("closed_accuracy", "closed (yes/no) accuracy", "closed acc.", "vqa", "n_closed", brief=True, spread=True, hub="accuracy"),
    Metric("open_recall", "open recall", "open recall", "vqa", "n_open", brief=True, spread=True, hub="recall"),
    Metric("open_exact_match", "open exact match", "open EM", "vqa", "n_open", spread=True, table=False),
    Metric("open_f1", "open token F1", "open F1", "vqa", "n_open"),
    Metric("bleu_4", "report BLEU-4", "BLEU-4", "report", "n_report", headline=2, brief=True, spread=True, hub="bleu"),
    # A report-only split is judged on ROUGE-L (LCS-based: order-aware, less brittle than BLEU-4
    # on short corpora), the metric report-generation papers lead with beside BLEU.
    Metric("rouge_l", "report ROUGE-L", "ROUGE-L", "report", "n_report", headline=1, brief=True, spread=True, hub="rouge"),
    Metric("meteor", "report METEOR", "METEOR", "report", "n_report", hub="meteor"),
    Metric("cider", "report CIDEr-D", "CIDEr-D", "report", "n_report", hub="cider"),
)}
# The headline rule, one for every caller: a split is judged on the first of these it has.
HEADLINE: tuple[str, ...] = tuple(sorted((m.name for m in METRICS.values() if m.headline is not None),
                                         key=lambda name: METRICS[name].headline))


def headline_metric(scores: dict | None) -> str | None:
    """The metric a split's scores are judged on: the first of HEADLINE they hold."""
    return next((m for m in HEADLINE if (scores or {}).get(m) is not None), None)


def headline_for(tasks) -> str:
    """The metric a split holding items of these tasks ("vqa", "report") will be judged on:
    the same rule as headline_metric, before anything is scored."""
    tasks = set(tasks)
    return next((m for m in HEADLINE if METRICS[m].task in tasks), HEADLINE[0])


def best(values: dict, metric: str):
    """The key of `values` ({key: score}) with the best score on `metric`, by its direction."""
    sign = -1 if metric in METRICS and not METRICS[metric].higher_is_better else 1
    return max(values, key=lambda k: sign * values[k])


# ---------------------------------------------------------------- VQA (LLaVA-Med)

_PUNCT = ';/[]"{}()=+\\_-><@`,?!'  # glossary.py `punct`; ':' and "'" are not in it
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in _PUNCT})
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")  # "1,000" -> "1000", as glossary.py's comma_strip
# glossary.py's period_strip is "(?!<=\d)(\.)(?!\d)": the look-behind is mistyped as a
# look-ahead, so in effect a period is removed unless a digit follows ("1.5", ".5" stay).
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(s: str) -> str:
    """LLaVA-Med's normalize_word: lower-case, strip punctuation and periods not before a
    digit, number words -> digits, drop articles, collapse whitespace.

    Departure: glossary.py deletes a punctuation mark outright when it stands next to a
    space and turns it into a space otherwise; we always use a space (so "x-ray" -> "x ray"
    either way). Its contraction table ("dont" -> "don't") is not applied.
    """
    s = _DIGIT_COMMA.sub("", str(s).lower()).translate(_PUNCT_TO_SPACE)
    words = (_NUMBER_WORDS.get(w, w) for w in _PERIOD.sub("", s).split())
    return " ".join(w for w in words if w not in _ARTICLES)


def closed_correct(pred: str, gt: str) -> bool:
    """The normalised answer occurs in the normalised prediction, on word boundaries.

    Departure: LLaVA-Med tests a raw substring (`gt in pred`), which marks "no" correct
    inside "nodule", "not", "abnormal" ("yes, abnormal" answers "no"!) and "2" inside "12".
    We require no letter or digit on either side, so "no." and "answer: no" still count.
    Every CLOSED item counts; we never drop wrong yes/no answers as the old run_eval.py did.
    """
    p, g = normalize_answer(pred), normalize_answer(gt)
    if not g:  # an answer that normalises to nothing matches only an empty prediction
        return not p
    return re.search(rf"(?<!\w){re.escape(g)}(?!\w)", p) is not None


def exact_match(pred: str, gt: str) -> bool:
    # A true exact match; LLaVA-Med's calculate_exactmatch is closer to token precision.
    return normalize_answer(pred) == normalize_answer(gt)


def _overlap(pred: str, gt: str) -> tuple[int, int, int]:
    """(shared, pred, gt) whitespace-token counts after normalisation; shared is clipped
    per token (SQuAD style), so a repeated prediction word is not counted twice."""
    p, g = normalize_answer(pred).split(), normalize_answer(gt).split()
    return sum((Counter(p) & Counter(g)).values()), len(p), len(g)


def open_recall(pred: str, gt: str) -> float:
    """Fraction of the answer's tokens found in the prediction (LLaVA-Med's open 'recall')."""
    shared, n_pred, n_gt = _overlap(pred, gt)
    return shared / n_gt if n_gt else float(n_pred == 0)


def token_f1(pred: str, gt: str) -> float:
    shared, n_pred, n_gt = _overlap(pred, gt)
    if n_pred == 0 or n_gt == 0:
        return float(n_pred == n_gt)  # both empty: agree; one empty: 0
    if shared == 0:
        return 0.0
    precision, recall = shared / n_pred, shared / n_gt
    return 2 * precision * recall / (precision + recall)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None  # a mean over nothing is unknown, not 0


def inferred_answer_type(answer: str) -> str:
    """The one yes/no rule (loaders and metrics): where a layout has no answer type (HF
    mirrors, PathVQA), an answer that normalises to yes or no is CLOSED, anything else OPEN."""
    return "CLOSED" if normalize_answer(answer) in ("yes", "no") else "OPEN"


def answer_type_of(ref: dict, answer: str) -> str:
    kind = ref.get("answer_type")
    if kind is None or kind == "":
        return inferred_answer_type(answer)
    if not isinstance(kind, str) or kind.upper() not in ("CLOSED", "OPEN"):
        raise ValueError(f"answer_type must be CLOSED, OPEN or null, got {kind!r}")
    return kind.upper()


def _question_types(qt) -> list[str]:
    # VQA-RAD combines types as "PRES, POS"; such an item counts toward each part.
    parts = qt if isinstance(qt, list) else str(qt or "").split(",")
    return [p.strip() for p in parts if p and p.strip()]


def score_vqa(preds: list[str], refs: list[dict]) -> dict:
    """Closed accuracy, open recall / exact match / F1, overall and per question type.

    `overall` is accuracy over every item: a closed item by closed_correct, an open one by
    exact match. Fractions are in 0..1; a mean over zero items is None.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    closed, recall, em, f1, overall = [], [], [], [], []
    by_type: dict[str, list[float]] = {}
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        gt = str(ref["answer"])
        try:
            kind = answer_type_of(ref, gt)
        except ValueError as e:
            raise ValueError(f"refs[{i}]: {e}") from None
        if kind == "CLOSED":
            hit = float(closed_correct(pred, gt))
            closed.append(hit)
        else:
            hit = float(exact_match(pred, gt))
            em.append(hit)
            recall.append(open_recall(pred, gt))
            f1.append(token_f1(pred, gt))
        overall.append(hit)
        for qt in _question_types(ref.get("question_type")):
            by_type.setdefault(qt, []).append(hit)
    return {
        "n": len(refs), "n_closed": len(closed), "n_open": len(em),
        "closed_accuracy": _mean(closed), "open_recall": _mean(recall),
        "open_exact_match": _mean(em), "open_f1": _mean(f1), "overall": _mean(overall),
        "by_question_type": {t: {"n": len(h), "accuracy": _mean(h)} for t, h in sorted(by_type.items())},
    }


# ------------------------------------------------------- report generation (COCO)

# COCO tokenises with Stanford's PTBTokenizer (Java, -lowerCase) and then drops the tokens
# in ptbtokenizer.py's PUNCTUATIONS. This is a pure-Python approximation of that: words may
# hold inner - / . & ("x-ray", "left/right", "1.5", "t11-t12"), "1,000" stays whole,
# clitics split ("patient's" -> patient 's, "don't" -> do n't), other symbols (% & / + ...)
# are tokens of their own, and . , ; : ? ! quotes dashes and brackets go.
# Known differences: PTB keeps abbreviations ("e.g.", "vs.") with their final period, and
# keeps brackets as "-lrb-"/"-rrb-" tokens (its lower-cased names miss COCO's drop list).
_CLITIC = re.compile(r"(?<=\w)(n't|'(?:s|re|ve|ll|d|m))\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:(?:[-/.&]|(?<=\d),(?=\d))\w+)*|[^\w\s]")
_DROPPED = set(".,;:?!'\"`-()[]{}|") | set("\u201c\u201d\u2018\u2026\u2013\u2014")


def tokenize(text: str) -> list[str]:
    """Report text -> lower-case tokens, approximating COCO's PTB tokenizer (see above)."""
    text = _CLITIC.sub(r" \1", str(text).lower().replace("\u2019", "'"))
    return [t for t in _TOKEN.findall(text) if t not in _DROPPED]


# The report scorers are COCO's own (pycocoevalcap 1.2: bleu_scorer.py, rouge.py,
# cider_scorer.py), given our tokens joined by spaces (they split on spaces), so their quirks
# are the reference's: BLEU's "closest" reference length with ties to the shorter and its
# 1e-15 / 1e-9 smoothing (a corpus without a 4-gram match scores ~1e-5, not 0), ROUGE-L's best
# precision and best recall taken over the references separately, CIDEr-D's document frequency
# from this corpus's references (one item: every weight is 0) and its length penalty counting
# bigrams. tests/test_metrics.py works each out by hand and pins the numbers.

def report_scores(hyps: list[list[str]], refs: list[list[list[str]]]) -> dict:
    """BLEU-1..4, ROUGE-L and CIDEr-D of a non-empty tokenised corpus: hyps[i] = [word, ...],
    refs[i] = [[word, ...], ...] (at least one reference each). METEOR, which needs the
    reference jar, is added by medln.scoring.score_report."""
    # Imported here: the CLI's --help imports this module, and pycocoevalcap's scorers import numpy.
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose=0: it prints its counts otherwise
    out = {f"bleu_{k}": float(b) for k, b in enumerate(bleu, 1)}
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])  # n = 4, sigma = 6: CIDEr-D
    return out
