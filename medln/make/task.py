"""The bundled experiment: one source domain, two target domains, their splits and seeds.

The paper's setting in miniature (docs/experiment.md holds the definition in words and the
measurements). medln-tiny is pretrained on the SOURCE domain (generated in memory, never
committed); a fine-tune adapts it to one TARGET:

  source    source style (64 px, linear contrast), SOURCE_KINDS, every question kind
  scanner   the same findings, questions and answers; images from a "new scanner"
            (draw.STYLES["scanner"]: 48 px, inverted greyscale, smoothstep contrast, coarse noise)
  findings  source-style images of NEW_KINDS (pneumothorax, infarct, kidney stone), which the
            source never has: new visual findings and new answer words; only questions about
            the finding are asked (no modality / organ questions, which the source covers)

Every study is rebuilt alone from (GENERATOR_SEED, split seed, index); see findings.py for
the balance scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from ..data.sample import Sample
from .draw import draw
from .findings import GENERATOR_SEED, NEW_KINDS, SOURCE_KINDS, WIDE_KINDS, Findings, pair_of, sample_findings
from .questions import QUESTION_TYPES, report, vqa_items

ALL_QUESTIONS = tuple(QUESTION_TYPES)
FINDING_QUESTIONS = ("abn", "pres", "pos", "size", "count")


@dataclass(frozen=True)
class Domain:
    style: str  # draw.STYLES key
    kinds: dict[str, tuple[str, ...]]  # region -> finding kinds
    asks: tuple[str, ...]  # question kinds asked
    tests: str  # what a fine-tune on it tests, in words
    pres_pairs: float = 1.0  # share of study pairs asked the closed presence question (both or neither: 50/50 yes/no)


DOMAINS: dict[str, Domain] = {
    "source": Domain("source", SOURCE_KINDS, ALL_QUESTIONS, "what medln-tiny was pretrained on (retention)"),
    "scanner": Domain("scanner", SOURCE_KINDS, ALL_QUESTIONS,
                      "new scanner: the same findings, questions and answers in images that look different "
                      "(lower resolution, inverted greyscale, another contrast curve, coarser noise)"),
    # Presence for 40 % of the pairs only: with no modality / organ questions, yes/no items
    # would otherwise be a third of the items and the blind row's 50 % on them too much.
    "findings": Domain("source", NEW_KINDS, FINDING_QUESTIONS,
                       "new findings: pneumothorax, infarct and kidney stones, which the source never shows, "
                       "with answer words it never gave, in images of the familiar style", pres_pairs=0.4),
}
# Pretraining only (pretrain-tiny --wide): the source with more finding kinds. Not a split's
# domain, and not in the tokenizer corpus (corpus_texts), so a model built before it is unchanged.
PRETRAIN_DOMAINS: dict[str, Domain] = {
    "source-wide": Domain("source", WIDE_KINDS, ALL_QUESTIONS, "the source with pretraining-only finding kinds"),
}
TARGETS = ("scanner", "findings")
DEFAULT_TARGET = "scanner"


@dataclass(frozen=True)
class Split:
    domain: str  # DOMAINS key
    seed: int  # stream seed
    studies: int
    held_out: bool  # a share of its questions use the held-out phrasings


# File stem -> split. The committed seeds are 1-29; pretraining streams use 100+.
# Study counts are multiples of the balance block (6). The scored splits (source-test and
# each target's test) hold at most 200 questions: the whole split is the fixed scored set
# of the CLI's default (all items) and of the app's (its eval_limit, 200).
SPLITS: dict[str, Split] = {
    "source-test": Split("source", 3, 42, False),
    "scanner-train": Split("scanner", 11, 400, False),
    "scanner-validation": Split("scanner", 12, 42, True),
    "scanner-test": Split("scanner", 13, 42, True),
    "findings-train": Split("findings", 21, 402, False),
    "findings-validation": Split("findings", 22, 252, True),  # 84 until session 11 (docs/experiment.md)
    "findings-test": Split("findings", 23, 84, True),
}
SOURCE_TRAIN_SEED = 100  # the pretraining stream
TOKENIZER_SEED = 101  # extra text for the tokenizer corpus (every domain, every phrasing)
REPORT_SHARE = 0.1  # pretraining studies that also get a report item (the app's report button)


@dataclass(frozen=True)
class Study:
    findings: Findings
    image: Image.Image
    items: list[dict]
    report: str


def make_study(seed: int, index: int, domain: str, held_out: bool = False, extra: bool = False) -> Study:
    """Study `index` of the stream `seed` in `domain`, rebuilt alone from (GENERATOR_SEED, seed, index).
    `extra`: wordings from the pretraining-only EXTRA set too (medln.make.questions)."""
    d = DOMAINS[domain] if domain in DOMAINS else PRETRAIN_DOMAINS[domain]
    rng = np.random.default_rng([GENERATOR_SEED, seed, index])
    pair = pair_of(index, np.random.default_rng([GENERATOR_SEED, seed, index // 6, 2]))
    # Presence is balanced exactly in pairs (2k, 2k+1): one of each, order drawn per pair.
    pair_rng = np.random.default_rng([GENERATOR_SEED, seed, index // 2, 1])
    flip, ask_pres = int(pair_rng.integers(2)), bool(pair_rng.random() < d.pres_pairs)
    f = sample_findings(rng, pair, (index % 2) == flip, d.kinds)
    image = draw(f, d.style, rng)
    asks = d.asks if ask_pres else tuple(k for k in d.asks if k != "pres")
    # Questions from a generator of their own: a change to the drawing never changes them.
    qrng = np.random.default_rng([GENERATOR_SEED, seed, index, 5])
    return Study(f, image, vqa_items(f, qrng, kinds_asked=asks, held_out=held_out, extra=extra), report(f))


def study_samples(study: Study, id_prefix: str, image: object, domain: str, *, with_report: bool = True) -> list[Sample]:
    """One Sample per VQA item (plus a report Sample), all pointing at `image`."""
    meta = {"style": "source" if domain in PRETRAIN_DOMAINS else DOMAINS[domain].style, "target": domain, "findings": study.findings.as_dict()}
    out = [Sample(id=f"{id_prefix}-q{j}", image=image, answer=it["answer"], question=it["question"], task="vqa",
                  answer_type=it["answer_type"], question_type=it["question_type"], synthetic=True,
                  meta={**meta, "phrasing": it["phrasing"]})
           for j, it in enumerate(study.items)]
    if with_report:
        out.append(Sample(id=f"{id_prefix}-report", image=image, answer=study.report, task="report", synthetic=True,
                          meta=meta))
    return out


def source_stream(n: int, seed: int = SOURCE_TRAIN_SEED, extra: bool = False, wide: bool = False) -> Iterator[Sample]:
    """n source-domain studies for pretraining, generated in memory (never committed): their
    VQA items (seen phrasings; with `extra`, the pretraining-only EXTRA ones too) and, for
    REPORT_SHARE of them, a report item. `wide`: findings from WIDE_KINDS (source-wide).
    `seed` must differ from the committed splits' seeds so pretraining never sees them."""
    if seed in {s.seed for s in SPLITS.values()}:
        raise ValueError(f"seed {seed} is used by a committed split; pick another")
    for i in range(n):
        domain = "source-wide" if wide else "source"
        study = make_study(seed, i, domain, extra=extra)
        with_report = bool(np.random.default_rng([GENERATOR_SEED, seed, i, 3]).random() < REPORT_SHARE)
        yield from study_samples(study, f"{domain}-{seed}-{i:05d}", study.image, domain, with_report=with_report)


def corpus_texts(studies: int = 300) -> list[str]:
    """Tokenizer text from the generator alone: questions (every phrasing, held-out ones
    included: a tokenizer only spells words, it learns no answers), answers and reports of
    every domain, from a stream no split uses."""
    texts: list[str] = []
    for domain in DOMAINS:
        for i in range(studies):
            study = make_study(TOKENIZER_SEED, i, domain, held_out=True)
            texts += [t for it in study.items for t in (it["question"], it["answer"])] + [study.report]
    return texts
