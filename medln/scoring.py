"""Scoring what a model wrote: report metrics with METEOR, and prediction files.

METEOR runs the reference implementation (pycocoevalcap's meteor-1.5.jar, a Java process);
`score_files` reads a predictions JSONL and a references JSONL and joins them on `id`. The
metrics themselves are pure functions in medln.metrics.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
import subprocess
import threading
from pathlib import Path

from .data.sample import DataError
from .metrics import answer_type_of, report_scores, score_vqa, tokenize


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
    with _JVM.lock:  # one JVM per process, one caller at a time (the protocol is a dialogue)
        try:
            proc = _JVM.running(java, jar)
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
            _JVM.stop()  # in an unknown state: the next call starts a fresh one
            return None, f"METEOR failed: the Java process gave no score ({e})"
        finally:
            watchdog.cancel()


class _JVM:
    """The METEOR Java process, started once and kept for the process's later calls, as
    pycocoevalcap's Meteor keeps its own: the JVM's start (~7 s quiet, ~20 s under load) is
    most of scoring a split's reports. Each call is a full SCORE... EVAL exchange, so calls
    share nothing but the process; it is stopped at exit."""

    lock = threading.Lock()
    proc: subprocess.Popen | None = None

    @classmethod
    def running(cls, java: str, jar: Path) -> subprocess.Popen:
        if cls.proc is None or cls.proc.poll() is not None:
            cmd = [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
            cls.proc = subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
            if not getattr(cls, "_registered", False):
                atexit.register(cls.stop)
                cls._registered = True
        return cls.proc

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None:
            cls.proc.kill()
            cls.proc.wait()
            cls.proc = None


def score_report(preds: list[str], refs: list[str | list[str]], *, with_meteor: bool = True) -> dict:
    """BLEU-1..4, ROUGE-L, METEOR and CIDEr-D of generated reports, as COCO's scorer.

    A ref is a report or a list of reports. METEOR starts a JVM (~7 s); it is None, with
    `meteor_note` saying why, when skipped or unavailable (the JVM is then kept for later calls). An empty corpus gives None."""
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
    out.update(report_scores(hyps, rtoks))
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
            answer_type_of(row, answer)
        except ValueError as e:
            raise DataError(f"{ref_path}: line {lineno}: id {k!r}: field 'answer_type': {e}") from None
        ref_rows.append({**row, "answer": answer})
    return score_vqa(pred_texts, ref_rows)
