"""Procedural medical studies: simplified 2-D images with ground-truth findings.

Each study is a `Findings` record (modality, region, plane, one finding kind that is
present or absent, its side, zone, size and count). From it we draw a grayscale image, write
VQA items in the VQA-RAD / SLAKE style (CLOSED yes/no and OPEN short answers, with
`answer_type` and `question_type`) and a short radiology-style report.

The task is built to need the image (version 2). Answer priors are near chance: modality
and body region are drawn uniformly (x-ray chest, CT and MRI of head and abdomen), the
finding is present in exactly half of the studies, sizes are three-way, nodule and cyst
positions four-way (side x upper/lower), and "what is the abnormality" is asked of every
abnormal study but only of about a third of the normal ones, so "none" is not a free
answer. Each study gets one closed presence question and, half of the time, one more
closed question: yes/no items, whose prior is 50 %, are about a quarter of the items.
`medln.baselines` measures what is left for a model that never looks at the image.

Two acquisition *styles* give a real domain gap for the demo fine-tune, one that survives
the processor's resize to the vision tower's input (64 px for medln-tiny):
  source - 128 px, linear contrast, fine light noise, full field of view, T2-like MRI,
           one set of question phrasings. Used to pretrain the tiny offline backbone
           (generated in memory, never committed) and for the held-out `source-test` split.
  target - 96 px, smoothstep contrast in another window, coarse (2-px block) heavy noise,
           a periodic banding texture, a 1.25x zoomed field of view (the body fills and
           leaves the frame), radiographs displayed inverted (bone dark) and T1-like MRI
           (fluid dark, fat bright), softer edges, and *different* phrasings for the same
           question kinds. Forms the committed `train` / `validation` / `test` splits.
Target phrasings come in two groups: the first two of each kind are used everywhere; the
rest are held out for the test split (`held_out=True`), which draws from all of them, so
about half of its questions are worded as no train question is.
Answers use the same small canonical vocabulary in both styles.

Determinism: one numpy Generator per study, seeded from (GENERATOR_SEED, split seed, index),
so any study can be rebuilt alone. Pixel maths uses only + - * / sqrt, floor and clipping
(each correctly rounded in IEEE 754, no transcendental functions whose last bit varies with
the CPU's SIMD path), and noise is added as integers after quantisation, so PNG pixels do
not depend on float evaluation order.

Image conventions: radiological - the patient's left is on the image's right; in axial
slices anterior is up. "left"/"right" in answers always mean the patient's side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import numpy as np
from PIL import Image

from ..data.sample import Sample

GENERATOR_VERSION = "2"
GENERATOR_SEED = 240416385  # arXiv 2404.16385
# Split seeds. The committed splits use 1-3 (validation is carved from the train stream:
# its last studies); the in-memory pretraining stream uses 100+.
SPLIT_SEEDS = {"train": 1, "validation": 1, "test": 2, "source-test": 3}
SOURCE_TRAIN_SEED = 100

Style = Literal["source", "target"]

# (modality, region) pairs, their weight and the finding kinds each can show. The weights
# make modality (x-ray : ct : mri) and region (chest : head : abdomen) uniform, so neither
# answer can be guessed from the question alone better than one time in three.
STUDIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("x-ray", "chest"): ("nodule", "effusion", "cardiomegaly"),
    ("ct", "head"): ("hemorrhage", "mass"),
    ("mri", "head"): ("mass",),
    ("ct", "abdomen"): ("cyst", "splenomegaly"),
    ("mri", "abdomen"): ("cyst", "splenomegaly"),
}
WEIGHTS = {("x-ray", "chest"): 2, ("ct", "head"): 1, ("mri", "head"): 1, ("ct", "abdomen"): 1, ("mri", "abdomen"): 1}
LATERAL = {"nodule", "effusion", "hemorrhage", "mass", "cyst"}  # have a side and a size
ZONED = {"nodule", "cyst"}  # also an upper / lower zone (lung zone, renal pole)
SIZES = ("small", "medium", "large")
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
    location: str | None = None  # e.g. "right upper lung", "left hemisphere" (when present)
    size: str | None = None  # "small" | "medium" | "large" (lateral kinds, when present)
    zone: str | None = None  # "upper" | "lower" (nodule, cyst; when present)
    count: int = 0  # number of lesions (0 when absent)

    def as_dict(self) -> dict:
        return asdict(self)


def _location(kind: str, side: str | None, zone: str | None) -> str:
    return {
        "nodule": f"{side} {zone} lung",
        "effusion": f"{side} lung base",
        "hemorrhage": f"{side} hemisphere",
        "mass": f"{side} hemisphere",
        "cyst": f"{side} kidney {zone} pole",
    }.get(kind) or ENLARGED_ORGAN[kind]


def sample_findings(rng: np.random.Generator, present: bool | None = None) -> Findings:
    """Draw one study's ground truth; `present` fixes whether its finding is there."""
    pairs = [pair for pair, w in WEIGHTS.items() for _ in range(w)]
    modality, region = pairs[rng.integers(len(pairs))]
    kinds = STUDIES[(modality, region)]
    kind = kinds[rng.integers(len(kinds))]
    plane = "pa" if modality == "x-ray" else ("coronal" if region == "head" and rng.random() < 0.5 else "axial")
    draw_present = bool(rng.random() < 0.5)  # always drawn, so the stream does not shift
    present = draw_present if present is None else present
    if not present:
        return Findings(modality, region, plane, kind, False)
    side = size = zone = None
    if kind in LATERAL:
        side = ("left", "right")[rng.integers(2)]
        size = SIZES[rng.integers(len(SIZES))]
    if kind in ZONED:
        zone = ("upper", "lower")[rng.integers(2)]
    count = int(rng.integers(1, MAX_COUNT[kind] + 1)) if kind in MAX_COUNT else 1
    return Findings(modality, region, plane, kind, True, side=side, location=_location(kind, side, zone), size=size,
                    zone=zone, count=count)


# --------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class StyleSpec:
    size: int  # image side in pixels
    edge_px: float  # width of the soft edge of every shape
    window: tuple[float, float]  # density range mapped to the display range
    display: tuple[float, float]  # output range (0..1) before quantisation
    sigmoid: bool  # smoothstep contrast curve instead of linear
    noise: int  # integer noise: sum of 3 uniform draws in [-noise, noise] grey levels ...
    noise_block: int = 1  # ... constant over noise_block x noise_block pixels (coarse grain survives a resize)
    zoom: float = 1.0  # field of view: > 1 shows the centre of the scene, magnified
    banding: float = 0.0  # amplitude (density units) of horizontal triangle-wave bands
    band_px: int = 8  # their period in pixels
    invert_xray: bool = False  # radiographs displayed inverted (bone dark), as some viewers do
    mri: str = "t2"  # MRI weighting: "t2" (fluid bright) | "t1" (fluid dark, fat bright)


STYLES: dict[str, StyleSpec] = {
    "source": StyleSpec(128, 0.8, (0.0, 1.0), (0.0, 1.0), False, 3),
    "target": StyleSpec(96, 1.6, (0.08, 0.85), (0.10, 0.95), True, 8, noise_block=3, zoom=1.25, banding=0.08,
                        band_px=9, invert_xray=True, mri="t1"),
}
RADIUS = {"small": 0.6, "medium": 0.8, "large": 1.0}  # lesion radius as a fraction of the kind's largest


class _Canvas:
    """A density map in [0, 1] on an N x N grid of pixel centres in unit coordinates
    (a `zoom` > 1 maps the grid onto the centre of the unit square)."""

    def __init__(self, n: int, edge_px: float, rng: np.random.Generator, zoom: float = 1.0, mri: str = "t2"):
        c = 0.5 + ((np.arange(n, dtype=np.float64) + 0.5) / n - 0.5) / zoom
        self.X, self.Y = np.meshgrid(c, c)  # X: columns (left->right), Y: rows (top->bottom)
        self.edge = edge_px / (n * zoom)
        self.rng = rng
        self.mri = mri
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
        level = {"small": 0.6, "medium": 0.52, "large": 0.44}[f.size] + dy
        lat = np.abs(c.X - 0.5) / 0.35  # fluid climbs laterally (meniscus)
        fluid = np.clip((c.Y - level + 0.08 * lat) / c.edge + 0.5, 0.0, 1.0) * lungs[f.side]
        c.paint(fluid, 0.55)
    if f.present and f.kind == "nodule":
        r = 0.06 * RADIUS[f.size]
        lx = _sx(f.side, 0.19) + dx
        y0, y1 = (0.24, 0.42) if f.zone == "upper" else (0.5, 0.66)  # lung zones: above / below the hila
        for x, y in _spots(rng, f.count, (lx - 0.08, y0 + dy, lx + 0.08, y1 + dy), r):
            c.paint(c.ellipse(x, y, r, r), 0.62)


def _head(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    mri = f.modality == "mri"
    t1 = mri and c.mri == "t1"
    coronal = f.plane == "coronal"
    cy, a, b = (0.45, 0.37, 0.38) if coronal else (0.5, 0.35, 0.43)
    if mri:
        c.paint(c.ellipse(0.5 + dx, cy + dy, a + 0.025, b + 0.025), 0.85 if t1 else 0.7)  # scalp fat (bright)
    c.paint(c.ellipse(0.5 + dx, cy + dy, a, b), 0.1 if mri else 1.0)  # skull
    grey, white = (0.45, 0.62) if t1 else (0.6, 0.45) if mri else (0.5, 0.45)
    c.paint(c.ellipse(0.5 + dx, cy + dy, a - 0.025, b - 0.025), grey)  # cortex
    c.paint(c.ellipse(0.5 + dx, cy + dy, a - 0.06, b - 0.06), white)  # white matter
    csf = 0.12 if t1 else 0.95 if mri else 0.15
    if coronal:
        for s in ("right", "left"):
            c.paint(c.ellipse(_sx(s, 0.045) + dx, 0.38 + dy, 0.025, 0.06), csf)
        c.paint(c.ellipse(0.5 + dx, 0.8 + dy, 0.06, 0.12), 0.5)  # brainstem
    else:
        for s in ("right", "left"):
            c.paint(c.ellipse(_sx(s, 0.05) + dx, 0.48 + dy, 0.03, 0.1), csf)
    if f.present and f.kind in ("hemorrhage", "mass"):
        r = 0.08 * RADIUS[f.size]
        hx = _sx(f.side, 0.17) + dx
        ylo, yhi = (0.27, 0.55) if coronal else (0.3, 0.68)
        for x, y in _spots(rng, f.count, (hx - 0.05, ylo + dy, hx + 0.05, yhi + dy), r):
            if f.kind == "hemorrhage":
                c.paint(c.ellipse(x, y, r, r * 0.8), 0.82)  # hyperdense blood
            elif mri:  # T2: dark rim, bright core; T1: enhancing rim, dark core
                c.paint(c.ellipse(x, y, r, r), 0.8 if t1 else 0.25)
                c.paint(c.ellipse(x, y, r * 0.7, r * 0.7), 0.15 if t1 else 0.85)
            else:
                c.paint(c.ellipse(x, y, r, r), 0.65)  # enhancing rim, hypodense core
                c.paint(c.ellipse(x, y, r * 0.65, r * 0.65), 0.3)


# Abdomen densities: CT, T2-like MRI (fluid bright), T1-like MRI (fluid dark, fat bright).
_ABDOMEN = {
    "ct": dict(fat=0.3, muscle=0.42, liver=0.6, spleen=0.56, kidney=0.72, bone=0.95, aorta=0.7, cyst=0.2),
    "t2": dict(fat=0.7, muscle=0.3, liver=0.28, spleen=0.55, kidney=0.6, bone=0.4, aorta=0.08, cyst=0.95),
    "t1": dict(fat=0.9, muscle=0.35, liver=0.6, spleen=0.45, kidney=0.5, bone=0.6, aorta=0.08, cyst=0.1),
}


def _abdomen(c: _Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    v = _ABDOMEN[c.mri if f.modality == "mri" else "ct"]
    c.paint(c.ellipse(0.5 + dx, 0.52 + dy, 0.44, 0.34), v["fat"])  # subcutaneous fat
    c.paint(c.ellipse(0.5 + dx, 0.52 + dy, 0.41, 0.31), v["muscle"])  # muscle / bowel
    c.paint(c.ellipse(_sx("right", 0.2) + dx, 0.44 + dy, 0.17, 0.15), v["liver"])
    big = f.kind == "splenomegaly" and f.present
    c.paint(c.ellipse(_sx("left", 0.25) + dx, 0.48 + dy, 0.1 if big else 0.055, 0.15 if big else 0.08), v["spleen"])
    kidneys = {s: (_sx(s, 0.15) + dx, 0.64 + dy) for s in ("right", "left")}
    for kx, ky in kidneys.values():
        c.paint(c.ellipse(kx, ky, 0.06, 0.085), v["kidney"])
    c.paint(c.ellipse(0.5 + dx, 0.76 + dy, 0.05, 0.05), v["bone"])  # vertebra
    c.paint(c.ellipse(0.53 + dx, 0.62 + dy, 0.022, 0.022), v["aorta"])
    if f.present and f.kind == "cyst":
        r = 0.04 * RADIUS[f.size]
        kx, ky = kidneys[f.side]
        y = ky - 0.04 if f.zone == "upper" else ky + 0.04  # upper / lower pole
        xs = [kx] if f.count == 1 else [kx - 0.025, kx + 0.025]
        for x in xs:
            c.paint(c.ellipse(x, y, r, r), v["cyst"])


_DRAW = {"chest": {"x-ray": _chest_xray}, "head": {"ct": _head, "mri": _head}, "abdomen": {"ct": _abdomen, "mri": _abdomen}}


def _bands(n: int, period: int, phase: int) -> np.ndarray:
    """Horizontal triangle-wave bands in [0, 1], integer arithmetic up to one division (exact)."""
    rows = (np.arange(n) + phase) % period
    return np.abs(2.0 * rows / period - 1.0)[:, None] * np.ones((1, n))


def draw(findings: Findings, style: Style, rng: np.random.Generator) -> Image.Image:
    """Render one study as an 8-bit grayscale image in the given acquisition style."""
    s = STYLES[style]
    c = _Canvas(s.size, s.edge_px, rng, s.zoom, s.mri)
    _DRAW[findings.region][findings.modality](c, findings, rng)
    if s.banding:
        c.d = c.d + s.banding * (_bands(s.size, s.band_px, int(rng.integers(s.band_px))) - 0.5)
    w0, w1 = s.window[0] + rng.uniform(-0.03, 0.03), s.window[1] + rng.uniform(-0.03, 0.03)
    x = np.clip((c.d - w0) / (w1 - w0), 0.0, 1.0)
    if s.sigmoid:
        x = x * x * (3.0 - 2.0 * x)  # smoothstep: polynomial, so bit-exact everywhere
    if s.invert_xray and findings.modality == "x-ray":
        x = 1.0 - x
    v = s.display[0] + (s.display[1] - s.display[0]) * x
    grey = np.floor(v * 255.0 + 0.5).astype(np.int32)
    b = s.noise_block
    m = -(-s.size // b)  # blocks per side
    noise = rng.integers(-s.noise, s.noise + 1, size=(3, m, m), dtype=np.int32).sum(axis=0)
    noise = np.repeat(np.repeat(noise, b, axis=0), b, axis=1)[:s.size, :s.size]
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
# disjoint for every kind; answers are the same canonical words in both. Of the target
# phrasings, the first SHARED of each kind appear in every split; the others only where
# held_out=True (the test split).
SHARED = 2
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
        "size_closed": ("Is the {noun} {size}?", "Is the {noun} {size} in size?"),
        "modality_closed": ("Is this {modality}?", "Was this image taken with {modality}?"),
        "organ_closed": ("Is this an image of the {region}?", "Is the {region} shown?"),
    },
    "target": {
        "modality": ("How was this image acquired?", "Which imaging technique produced this study?",
                     "Name the modality of this examination.", "What kind of scan or radiograph is this?"),
        "organ": ("Which body region does this study cover?", "What anatomical region is depicted?",
                  "Which part of the patient was examined?", "Name the body region in this image."),
        "plane": ("Which imaging plane or view is used here?", "What is the orientation of this image?",
                  "In what plane was this slice obtained?", "Name the plane of this section."),
        "abn": ("What abnormal finding does this image show?", "Name the abnormality in this study.",
                "Which pathology is visible here?", "What is abnormal in this examination?"),
        "pos": ("In which location is the {noun} found?", "Where in the body does the {noun} lie?",
                "Give the position of the {noun}.", "Where exactly is the {noun} seen?"),
        "size": ("Describe the size of the {noun}.", "Would you call the {noun} small, medium or large?",
                 "How large does the {noun} appear?", "Grade the size of the {noun}."),
        "count": ("What is the number of {plural}?", "Count the {plural} in this study.",
                  "How many {plural} can be counted?", "Give the count of {plural} here."),
        "pres": ("Does this image show {kind}?", "Can {kind} be seen in this study?",
                 "Is {kind} visible on this examination?", "Would you report {kind} here?"),
        "pos_closed": ("Is the {noun} located on the patient's {side} side?", "Does the {noun} lie on the {side}?",
                       "Is the {noun} in the {side} half of the body?", "Would you place the {noun} on the {side}?"),
        "size_closed": ("Would you describe the {noun} as {size}?", "Is the {noun} of {size} size?",
                        "Does the {noun} look {size}?", "Is {size} the right size for the {noun}?"),
        "modality_closed": ("Was this study acquired as {modality}?", "Does this study come from {modality}?",
                            "Is this examination {modality}?", "Was {modality} used for this image?"),
        "organ_closed": ("Does this study depict the {region}?", "Is the {region} the imaged region?",
                         "Was the {region} examined here?", "Does this image cover the {region}?"),
    },
}
QUESTION_TYPES = {
    "modality": "MODALITY", "organ": "ORGAN", "plane": "PLANE", "abn": "ABN", "pos": "POS",
    "size": "SIZE", "count": "COUNT", "pres": "PRES", "pos_closed": "POS", "size_closed": "SIZE",
    "modality_closed": "MODALITY", "organ_closed": "ORGAN",
}
ABN_WHEN_NORMAL = 0.25  # "what is the abnormality" is asked of every abnormal study, of this share of normal ones
EXTRA_CLOSED = 0.25  # share of studies with a second closed (yes/no) question besides presence


def vqa_items(findings: Findings, style: Style, rng: np.random.Generator, held_out: bool = False) -> list[dict]:
    """Question/answer items for one study: question, answer, answer_type, question_type.

    Closed items are balanced by construction: presence is drawn 50/50, and the side,
    size, modality and region asked about in closed questions are the true one half of
    the time. `held_out`: draw target phrasings from all of them (the test split), not
    only the shared ones.
    """
    f, t = findings, TEMPLATES[style]
    noun = _NOUN.get(f.kind, f.kind)
    items: list[dict] = []

    def add(kind: str, answer: str | int, **fmt: str) -> None:
        options = t[kind] if held_out or style == "source" else t[kind][:SHARED]
        q = options[rng.integers(len(options))].format(noun=noun, plural=_PLURAL.get(f.kind, ""), kind=_KIND_PHRASE[f.kind], **fmt)
        closed = kind == "pres" or kind.endswith("_closed")
        items.append({"question": q, "answer": str(answer), "answer_type": "CLOSED" if closed else "OPEN",
                      "question_type": QUESTION_TYPES[kind]})

    def yes(b: bool) -> str:
        return "yes" if b else "no"

    def other(options, true):
        return [o for o in options if o != true][rng.integers(len(options) - 1)]

    lesion = f.present and f.kind in LATERAL
    add("modality", f.modality)
    add("organ", f.region)
    if f.region == "head":  # the only region whose plane varies (axial / coronal)
        add("plane", f.plane)
    if f.present or rng.random() < ABN_WHEN_NORMAL:
        add("abn", f.kind if f.present else "none")
    add("pres", yes(f.present))
    if rng.random() < EXTRA_CLOSED:  # one more closed question, for some of the studies
        kinds = ["modality_closed", "organ_closed"] + (["pos_closed", "size_closed"] if lesion else [])
        kind = kinds[rng.integers(len(kinds))]
        true = rng.random() < 0.5
        if kind == "modality_closed":
            asked = f.modality if true else other(list(_MODALITY_PHRASE), f.modality)
            add(kind, yes(true), modality=_MODALITY_PHRASE[asked])
        elif kind == "organ_closed":
            add(kind, yes(true), region=f.region if true else other(["abdomen", "chest", "head"], f.region))
        elif kind == "pos_closed":
            add(kind, yes(true), side=f.side if true else other(["left", "right"], f.side))
        else:
            add(kind, yes(true), size=f.size if true else other(list(SIZES), f.size))
    if lesion:
        add("pos", f.location)
        add("size", f.size)
    if f.present and f.kind in MAX_COUNT:
        add("count", f.count)
    return items


# --------------------------------------------------------------------------- reports

_STUDY_TITLE = {
    ("x-ray", "chest"): "PA chest radiograph.", ("ct", "head"): "{plane} CT of the head.",
    ("mri", "head"): "{plane} MRI of the head.", ("ct", "abdomen"): "Axial CT of the abdomen.",
    ("mri", "abdomen"): "Axial MRI of the abdomen.",
}
_NORMAL_IMPRESSION = {"chest": "No acute cardiopulmonary abnormality.", "head": "No acute intracranial abnormality.",
                      "abdomen": "No acute abdominal abnormality."}
_COUNT_WORD = {1: "One", 2: "Two", 3: "Three"}


def _lesion_sentence(f: Findings) -> tuple[str, str]:
    """(findings sentence, impression) for a present lateral finding."""
    where = {"nodule": f"in the {f.side} {f.zone} lung zone", "mass": f"in the {f.side} cerebral hemisphere",
             "hemorrhage": f"in the {f.side} cerebral hemisphere", "cyst": f"in the {f.zone} pole of the {f.side} kidney"}
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


def make_study(seed: int, index: int, style: Style, held_out: bool = False) -> Study:
    """Study `index` of the stream `seed`, rebuilt alone from (GENERATOR_SEED, seed, index).
    `held_out`: its questions may use the target phrasings kept out of train (test split)."""
    rng = np.random.default_rng([GENERATOR_SEED, seed, index])
    # Presence is balanced exactly in pairs (2k, 2k+1): one of each, order drawn per pair,
    # so the closed PRES answers of every split are 50/50 and not an accident of the seed.
    flip = int(np.random.default_rng([GENERATOR_SEED, seed, index // 2, 1]).integers(2))
    f = sample_findings(rng, present=(index % 2) == flip)
    image = draw(f, style, rng)
    return Study(f, image, vqa_items(f, style, rng, held_out), report(f))


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
