"""Procedural medical studies: simplified 2-D images with ground-truth findings.

Each study is a `Findings` record (modality, region, plane, one finding kind that is
present or absent, its side, size and count). From it we draw a grayscale image, write
VQA items in the VQA-RAD / SLAKE style (CLOSED yes/no and OPEN short answers, with
`answer_type` and `question_type`) and a short radiology-style report.

Two acquisition *styles* give a real domain gap for the demo fine-tune:
  source — 128 px, linear contrast, light noise, crisp edges, one set of question phrasings.
           Used to pretrain the tiny offline backbone (generated in memory, never committed)
           and for the held-out `source-test` split.
  target — 96 px, sigmoid contrast with a different window, heavier noise, softer edges,
           a *different* set of phrasings for the same question kinds. Forms the committed
           fine-tune `train` / `test` splits.
Answers use the same small canonical vocabulary in both styles.

Determinism: one numpy Generator per study, seeded from (GENERATOR_SEED, split seed, index),
so any study can be rebuilt alone. Pixel maths uses only + - * / sqrt and clipping (each
correctly rounded in IEEE 754, no transcendental functions whose last bit varies with the
CPU's SIMD path), and noise is added as integers after quantisation, so PNG pixels do not
depend on float evaluation order.

Image conventions: radiological — the patient's left is on the image's right; in axial
slices anterior is up. "left"/"right" in answers always mean the patient's side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import numpy as np
from PIL import Image

from ..data.sample import Sample

GENERATOR_VERSION = "1"
GENERATOR_SEED = 240416385  # arXiv 2404.16385
# Split seeds. The committed splits use 1-3; the in-memory pretraining stream uses 100+.
SPLIT_SEEDS = {"train": 1, "test": 2, "source-test": 3}
SOURCE_TRAIN_SEED = 100

Style = Literal["source", "target"]

# (modality, region) pairs and the finding kinds each can show.
STUDIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("x-ray", "chest"): ("nodule", "effusion", "cardiomegaly"),
    ("ct", "chest"): ("nodule", "effusion"),
    ("ct", "head"): ("hemorrhage", "mass"),
    ("mri", "head"): ("mass",),
    ("ct", "abdomen"): ("cyst", "splenomegaly"),
}
LATERAL = {"nodule", "effusion", "hemorrhage", "mass", "cyst"}  # have a side and a size
MAX_COUNT = {"nodule": 3, "mass": 2, "cyst": 2}  # countable kinds; the others are single
ENLARGED_ORGAN = {"cardiomegaly": "heart", "splenomegaly": "spleen"}


@dataclass(frozen=True)
class Findings:
    """Ground truth of one synthetic study."""

    modality: str  # "x-ray" | "ct" | "mri"
    region: str  # "chest" | "head" | "abdomen"
    plane: str  # "pa" (radiograph) | "axial" | "coronal"
    kind: str  # the finding kind this study is about, e.g. "nodule"
    present: bool
    side: str | None = None  # patient side: "left" | "right" (lateral kinds, when present)
    location: str | None = None  # e.g. "right lung", "left kidney" (when present)
    size: str | None = None  # "small" | "large" (lateral kinds, when present)
    count: int = 0  # number of lesions (0 when absent)

    def as_dict(self) -> dict:
        return asdict(self)


def _location(kind: str, side: str | None) -> str:
    return {
        "nodule": f"{side} lung",
        "effusion": f"{side} lung base",
        "hemorrhage": f"{side} hemisphere",
        "mass": f"{side} hemisphere",
        "cyst": f"{side} kidney",
    }.get(kind) or ENLARGED_ORGAN[kind]


def sample_findings(rng: np.random.Generator, present: bool | None = None) -> Findings:
    """Draw one study's ground truth; `present` fixes whether its finding is there."""
    pairs = list(STUDIES)
    modality, region = pairs[rng.integers(len(pairs))]
    kinds = STUDIES[(modality, region)]
    kind = kinds[rng.integers(len(kinds))]
    plane = "pa" if modality == "x-ray" else ("coronal" if region == "head" and modality == "mri" and rng.random() < 0.5 else "axial")
    draw_present = bool(rng.random() < 0.5)  # always drawn, so the stream does not shift
    present = draw_present if present is None else present
    if not present:
        return Findings(modality, region, plane, kind, False)
    side = size = None
    if kind in LATERAL:
        side = ("left", "right")[rng.integers(2)]
        size = ("small", "large")[rng.integers(2)]
    count = int(rng.integers(1, MAX_COUNT[kind] + 1)) if kind in MAX_COUNT else 1
    return Findings(modality, region, plane, kind, True, side, _location(kind, side), size, count)


# --------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class StyleSpec:
    size: int  # image side in pixels
    edge_px: float  # width of the soft edge of every shape
    window: tuple[float, float]  # density range mapped to the display range
    display: tuple[float, float]  # output range (0..1) before quantisation
    sigmoid: bool  # smoothstep contrast curve instead of linear
    noise: int  # integer noise: sum of 3 uniform draws in [-noise, noise] grey levels


STYLES: dict[str, StyleSpec] = {
    "source": StyleSpec(128, 0.8, (0.0, 1.0), (0.0, 1.0), False, 3),
    "target": StyleSpec(96, 1.6, (0.08, 0.85), (0.10, 0.95), True, 7),
}


class _Canvas:
    """A density map in [0, 1] on an N x N grid of pixel centres in unit coordinates."""

    def __init__(self, n: int, edge_px: float, rng: np.random.Generator):
        c = (np.arange(n, dtype=np.float64) + 0.5) / n
        self.X, self.Y = np.meshgrid(c, c)  # X: columns (left->right), Y: rows (top->bottom)
        self.edge = edge_px / n
        self.rng = rng
        self.d = np.zeros((n, n))

    def ellipse(self, cx: float, cy: float, a: float, b: float) -> np.ndarray:
        """Soft mask (0..1) of an axis-aligned ellipse; edge ~ `edge` wide."""
        q = np.sqrt(((self.X - cx) / a) ** 2 + ((self.Y - cy) / b) ** 2)
        return np.clip((1.0 - q) * min(a, b) / self.edge + 0.5, 0.0, 1.0)

    def paint(self, mask: np.ndarray, value: float, jitter: float = 0.03) -> None:
        v = value + self.rng.uniform(-jitter, jitter)
        self.d = self.d * (1.0 - mask) + v * mask


def _spots(rng: np.random.Generator, n: int, box: tuple[float, float, float, float], r: float) -> list[tuple[float, float]]:
    """n centres inside box (x0, y0, x1, y1), preferably 2.4 r apart (rejection sampling;
    the spacing relaxes towards 2.1 r, still visibly separate, when the box is tight)."""
    for spacing in (2.4, 2.3, 2.2, 2.1):
        for _ in range(100):  # fresh layouts: a greedy one can block itself
            pts: list[tuple[float, float]] = []
            for _ in range(30 * n):
                p = (rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3]))
                if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > (spacing * r) ** 2 for q in pts):
                    pts.append(p)
                    if len(pts) == n:
                        return pts
    raise RuntimeError(f"cannot place {n} spots of radius {r} in {box}")


def _sx(side: str | None, offset: float) -> float:
    """Image x of a structure `offset` from the midline on the patient's `side`."""
    return 0.5 + offset if side == "left" else 0.5 - offset


def _chest_xray(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    c.paint(c.ellipse(0.5 + dx, 0.55 + dy, 0.44, 0.5), 0.55)  # soft tissue
    lungs = {}
    for side in ("right", "left"):
        lx = _sx(side, 0.19) + dx
        lungs[side] = c.ellipse(lx, 0.45 + dy, 0.15, 0.29)
        c.paint(lungs[side], 0.18)
        for k in range(7):  # ribs: faint arcs across each lung
            y0 = 0.2 + 0.075 * k + dy
            arc = np.clip(1.0 - np.abs(c.Y - (y0 + 0.9 * (c.X - lx) ** 2)) / 0.012, 0.0, 1.0)
            c.d = c.d + 0.1 * arc * lungs[side]
    c.paint(c.ellipse(0.5 + dx, 0.45 + dy, 0.05, 0.32), 0.62)  # mediastinum + spine
    big = f.kind == "cardiomegaly" and f.present
    c.paint(c.ellipse(0.53 + dx, 0.63 + dy, 0.22 if big else 0.13, 0.13 if big else 0.11), 0.64)
    if f.present and f.kind == "effusion":
        level = (0.58 if f.size == "small" else 0.44) + dy
        lat = np.abs(c.X - 0.5) / 0.35  # fluid climbs laterally (meniscus)
        fluid = np.clip((c.Y - level + 0.08 * lat) / c.edge + 0.5, 0.0, 1.0) * lungs[f.side]
        c.paint(fluid, 0.55)
    if f.present and f.kind == "nodule":
        r = 0.035 if f.size == "small" else 0.065
        lx = _sx(f.side, 0.19) + dx
        for x, y in _spots(rng, f.count, (lx - 0.08, 0.27 + dy, lx + 0.08, 0.62 + dy), r):
            c.paint(c.ellipse(x, y, r, r), 0.62)


def _chest_ct(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    c.paint(c.ellipse(0.5 + dx, 0.5 + dy, 0.43, 0.31), 0.45)  # body
    lungs = {}
    for side in ("right", "left"):
        lx = _sx(side, 0.18) + dx
        lungs[side] = c.ellipse(lx, 0.5 + dy, 0.14, 0.21)
        c.paint(lungs[side], 0.05)
    if f.present and f.kind == "effusion":  # dependent fluid: posterior = bottom
        level = (0.6 if f.size == "small" else 0.47) + dy
        c.paint(np.clip((c.Y - level) / c.edge + 0.5, 0.0, 1.0) * lungs[f.side], 0.42)
    c.paint(c.ellipse(0.53 + dx, 0.43 + dy, 0.1, 0.09), 0.55)  # heart
    c.paint(c.ellipse(0.5 + dx, 0.76 + dy, 0.045, 0.045), 0.95)  # vertebra
    c.paint(c.ellipse(0.56 + dx, 0.65 + dy, 0.025, 0.025), 0.6)  # descending aorta
    c.paint(c.ellipse(0.5 + dx, 0.22 + dy, 0.04, 0.015), 0.9)  # sternum
    if f.present and f.kind == "nodule":
        r = 0.03 if f.size == "small" else 0.055
        lx = _sx(f.side, 0.18) + dx
        for x, y in _spots(rng, f.count, (lx - 0.07, 0.34 + dy, lx + 0.07, 0.66 + dy), r):
            c.paint(c.ellipse(x, y, r, r), 0.5)


def _head(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    mri = f.modality == "mri"
    coronal = f.plane == "coronal"
    cy, a, b = (0.45, 0.37, 0.38) if coronal else (0.5, 0.35, 0.43)
    if mri:
        c.paint(c.ellipse(0.5 + dx, cy + dy, a + 0.025, b + 0.025), 0.7)  # scalp fat (bright)
    c.paint(c.ellipse(0.5 + dx, cy + dy, a, b), 0.1 if mri else 1.0)  # skull
    c.paint(c.ellipse(0.5 + dx, cy + dy, a - 0.025, b - 0.025), 0.6 if mri else 0.5)  # cortex
    c.paint(c.ellipse(0.5 + dx, cy + dy, a - 0.06, b - 0.06), 0.45 if mri else 0.45)  # white matter
    csf = 0.95 if mri else 0.15
    if coronal:
        for s in ("right", "left"):
            c.paint(c.ellipse(_sx(s, 0.045) + dx, 0.38 + dy, 0.025, 0.06), csf)
        c.paint(c.ellipse(0.5 + dx, 0.8 + dy, 0.06, 0.12), 0.5)  # brainstem
    else:
        for s in ("right", "left"):
            c.paint(c.ellipse(_sx(s, 0.05) + dx, 0.48 + dy, 0.03, 0.1), csf)
    if f.present and f.kind in ("hemorrhage", "mass"):
        r = 0.04 if f.size == "small" else 0.08
        hx = _sx(f.side, 0.17) + dx
        ylo, yhi = (0.27, 0.55) if coronal else (0.3, 0.68)
        for x, y in _spots(rng, f.count, (hx - 0.05, ylo + dy, hx + 0.05, yhi + dy), r):
            if f.kind == "hemorrhage":
                c.paint(c.ellipse(x, y, r, r * 0.8), 0.82)  # hyperdense blood
            elif mri:
                c.paint(c.ellipse(x, y, r, r), 0.25)  # dark rim, bright core
                c.paint(c.ellipse(x, y, r * 0.7, r * 0.7), 0.85)
            else:
                c.paint(c.ellipse(x, y, r, r), 0.65)  # enhancing rim, hypodense core
                c.paint(c.ellipse(x, y, r * 0.65, r * 0.65), 0.3)


def _abdomen_ct(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    c.paint(c.ellipse(0.5 + dx, 0.52 + dy, 0.44, 0.34), 0.3)  # subcutaneous fat
    c.paint(c.ellipse(0.5 + dx, 0.52 + dy, 0.41, 0.31), 0.42)  # muscle / bowel
    c.paint(c.ellipse(_sx("right", 0.2) + dx, 0.44 + dy, 0.17, 0.15), 0.6)  # liver
    big = f.kind == "splenomegaly" and f.present
    c.paint(c.ellipse(_sx("left", 0.25) + dx, 0.48 + dy, 0.1 if big else 0.055, 0.15 if big else 0.08), 0.56)
    kidneys = {s: (_sx(s, 0.15) + dx, 0.64 + dy) for s in ("right", "left")}
    for kx, ky in kidneys.values():
        c.paint(c.ellipse(kx, ky, 0.06, 0.085), 0.72)
    c.paint(c.ellipse(0.5 + dx, 0.76 + dy, 0.05, 0.05), 0.95)  # vertebra
    c.paint(c.ellipse(0.53 + dx, 0.62 + dy, 0.022, 0.022), 0.7)  # aorta
    if f.present and f.kind == "cyst":
        r = 0.022 if f.size == "small" else 0.04
        kx, ky = kidneys[f.side]
        ys = [ky] if f.count == 1 else [ky - 0.045, ky + 0.045]
        for y in ys:
            c.paint(c.ellipse(kx, y, r, r), 0.2)


_DRAW = {"chest": {"x-ray": _chest_xray, "ct": _chest_ct}, "head": {"ct": _head, "mri": _head}, "abdomen": {"ct": _abdomen_ct}}


def draw(findings: Findings, style: Style, rng: np.random.Generator) -> Image.Image:
    """Render one study as an 8-bit grayscale image in the given acquisition style."""
    s = STYLES[style]
    c = _Canvas(s.size, s.edge_px, rng)
    _DRAW[findings.region][findings.modality](c, findings, rng)
    w0, w1 = s.window[0] + rng.uniform(-0.03, 0.03), s.window[1] + rng.uniform(-0.03, 0.03)
    x = np.clip((c.d - w0) / (w1 - w0), 0.0, 1.0)
    if s.sigmoid:
        x = x * x * (3.0 - 2.0 * x)  # smoothstep: polynomial, so bit-exact everywhere
    v = s.display[0] + (s.display[1] - s.display[0]) * x
    grey = np.floor(v * 255.0 + 0.5).astype(np.int32)
    noise = rng.integers(-s.noise, s.noise + 1, size=(3, s.size, s.size), dtype=np.int32).sum(axis=0)
    return Image.fromarray(np.clip(grey + noise, 0, 255).astype(np.uint8), mode="L")


# --------------------------------------------------------------------------- questions

# Phrases for a finding kind inside a question ("Is there {a nodule}?").
_KIND_PHRASE = {
    "nodule": "a nodule", "effusion": "a pleural effusion", "cardiomegaly": "cardiomegaly",
    "hemorrhage": "a hemorrhage", "mass": "a mass", "cyst": "a renal cyst", "splenomegaly": "splenomegaly",
}
_PLURAL = {"nodule": "nodules", "mass": "masses", "cyst": "cysts"}
_NOUN = {"effusion": "effusion", "cyst": "cyst"}  # "the {noun}" in follow-up questions
_MODALITY_PHRASE = {"x-ray": "an x-ray", "ct": "a CT scan", "mri": "an MRI"}

# Question templates per style and question kind. Source and target phrasings are
# disjoint for every kind; answers are the same canonical words in both.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "source": {
        "modality": ("What imaging modality is this?", "What modality was used to take this image?"),
        "organ": ("What part of the body is imaged?", "Which organ system is shown?"),
        "plane": ("What plane is this image in?", "In which plane was this image taken?"),
        "abn": ("What abnormality is seen?", "What is the main finding?"),
        "pos": ("Where is the {noun}?", "Where is the {noun} located?"),
        "size": ("What size is the {noun}?", "How big is the {noun}?"),
        "count": ("How many {plural} are there?", "How many {plural} are seen?"),
        "pres": ("Is there {kind}?", "Is {kind} present?"),
        "pos_closed": ("Is the {noun} on the {side}?", "Is the {noun} on the {side} side?"),
        "size_closed": ("Is the {noun} large?", "Is the {noun} big?"),
        "modality_closed": ("Is this {modality}?", "Was this image taken with {modality}?"),
        "organ_closed": ("Is this an image of the {region}?", "Is the {region} shown?"),
    },
    "target": {
        "modality": ("How was this image acquired?", "Which imaging technique produced this study?"),
        "organ": ("Which body region does this study cover?", "What anatomical region is depicted?"),
        "plane": ("Which imaging plane or view is used here?", "What is the orientation of this image?"),
        "abn": ("What abnormal finding does this image show?", "Name the abnormality in this study."),
        "pos": ("In which location is the {noun} found?", "Where in the body does the {noun} lie?"),
        "size": ("Describe the size of the {noun}.", "Would you call the {noun} small or large?"),
        "count": ("What is the number of {plural}?", "Count the {plural} in this study."),
        "pres": ("Does this image show {kind}?", "Can {kind} be seen in this study?"),
        "pos_closed": ("Is the {noun} located on the patient's {side} side?", "Does the {noun} lie on the {side}?"),
        "size_closed": ("Would you describe the {noun} as large?", "Is the {noun} of large size?"),
        "modality_closed": ("Was this study acquired as {modality}?", "Does this study come from {modality}?"),
        "organ_closed": ("Does this study depict the {region}?", "Is the {region} the imaged region?"),
    },
}
QUESTION_TYPES = {
    "modality": "MODALITY", "organ": "ORGAN", "plane": "PLANE", "abn": "ABN", "pos": "POS",
    "size": "SIZE", "count": "COUNT", "pres": "PRES", "pos_closed": "POS", "size_closed": "SIZE",
    "modality_closed": "MODALITY", "organ_closed": "ORGAN",
}


def vqa_items(findings: Findings, style: Style, rng: np.random.Generator) -> list[dict]:
    """Question/answer items for one study: question, answer, answer_type, question_type.

    Closed items are balanced by construction: presence is drawn 50/50, and the side,
    size, modality and region asked about in closed questions are the true one half of
    the time.
    """
    f, t = findings, TEMPLATES[style]
    noun = _NOUN.get(f.kind, f.kind)
    items: list[dict] = []

    def add(kind: str, answer: str | int, **fmt: str) -> None:
        options = t[kind]
        q = options[rng.integers(len(options))].format(noun=noun, plural=_PLURAL.get(f.kind, ""), kind=_KIND_PHRASE[f.kind], **fmt)
        closed = kind == "pres" or kind.endswith("_closed")
        items.append({"question": q, "answer": str(answer), "answer_type": "CLOSED" if closed else "OPEN",
                      "question_type": QUESTION_TYPES[kind]})

    def yes(b: bool) -> str:
        return "yes" if b else "no"

    add("modality", f.modality)
    add("organ", f.region)
    add("plane", f.plane)
    add("abn", f.kind if f.present else "none")
    add("pres", yes(f.present))
    if rng.random() < 0.5:
        asked = f.modality if rng.random() < 0.5 else [m for m in _MODALITY_PHRASE if m != f.modality][rng.integers(2)]
        add("modality_closed", yes(asked == f.modality), modality=_MODALITY_PHRASE[asked])
    else:
        regions = sorted({r for _, r in STUDIES})
        asked = f.region if rng.random() < 0.5 else [r for r in regions if r != f.region][rng.integers(2)]
        add("organ_closed", yes(asked == f.region), region=asked)
    if f.present and f.kind in LATERAL:
        add("pos", f.location)
        asked = ("left", "right")[rng.integers(2)]
        add("pos_closed", yes(asked == f.side), side=asked)
        if rng.random() < 0.5:
            add("size", f.size)
        else:
            add("size_closed", yes(f.size == "large"))
    if f.present and f.kind in MAX_COUNT:
        add("count", f.count)
    return items


# --------------------------------------------------------------------------- reports

_STUDY_TITLE = {
    ("x-ray", "chest"): "PA chest radiograph.", ("ct", "chest"): "Axial CT of the chest.",
    ("ct", "head"): "Axial CT of the head.", ("mri", "head"): "{plane} MRI of the head.",
    ("ct", "abdomen"): "Axial CT of the abdomen.",
}
_NORMAL_IMPRESSION = {"chest": "No acute cardiopulmonary abnormality.", "head": "No acute intracranial abnormality.",
                      "abdomen": "No acute abdominal abnormality."}
_COUNT_WORD = {1: "One", 2: "Two", 3: "Three"}


def _lesion_sentence(f: Findings) -> tuple[str, str]:
    """(findings sentence, impression) for a present lateral finding."""
    where = {"nodule": f"in the {f.side} lung", "mass": f"in the {f.side} cerebral hemisphere",
             "hemorrhage": f"in the {f.side} cerebral hemisphere", "cyst": f"in the {f.side} kidney"}
    adj = {"hemorrhage": "hyperdense ", "cyst": "simple "}.get(f.kind, "")
    if f.kind == "effusion":
        return f"There is a {f.size} {f.side} pleural effusion.", f"{f.size.capitalize()} {f.side} pleural effusion."
    site = {"nodule": f"{f.side} lung", "mass": f"{f.side} hemispheric", "hemorrhage": f"{f.side} hemispheric",
            "cyst": f"{f.side} renal"}[f.kind]
    if f.count == 1:
        return (f"There is a {f.size} {adj}{f.kind} {where[f.kind]}.", f"{f.size.capitalize()} {site} {f.kind}.")
    plural = _PLURAL[f.kind]
    return (f"There are {f.count} {f.size} {adj}{plural} {where[f.kind]}.",
            f"{_COUNT_WORD[f.count]} {f.size} {site} {plural}.")


def report(findings: Findings) -> str:
    """A short radiology-style report: FINDINGS (one sentence per structure) + IMPRESSION."""
    f = findings
    lines = [_STUDY_TITLE[(f.modality, f.region)].format(plane=f.plane.capitalize())]
    lesion = _lesion_sentence(f) if f.present and f.kind in LATERAL else None
    if f.region == "chest":
        lines.append(lesion[0] if lesion and f.kind == "nodule" else "The lungs are clear of nodules.")
        lines.append("The heart is enlarged." if f.present and f.kind == "cardiomegaly" else "The heart size is normal.")
        lines.append(lesion[0] if lesion and f.kind == "effusion" else "No pleural effusion.")
    elif f.region == "head":
        lines.append(lesion[0] if lesion else "No hemorrhage or mass.")
        lines.append("The ventricles are normal in size.")
    else:
        lines.append("The liver is normal.")
        lines.append("The spleen is enlarged." if f.present and f.kind == "splenomegaly" else "The spleen is normal in size.")
        lines.append(lesion[0] if lesion else "The kidneys are normal.")
    if lesion:
        impression = lesion[1]
    elif f.present:
        impression = f.kind.capitalize() + "."
    else:
        impression = _NORMAL_IMPRESSION[f.region]
    return "FINDINGS: " + " ".join(lines) + " IMPRESSION: " + impression


# --------------------------------------------------------------------------- studies

@dataclass(frozen=True)
class Study:
    findings: Findings
    image: Image.Image
    items: list[dict]
    report: str


def make_study(seed: int, index: int, style: Style) -> Study:
    """Study `index` of the stream `seed`, rebuilt alone from (GENERATOR_SEED, seed, index)."""
    rng = np.random.default_rng([GENERATOR_SEED, seed, index])
    # Presence is balanced exactly in pairs (2k, 2k+1): one of each, order drawn per pair,
    # so the closed PRES answers of every split are 50/50 and not an accident of the seed.
    flip = int(np.random.default_rng([GENERATOR_SEED, seed, index // 2, 1]).integers(2))
    f = sample_findings(rng, present=(index % 2) == flip)
    image = draw(f, style, rng)
    return Study(f, image, vqa_items(f, style, rng), report(f))


def study_samples(study: Study, id_prefix: str, image: object, style: Style) -> list[Sample]:
    """One Sample per VQA item plus one report Sample, all pointing at `image`."""
    meta = {"style": style, "findings": study.findings.as_dict()}
    out = [Sample(id=f"{id_prefix}-q{j}", image=image, answer=it["answer"], question=it["question"], task="vqa",
                  answer_type=it["answer_type"], question_type=it["question_type"], synthetic=True, meta=meta)
           for j, it in enumerate(study.items)]
    out.append(Sample(id=f"{id_prefix}-report", image=image, answer=study.report, task="report", synthetic=True, meta=meta))
    return out


def source_stream(n: int, seed: int = SOURCE_TRAIN_SEED) -> Iterator[Sample]:
    """n source-style studies for pretraining, generated in memory (never committed).

    Yields Samples whose `image` is a PIL grayscale image (shared by a study's items).
    `seed` must differ from the committed splits' seeds so pretraining never sees them.
    """
    if seed in SPLIT_SEEDS.values():
        raise ValueError(f"seed {seed} is used by a committed split ({SPLIT_SEEDS}); pick another")
    for i in range(n):
        study = make_study(seed, i, "source")
        yield from study_samples(study, f"source-{seed}-{i:05d}", study.image, "source")
