"""VQA and report-generation metrics: pure functions, no torch, no network.

VQA follows LLaVA-Med's fixed eval script (`llava/eval/run_eval_batch.py` with
`eval_metrics/glossary.py`); report metrics follow the COCO caption scorer
(`pycocoevalcap` 1.2: bleu_scorer.py, rouge.py, cider_scorer.py, meteor.py), the numbers
Med-VLM papers report. Deliberate departures are marked "Departure" below.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from medln.data.sample import DataError

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


def _answer_type(ref: dict, answer: str) -> str:
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
            kind = _answer_type(ref, gt)
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


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


# The scorers below take a non-empty corpus of tokenised hypotheses, hyps[i] = [word, ...],
# and their references, refs[i] = [[word, ...], ...] (at least one per item).

def corpus_bleu(hyps: list[list[str]], refs: list[list[list[str]]], n: int = 4) -> list[float]:
    """BLEU-1..n as bleu_scorer.py computes it (option 'closest'): clipped n-gram counts and
    lengths summed over the corpus, then one geometric mean and one brevity penalty."""
    tiny, small = 1e-15, 1e-9  # COCO's constants: a zero count gives ~0, not a crash
    test_len = ref_len = 0
    guess, correct = [0] * n, [0] * n
    for hyp, rs in zip(hyps, refs):
        max_ref = Counter()
        for r in rs:
            max_ref |= _ngram_counts(r, n)  # clip by the most any one reference has
        for gram, count in _ngram_counts(hyp, n).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(n):
            guess[k] += max(0, len(hyp) - k)
        test_len += len(hyp)
        # "closest" reference length; ties go to the shorter (min over (distance, length))
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
    ratio = (test_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1 / (k + 1)) * penalty)
    return scores


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programme, one row at a time)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: list[list[str]], refs: list[list[list[str]]], beta: float = 1.2) -> float:
    """ROUGE-L as rouge.py: per sentence F_beta from the best precision and the best recall
    over its references (they may come from different references), then the mean."""
    scores = []
    for hyp, rs in zip(hyps, refs):
        lcs = [_lcs(r, hyp) for r in rs]
        p = max((m / len(hyp) if hyp else 0.0) for m in lcs)
        r = max((m / len(ref) if ref else 0.0) for m, ref in zip(lcs, rs))
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0)
    return sum(scores) / len(scores)


def cider_d(hyps: list[list[str]], refs: list[list[list[str]]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D as cider_scorer.py: tf-idf n-gram vectors (document frequency from this
    corpus's references), clipped cosine, Gaussian length penalty, mean over n=1..4 and
    over references, times 10, then the mean over the corpus."""
    ref_counts = [[_ngram_counts(r, n) for r in rs] for rs in refs]
    df = Counter(g for rcs in ref_counts for g in set().union(*rcs))
    log_n = math.log(len(hyps))  # so an n-gram in every item's references weighs 0

    def vectorise(counts: Counter):
        vec, norm, length = [{} for _ in range(n)], [0.0] * n, 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
            norm[k] += vec[k][gram] ** 2
            if k == 1:  # COCO's `if n == 1` tests the 0-based index: it counts bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for hyp, rcs in zip(hyps, ref_counts):
        vh, nh, lh = vectorise(_ngram_counts(hyp, n))
        total = 0.0
        for rc in rcs:
            vr, nr, lr = vectorise(rc)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                # "clipping": a hypothesis n-gram is credited at most its reference weight
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] and nr[k]:
                    val /= nh[k] * nr[k]
                total += val * penalty
        scores.append(10.0 * total / n / len(rcs))
    return sum(scores) / len(scores)


def _meteor_jar() -> Path | None:
    # pycocoevalcap (a namespace package) ships meteor-1.5.jar and its paraphrase table.
    spec = importlib.util.find_spec("pycocoevalcap")
    for root in (spec.submodule_search_locations or []) if spec else []:
        jar = Path(root) / "meteor" / "meteor-1.5.jar"
        if jar.is_file() and (jar.parent / "data" / "paraphrase-en.gz").is_file():
            return jar
    return None


def meteor(hyps: list[str], refs: list[list[str]], timeout: float = 600.0) -> tuple[float | None, str | None]:
    """Corpus METEOR 1.5 exactly as pycocoevalcap's meteor.py gets it (same jar, same flags,
    same SCORE/EVAL protocol). Returns (score, None), or (None, reason) when the jar or Java
    is missing or fails; it never raises. Takes tokenised text joined by spaces."""
    if not hyps:
        return None, "no items"
    jar = _meteor_jar()
    if jar is None:
        return None, ("METEOR skipped: needs the pycocoevalcap package, which bundles "
                      "meteor-1.5.jar (pip install pycocoevalcap==1.2)")
    java = shutil.which("java")
    if java is None:
        return None, "METEOR skipped: needs Java on PATH (apt-get install default-jre-headless)"
    cmd = [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    try:
        proc = subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
    except OSError as e:
        return None, f"METEOR skipped: could not start Java ({e})"
    watchdog = threading.Timer(timeout, proc.kill)  # a hung JVM ends the read with "" below
    watchdog.start()

    def ask(line: str) -> str:
        proc.stdin.write(line.replace("\n", " ") + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        # "|||" separates fields in the protocol; our tokens never contain "|".
        stats = [ask(" ||| ".join(["SCORE", *rs, h])) for h, rs in zip(hyps, refs)]
        ask(" ||| ".join(["EVAL", *stats]))  # first answer line: segment 1's score
        for _ in range(len(hyps) - 1):
            proc.stdout.readline()  # the other segment scores
        return float(proc.stdout.readline()), None  # then the corpus score
    except (OSError, ValueError) as e:
        return None, f"METEOR failed: the Java process gave no score ({e})"
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def score_report(preds: list[str], refs: list[str | list[str]], *, with_meteor: bool = True) -> dict:
    """BLEU-1..4, ROUGE-L, METEOR and CIDEr-D of generated reports, as COCO's scorer.

    A ref is a report or a list of reports. METEOR starts a JVM (~7 s); it is None, with
    `meteor_note` saying why, when skipped or unavailable. An empty corpus gives None."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    ref_lists = [[r] if isinstance(r, str) else list(r) for r in refs]
    if any(not rs for rs in ref_lists):
        raise ValueError("every prediction needs at least one reference")
    out = {"n": len(preds), "bleu_1": None, "bleu_2": None, "bleu_3": None, "bleu_4": None,
           "rouge_l": None, "meteor": None, "cider": None, "meteor_note": "no items"}
    if not preds:
        return out
    hyps = [tokenize(p) for p in preds]
    rtoks = [[tokenize(r) for r in rs] for rs in ref_lists]
    for k, b in enumerate(corpus_bleu(hyps, rtoks), 1):
        out[f"bleu_{k}"] = b
    out["rouge_l"], out["cider"] = rouge_l(hyps, rtoks), cider_d(hyps, rtoks)
    if with_meteor:
        out["meteor"], out["meteor_note"] = meteor([" ".join(h) for h in hyps],
                                                   [[" ".join(r) for r in rs] for rs in rtoks])
    else:
        out["meteor_note"] = "METEOR not requested"
    return out


# ----------------------------------------------------------------------- files

def _read_jsonl(path: Path, text_keys: tuple[str, ...]) -> dict[str, tuple[int, dict, object]]:
    """id -> (line number, row, text) for a JSONL file; any bad line raises DataError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    rows: dict[str, tuple[int, dict, object]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
            raise DataError(f"{where}: field 'id' is missing or not a string/integer")
        key = str(row["id"])  # 7 and "7" join: files written by different tools disagree
        if key in rows:
            raise DataError(f"{where}: duplicate id {key!r} (first on line {rows[key][0]})")
        field = next((k for k in text_keys if k in row), None)
        text = row.get(field)
        ok = isinstance(text, str) or (isinstance(text, (int, float)) and not isinstance(text, bool))
        if field == "report" and isinstance(text, list):
            ok = bool(text) and all(isinstance(t, str) for t in text)  # several references
        if not ok:
            names = " or ".join(map(repr, text_keys))
            raise DataError(f"{where}: id {key!r}: field {names} is missing or not text")
        rows[key] = (lineno, row, text if isinstance(text, list) else str(text))
    return rows


def score_files(task: str, pred_path, ref_path, *, with_meteor: bool = True) -> dict:
    """Score a predictions JSONL ({id, prediction | answer}) against a references JSONL
    ({id, answer, answer_type?, question_type?} for vqa, {id, report} for report).

    The join on `id` is strict: an id on one side only is an error (naming the file, line
    and id), since a silently shorter test set inflates or hides results."""
    if task not in ("vqa", "report"):
        raise ValueError(f"task must be 'vqa' or 'report', got {task!r}")
    pred_path, ref_path = Path(pred_path), Path(ref_path)
    # A report prediction may be keyed like its reference ('report'); 'prediction' wins when both are there.
    preds = _read_jsonl(pred_path, ("prediction", "answer") if task == "vqa" else ("prediction", "report", "answer"))
    refs = _read_jsonl(ref_path, ("answer",) if task == "vqa" else ("report",))
    for have, have_path, other, other_path in ((refs, ref_path, preds, pred_path),
                                               (preds, pred_path, refs, ref_path)):
        missing = [k for k in have if k not in other]
        if missing:
            raise DataError(f"{have_path}: line {have[missing[0]][0]}: id {missing[0]!r} is not in "
                            f"{other_path} ({len(missing)} id(s) only in {have_path.name})")
    ids = list(refs)  # reference order
    pred_texts = [preds[k][2] for k in ids]
    if task == "report":
        return score_report(pred_texts, [refs[k][2] for k in ids], with_meteor=with_meteor)
    ref_rows = []
    for k in ids:
        lineno, row, answer = refs[k]
        try:
            _answer_type(row, answer)
        except ValueError as e:
            raise DataError(f"{ref_path}: line {lineno}: id {k!r}: field 'answer_type': {e}") from None
        ref_rows.append({**row, "answer": answer})
    return score_vqa(pred_texts, ref_rows)
