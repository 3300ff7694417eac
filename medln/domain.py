"""Is an image of the kind the bundled demo model was trained on? A measured check.

`medln-tiny` (1.6 M parameters) has only ever seen MedLN's synthetic phantoms
(medln.make.task): on a real radiograph or CT it answers fluently and wrongly ("axial MRI
of the head, large right mass"). So when the backbone is the demo model, every answer
surface runs `check_image` and, when the image is not a phantom, says so with the reason.

How it decides. A few cheap, explainable statistics of the image (size, colour, grey-level
histogram, texture and background, all on a 96 px greyscale copy: the model sees a small
copy too) are compared with the same statistics of the synthetic images the model was
trained and tested on. Each acquisition style (source: what the model was pretrained on;
target: the fine-tune set) gets its own range per statistic, the observed min..max widened
by `MARGIN` of its width on both sides; an image is "of the phantom kind" when every
statistic lies inside the ranges of at least one style. The ranges are computed at run time
from the committed sample (assets/sample: its synthetic images, grouped by their `style`),
never typed in here, so a rebuilt generator recalibrates the check by itself.

Measured (tests/test_domain.py; /tmp scripts in the issue-13 note): calibrated on the
committed splits, 0 of 400 fresh studies from the generator (200 per style, a stream seed
no split uses) are flagged and all 11 bundled real images are. It is a screen, not a
proof: made grey and resized to 128 px (the source phantoms' size), 8 of the 11 real images
are still flagged (9 with the rebuilt sample v2). MARGIN 0.5 was chosen on fresh phantoms (0.25 flagged 1 in 150 of the
rebuilt sample's source style).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

DEMO_BACKBONES = ("medln-tiny",)  # registry names of models that know only the synthetic phantoms
REAL_BACKBONES_HINT = ("llava-med-v1.5-7b", "medgemma-4b", "qwen2-vl-2b")  # pointed to in the warning
GRID = 96  # statistics are taken on a GRID x GRID greyscale copy
MARGIN = 0.5  # each range widened by this fraction of its width on both sides (0.25 flagged 1 in 150 fresh phantoms)
SIZE_TOLERANCE = 1.25  # the short side may be this factor smaller or larger than the phantoms'
CHROMA_TOLERANCE = 3.0  # mean channel spread (0-255) still counted as greyscale (JPEG colour noise)

# name -> (plain words for the reason, format of the value)
FEATURES: dict[str, tuple[str, str]] = {
    "short_side": ("image size (short side, px)", "{:.0f}"),
    "aspect": ("width / height", "{:.2f}"),
    "chroma": ("colour (mean channel spread, 0 = greyscale)", "{:.1f}"),
    "mean": ("mean grey level (0-255)", "{:.0f}"),
    "std": ("contrast (grey-level spread)", "{:.0f}"),
    "entropy": ("grey-level histogram entropy (bits)", "{:.2f}"),
    "dark": ("share of near-black pixels", "{:.2f}"),
    "bright": ("share of near-white pixels", "{:.3f}"),
    "peaks": ("share of pixels in the 8 commonest grey levels", "{:.2f}"),
    "texture": ("fine texture / noise (mean |Laplacian|)", "{:.1f}"),
    "body_noise": ("noise inside the body (median |Laplacian| on the brighter half)", "{:.1f}"),
    "edges": ("edge strength (mean |gradient|)", "{:.1f}"),
    "border": ("background grey level at the border", "{:.0f}"),
}


def image_features(image) -> dict[str, float]:
    """The statistics of one image (a PIL image, any mode or size)."""
    from PIL import Image

    w, h = image.size
    rgb = np.asarray(image.convert("RGB"))  # uint8 (max >= min: no wrap): a 64-Mpixel upload as float32 is 768 MB
    g = np.asarray(image.convert("L").resize((GRID, GRID), Image.BILINEAR), dtype=np.float32)
    hist = np.bincount(g.astype(np.uint8).ravel(), minlength=256) / g.size
    p = hist[hist > 0]
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    body = g[1:-1, 1:-1] > 0.5 * g.mean()  # the object, not the background
    edge = np.concatenate([g[:4].ravel(), g[-4:].ravel(), g[:, :4].ravel(), g[:, -4:].ravel()])
    return {
        "short_side": float(min(w, h)),
        "aspect": w / h,
        "chroma": float(np.mean(rgb.max(axis=2) - rgb.min(axis=2))),
        "mean": float(g.mean()),
        "std": float(g.std()),
        "entropy": float(-(p * np.log2(p)).sum()),
        "dark": float((g < 16).mean()),
        "bright": float((g > 240).mean()),
        "peaks": float(np.sort(hist)[-8:].sum()),
        "texture": float(np.abs(lap).mean()),
        "body_noise": float(np.median(np.abs(lap[body]))) if body.any() else 0.0,
        "edges": float((np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()) / 2),
        "border": float(edge.mean()),
    }


@dataclass
class Calibration:
    """Allowed range per statistic for each style of the calibration images."""

    ranges: dict[str, dict[str, tuple[float, float]]]  # style -> feature -> (lo, hi)
    n: dict[str, int]  # style -> number of calibration images
    source: str = ""


def _widen(name: str, lo: float, hi: float, margin: float) -> tuple[float, float]:
    if name == "short_side":
        return lo / SIZE_TOLERANCE, hi * SIZE_TOLERANCE
    if name == "aspect":  # the phantoms are square: allow a slight crop, not a different shape
        return lo / 1.1, hi * 1.1
    if name == "chroma":
        return 0.0, max(hi, CHROMA_TOLERANCE)
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def calibrate(images_by_style: dict[str, list], *, margin: float = MARGIN, source: str = "") -> Calibration:
    """Ranges from example images of each style ({style: [PIL images]})."""
    ranges, n = {}, {}
    for style, images in images_by_style.items():
        feats = [image_features(im) for im in images]
        if not feats:
            continue
        ranges[style] = {k: _widen(k, min(f[k] for f in feats), max(f[k] for f in feats), margin) for k in FEATURES}
        n[style] = len(feats)
    if not ranges:
        raise ValueError("calibrate: no images given")
    return Calibration(ranges, n, source)


def sample_images(root: Path, splits: tuple[str, ...] | None = None) -> dict[str, list]:
    """The synthetic images of the sample folder's splits (file stems; None: every JSONL
    file), opened, grouped by style (one per image file)."""
    import json

    from PIL import Image

    seen: set[str] = set()
    out: dict[str, list] = {}
    for split in splits if splits is not None else sorted(p.stem for p in root.glob("*.jsonl")):
        path = root / f"{split}.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else {}
            if not rec.get("synthetic") or rec.get("image") in seen:
                continue
            seen.add(rec["image"])
            with Image.open(root / rec["image"]) as im:
                out.setdefault(rec.get("style") or split, []).append(im.copy())
    return out


@lru_cache(maxsize=1)
def bundled_calibration() -> Calibration:
    """Calibrated on the committed sample's synthetic images (about 0.5 s, once per process)."""
    from .data.bundled import ASSETS

    return calibrate(sample_images(ASSETS), source=str(ASSETS))


@dataclass
class DomainCheck:
    in_domain: bool
    style: str  # the closest calibration style
    outside: list[str] = field(default_factory=list)  # reasons, one per statistic out of range
    features: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The (at most three) statistics furthest outside the phantoms' ranges."""
        more = f"; {len(self.outside) - 3} more" if len(self.outside) > 3 else ""
        return "; ".join(self.outside[:3]) + more


def check_image(image, calibration: Calibration | None = None) -> DomainCheck:
    """Compare one image with every style's ranges; report the closest style's misses,
    furthest out first (distance in range widths)."""
    cal = calibration or bundled_calibration()
    feats = image_features(image)
    best: tuple[float, str, list[str]] | None = None
    for style, ranges in cal.ranges.items():
        misses = []
        for name, (lo, hi) in ranges.items():
            v = feats[name]
            if not lo <= v <= hi:
                words, fmt = FEATURES[name]
                far = (lo - v if v < lo else v - hi) / max(hi - lo, 1e-9)
                misses.append((far, f"{words} {fmt.format(v)}, phantoms {fmt.format(max(lo, 0))}–{fmt.format(hi)}"))
        score = len(misses) + sum(min(f, 1.0) for f, _ in misses) / (len(misses) + 1)
        if best is None or score < best[0]:
            best = (score, style, [m for _, m in sorted(misses, reverse=True)])
    assert best is not None
    return DomainCheck(not best[2], best[1], best[2], feats)


def is_demo_backbone(backbone: str | None) -> bool:
    """The bundled demo model, by registry name, by its folder in assets/, or merged with an
    adapter (`medln merge`: the folder's medln-merged.json names the model it came from)."""
    if not backbone:
        return False
    if backbone in DEMO_BACKBONES:
        return True
    import json

    from . import ASSETS
    from .merge import MERGED_JSON

    try:
        path = Path(backbone).resolve()
        if any(path == (ASSETS / name).resolve() for name in DEMO_BACKBONES):
            return True
        merged = path / MERGED_JSON
        return merged.is_file() and is_demo_backbone(json.loads(merged.read_text(encoding="utf-8")).get("source"))
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
        return False


def warning(check: DomainCheck, backbone: str = DEMO_BACKBONES[0]) -> str:
    """One plain sentence for an answer surface (empty when the image is of the phantom kind)."""
    if check.in_domain:
        return ""
    return (f"This image is not one of the synthetic phantoms that the bundled demo model `{backbone}` was "
            f"trained on, so its answers here are guesses, not readings (measured: {check.reason}). For real "
            f"images choose a real backbone, e.g. {', '.join(REAL_BACKBONES_HINT)}.")
