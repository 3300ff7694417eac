"""Ground truth of one synthetic study: which body part, which modality, which finding.

A study shows one body region in one modality and is *about* one finding kind, present or
absent (each region has its own kinds). Three sets of kinds:

  SOURCE_KINDS  what medln-tiny is pretrained on (and the "new scanner" target asks about)
  NEW_KINDS     findings the source never has: the "new findings" target (medln.make.task)
  WIDE_KINDS    SOURCE_KINDS plus PRETRAIN_KINDS, which only a pretraining stream shows
                (pretrain-tiny --wide): a backbone that has met more finding kinds, as a real
                Med-VLM has. None is a target's kind; calcifications share one look with the
                kidney stones (small dense foci, counted) in another organ (docs/experiment.md)

Balance, so that no answer can be guessed from the question alone (the image-blind
baseline, medln.baselines, measures what is left): the (modality, region) pair follows a
shuffled block of BLOCK studies (x-ray : CT : MRI and chest : head : abdomen each 1 : 1 : 1),
presence alternates in pairs of studies (exactly half present), a region's kinds, the side,
the zone, the size and the count are drawn uniformly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

GENERATOR_VERSION = "3"
GENERATOR_SEED = 240416385  # arXiv 2404.16385

# One block of studies: chest radiographs twice, head and abdomen once per cross-sectional
# modality, so modality and region are each 1 : 1 : 1 over every block.
BLOCK: tuple[tuple[str, str], ...] = (("x-ray", "chest"), ("x-ray", "chest"), ("ct", "head"), ("mri", "head"),
                                      ("ct", "abdomen"), ("mri", "abdomen"))
PLANE = {"chest": "pa", "head": "axial", "abdomen": "axial"}

SOURCE_KINDS: dict[str, tuple[str, ...]] = {"chest": ("nodule", "effusion", "cardiomegaly"),
                                            "head": ("hemorrhage", "mass"), "abdomen": ("cyst", "splenomegaly")}
NEW_KINDS: dict[str, tuple[str, ...]] = {"chest": ("pneumothorax",), "head": ("infarct",), "abdomen": ("kidney stone",)}
PRETRAIN_KINDS: dict[str, tuple[str, ...]] = {"chest": ("consolidation",), "head": ("calcification",),
                                              "abdomen": ("hydronephrosis",)}
WIDE_KINDS = {region: SOURCE_KINDS[region] + PRETRAIN_KINDS[region] for region in SOURCE_KINDS}


@dataclass(frozen=True)
class Kind:
    """What can be asked about a finding kind."""

    side: bool = False  # left / right (patient side)
    zones: tuple[str, ...] = ()  # e.g. upper / lower (lung zone, renal pole), frontal / occipital (lobe)
    size: bool = False  # small / medium / large
    max_count: int = 1  # > 1: "how many" is asked
    where: str = ""  # location answer: {side} / {zone} are filled in; "" = no position question


KINDS: dict[str, Kind] = {
    "nodule": Kind(side=True, zones=("upper", "lower"), size=True, max_count=3, where="{side} {zone} lung"),
    "effusion": Kind(side=True, size=True, where="{side} lung base"),
    "cardiomegaly": Kind(),
    "hemorrhage": Kind(side=True, zones=("frontal", "occipital"), size=True, where="{side} {zone} lobe"),
    "mass": Kind(side=True, zones=("frontal", "occipital"), size=True, where="{side} {zone} lobe"),
    "cyst": Kind(side=True, zones=("upper", "lower"), size=True, where="{side} kidney {zone} pole"),
    "splenomegaly": Kind(),
    # pretraining only (WIDE_KINDS)
    "consolidation": Kind(side=True, zones=("upper", "lower"), size=True, where="{side} {zone} lung"),
    "calcification": Kind(side=True, zones=("frontal", "occipital"), max_count=3, where="{side} {zone} lobe"),
    "hydronephrosis": Kind(side=True, size=True, where="{side} kidney"),
    # new findings
    "pneumothorax": Kind(side=True, size=True, where="{side} lung"),
    "infarct": Kind(side=True, zones=("frontal", "occipital"), size=True, where="{side} {zone} lobe"),
    "kidney stone": Kind(side=True, zones=("upper", "lower"), max_count=3, where="{side} kidney {zone} pole"),
}
SIZES = ("small", "medium", "large")
SIDES = ("left", "right")
ENLARGED_ORGAN = {"cardiomegaly": "heart", "splenomegaly": "spleen"}


@dataclass(frozen=True)
class Findings:
    """Ground truth of one synthetic study."""

    modality: str  # "x-ray" | "ct" | "mri"
    region: str  # "chest" | "head" | "abdomen"
    plane: str  # "pa" (radiograph) | "axial"
    kind: str  # the finding kind this study is about, e.g. "nodule"
    present: bool
    side: str | None = None  # patient side: "left" | "right" (when present and the kind has one)
    zone: str | None = None  # "upper" | "lower" (nodule, cyst), "frontal" | "occipital" (head lesions)
    size: str | None = None  # "small" | "medium" | "large"
    count: int = 0  # number of lesions (0 when absent)
    location: str | None = None  # the position answer, e.g. "right upper lung"

    def as_dict(self) -> dict:
        return asdict(self)


def pair_of(index: int, rng_block: np.random.Generator) -> tuple[str, str]:
    """The (modality, region) of study `index`: position index % BLOCK in a block permuted by
    `rng_block` (a generator seeded by the block, so every study is rebuilt alone)."""
    order = rng_block.permutation(len(BLOCK))
    return BLOCK[int(order[index % len(BLOCK)])]


def sample_findings(rng: np.random.Generator, pair: tuple[str, str], present: bool,
                    kinds: dict[str, tuple[str, ...]]) -> Findings:
    """One study's ground truth: `pair` and `present` fixed by the caller's balance scheme."""
    modality, region = pair
    options = kinds[region]
    kind = options[int(rng.integers(len(options)))]
    spec = KINDS[kind]
    # Every attribute is always drawn, so the stream does not shift with presence.
    side = SIDES[int(rng.integers(2))]
    zone_draw = int(rng.integers(2))
    size = SIZES[int(rng.integers(3))]
    count = int(rng.integers(1, spec.max_count + 1))
    if not present:
        return Findings(modality, region, PLANE[region], kind, False)
    side_ = side if spec.side else None
    zone = spec.zones[zone_draw] if spec.zones else None
    where = spec.where.format(side=side, zone=zone) if spec.where else ENLARGED_ORGAN.get(kind)
    return Findings(modality, region, PLANE[region], kind, True, side=side_, zone=zone,
                    size=size if spec.size else None, count=count, location=where)
