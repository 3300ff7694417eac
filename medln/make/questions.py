"""Questions, answers and short reports for one study (VQA-RAD / SLAKE style records).

Question kinds: modality, organ (body region), abn (what abnormality), pres (is there
..., the one CLOSED yes/no kind), pos, size and count. Answers are short canonical words
("x-ray", "left upper lung", "2"), the same vocabulary in every style.

Phrasings come in three sets per kind:
  SEEN      used by the pretraining stream and every train split: a model may know them;
  EXTRA     pretraining only (the second, paraphrase stage of medln-tiny): the language
            variety a real decoder brings from its own pretraining; never in a committed split;
  HELD_OUT  never in any train split nor in pretraining; a share HELD_OUT_SHARE of the
            validation and test questions use them, and each record says which set its
            wording comes from (`phrasing`: "seen" | "held-out"), so scores split by it.
"""

from __future__ import annotations

import numpy as np

from .findings import KINDS, Findings

# Phrases for a finding kind inside a question ("Is there {a nodule}?").
KIND_PHRASE = {
    "nodule": "a nodule", "effusion": "a pleural effusion", "cardiomegaly": "cardiomegaly",
    "hemorrhage": "a hemorrhage", "mass": "a mass", "cyst": "a renal cyst", "splenomegaly": "splenomegaly",
    "pneumothorax": "a pneumothorax", "infarct": "an infarct", "kidney stone": "a kidney stone",
    "consolidation": "a consolidation", "calcification": "a calcification", "hydronephrosis": "hydronephrosis",
}
PLURAL = {"nodule": "nodules", "kidney stone": "kidney stones", "calcification": "calcifications"}
NOUN = {"effusion": "effusion", "cyst": "cyst", "kidney stone": "stone"}  # "the {noun}" in follow-up questions

SEEN: dict[str, tuple[str, ...]] = {
    "modality": ("What imaging modality is this?", "What modality was used to take this image?",
                 "How was this image acquired?"),
    "organ": ("What part of the body is imaged?", "Which body region is shown?", "What anatomical region is depicted?"),
    "abn": ("What abnormality is seen?", "What is the main finding?", "Which pathology is visible here?"),
    "pres": ("Is there {kind}?", "Is {kind} present?", "Does this image show {kind}?"),
    "pos": ("Where is the {noun}?", "Where is the {noun} located?", "In which location is the {noun} found?"),
    "size": ("What size is the {noun}?", "How big is the {noun}?", "Describe the size of the {noun}."),
    "count": ("How many {plural} are there?", "How many {plural} are seen?", "What is the number of {plural}?"),
}
HELD_OUT: dict[str, tuple[str, ...]] = {
    "modality": ("Name the modality of this examination.", "What kind of scan or radiograph is this?"),
    "organ": ("Which part of the patient was examined?", "Name the body region in this image."),
    "abn": ("Name the abnormality in this study.", "What is abnormal in this examination?"),
    "pres": ("Can {kind} be seen in this study?", "Would you report {kind} here?"),
    "pos": ("Give the position of the {noun}.", "Where exactly is the {noun} seen?"),
    "size": ("Grade the size of the {noun}.", "How large does the {noun} appear?"),
    "count": ("Count the {plural} in this study.", "Give the count of {plural} here."),
}
# Written to vary the verb, the order and the register, not to echo HELD_OUT: no extra wording
# is a held-out one, and none starts with a held-out wording's first two words (a test checks).
EXTRA: dict[str, tuple[str, ...]] = {
    "modality": ("Which imaging technique produced this picture?", "What type of imaging is shown?",
                 "Which modality is this study?", "Tell me the imaging modality.", "What was this study acquired with?",
                 "Is this picture a radiograph or a scan, and which kind?"),
    "organ": ("Which organ system is shown here?", "What body part does this study cover?",
              "Which area of the body is in this picture?", "What region of the body was scanned?",
              "Tell me the body part shown.", "What anatomy does this image cover?"),
    "abn": ("What is wrong in this image?", "What finding does this study show?", "Describe the abnormality.",
            "What pathology is present?", "Which lesion or disease is shown?", "Tell me the main abnormality."),
    "pres": ("Is {kind} visible?", "Do you see {kind}?", "Is {kind} shown in this picture?",
             "Does the patient have {kind}?", "Is there any sign of {kind}?", "Any evidence of {kind} on this image?"),
    "pos": ("What is the location of the {noun}?", "Where can the {noun} be found?", "Tell me where the {noun} is.",
            "Where does the {noun} lie?", "In what part of the organ is the {noun}?", "Locate the {noun}."),
    "size": ("What is the size of the {noun}?", "Tell me the size of the {noun}.", "How big does the {noun} look?",
             "Which size category fits the {noun}?", "Estimate the {noun} size.", "Is the {noun} big or not?"),
    "count": ("How many {plural} can you see?", "What number of {plural} is present?",
              "Tell me how many {plural} there are.", "How many {plural} does this image show?",
              "Number of {plural}?", "How many {plural} are visible?"),
}
QUESTION_TYPES = {"modality": "MODALITY", "organ": "ORGAN", "abn": "ABN", "pres": "PRES", "pos": "POS",
                  "size": "SIZE", "count": "COUNT"}
HELD_OUT_SHARE = 0.2  # of the questions of splits built with held_out=True (validation, test)
# "What is the abnormality" is asked of every abnormal study and of this share of normal ones:
# "none" is then about as frequent as each finding kind, so it is no free answer.
ABN_WHEN_NORMAL = 1 / 3


def vqa_items(f: Findings, rng: np.random.Generator, *, kinds_asked: tuple[str, ...], held_out: bool = False,
              extra: bool = False) -> list[dict]:
    """Question/answer records for one study: question, answer, answer_type, question_type,
    phrasing. `kinds_asked`: which question kinds are asked of this study (e.g. no modality
    or organ questions in the new-findings target). `held_out`: a share of the questions use
    the held-out phrasings. `extra` (pretraining only): wordings drawn from SEEN + EXTRA."""
    noun = NOUN.get(f.kind, f.kind)
    spec = KINDS[f.kind]
    items: list[dict] = []

    def add(kind: str, answer: str | int) -> None:
        unseen = held_out and rng.random() < HELD_OUT_SHARE  # always drawn: the stream does not shift
        pick = rng.integers(1 << 30)
        if kind not in kinds_asked:
            return
        options = HELD_OUT[kind] if unseen else (SEEN[kind] + EXTRA[kind] if extra else SEEN[kind])
        i = int(pick) % len(options)
        q = options[i].format(noun=noun, plural=PLURAL.get(f.kind, ""), kind=KIND_PHRASE[f.kind])
        phrasing = "held-out" if unseen else "extra" if i >= len(SEEN[kind]) else "seen"
        items.append({"question": q, "answer": str(answer), "answer_type": "CLOSED" if kind == "pres" else "OPEN",
                      "question_type": QUESTION_TYPES[kind], "phrasing": phrasing})

    add("modality", f.modality)
    add("organ", f.region)
    ask_abn = f.present or rng.random() < ABN_WHEN_NORMAL
    if ask_abn:
        add("abn", f.kind if f.present else "none")
    add("pres", "yes" if f.present else "no")
    if f.present and spec.where:
        add("pos", f.location)
    if f.present and spec.size:
        add("size", f.size)
    if f.present and spec.max_count > 1:
        add("count", f.count)
    return items


# --------------------------------------------------------------------------- reports

_TITLE = {("x-ray", "chest"): "PA chest radiograph.", ("ct", "head"): "Axial CT of the head.",
          ("mri", "head"): "Axial MRI of the head.", ("ct", "abdomen"): "Axial CT of the abdomen.",
          ("mri", "abdomen"): "Axial MRI of the abdomen."}
_NORMAL = {"chest": "No acute cardiopulmonary abnormality.", "head": "No acute intracranial abnormality.",
           "abdomen": "No acute abdominal abnormality."}
_COUNT_WORD = {1: "one", 2: "two", 3: "three"}


def finding_sentence(f: Findings) -> str:
    """One sentence for the finding: "Two small nodules in the right upper lung."."""
    if not f.present:
        return _NORMAL[f.region]
    if f.kind in ("cardiomegaly", "splenomegaly"):
        return f"{f.kind.capitalize()}."
    size = f"{f.size} " if f.size else ""
    if f.count > 1:
        words = f"{_COUNT_WORD[f.count]} {size}{PLURAL[f.kind]}"
    else:
        words = f"{'an' if (size or f.kind)[0] in 'aeiou' else 'a'} {size}{f.kind}"
    return f"{words[0].upper()}{words[1:]} in the {f.location}."


def report(f: Findings) -> str:
    """A short radiology-style report: the study title and the finding."""
    return f"{_TITLE[(f.modality, f.region)]} {finding_sentence(f)}"
