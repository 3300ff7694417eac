"""Drawing one study: a simplified 2-D phantom, then an acquisition style on top.

Anatomy is painted as densities in [0, 1] on a grid of pixel centres in unit coordinates
(radiological convention: the patient's left is on the image's right; axial slices have
anterior up). A *style* turns densities into 8-bit grey levels: image size, contrast
curve, display range, noise and whether the greyscale is inverted.

  source   64 px, linear contrast, fine light noise (what medln-tiny is pretrained on)
  scanner  48 px (lower resolution: the processor scales it up to 64), greyscale stored
           inverted (a MONOCHROME1 file read as MONOCHROME2: bright bone shows dark), a
           smoothstep contrast curve in a narrower window, coarse (2 px) heavier noise.
           The same anatomy and findings: only the look changes (the "new scanner" target).

Determinism: pixel maths uses only + - * / sqrt, floor and clipping (each correctly
rounded in IEEE 754; no transcendental function whose last bit varies with the CPU's SIMD
path), and noise is added as integers after quantisation, so PNG pixels are the same on
every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .findings import KINDS, Findings


@dataclass(frozen=True)
class StyleSpec:
    size: int  # image side in pixels
    edge_px: float  # width of the soft edge of every shape
    window: tuple[float, float]  # density range mapped to the display range
    display: tuple[float, float]  # output range (0..1) before quantisation
    smoothstep: bool  # smoothstep contrast curve instead of linear
    noise: int  # integer noise: sum of 3 uniform draws in [-noise, noise] grey levels ...
    noise_block: int = 1  # ... constant over noise_block x noise_block pixels
    invert: bool = False  # greyscale inverted after the contrast curve


STYLES: dict[str, StyleSpec] = {
    "source": StyleSpec(64, 0.7, (0.0, 1.0), (0.0, 1.0), False, 3),
    "scanner": StyleSpec(48, 1.0, (0.1, 0.8), (0.08, 0.92), True, 7, noise_block=2, invert=True),
}
RADIUS = {"small": 0.5, "medium": 0.75, "large": 1.0}  # lesion radius as a fraction of the kind's largest
STONE_RADIUS = 0.02  # of a kidney stone: 2.6 px wide at 64 px (docs/experiment.md, "Session 12")


class Canvas:
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


def spots(rng: np.random.Generator, n: int, box: tuple[float, float, float, float], r: float) -> list[tuple[float, float]]:
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


def sx(side: str | None, offset: float) -> float:
    """Image x of a structure `offset` from the midline on the patient's `side`."""
    return 0.5 + offset if side == "left" else 0.5 - offset


def _on(f: Findings, kind: str) -> bool:
    return f.present and f.kind == kind


def chest_xray(c: Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    c.paint(c.ellipse(0.5 + dx, 0.55 + dy, 0.45, 0.5), 0.55)  # soft tissue
    lungs = {}
    for side in ("right", "left"):
        lx = sx(side, 0.2) + dx
        lungs[side] = c.ellipse(lx, 0.45 + dy, 0.16, 0.3)
        c.paint(lungs[side], 0.2)
        if _on(f, "pneumothorax") and side == f.side:
            # Air between the chest wall and the collapsed lung: black, no lung markings,
            # behind a thin bright pleural line. Its width grows with the size.
            frac = {"small": 0.3, "medium": 0.5, "large": 0.7}[f.size]
            edge = lx + (0.16 - 0.32 * frac) * (1 if side == "left" else -1)
            beyond = (c.X - edge) * (1 if side == "left" else -1)
            air = np.clip(beyond / c.edge + 0.5, 0.0, 1.0) * lungs[side]
            line = np.clip(1.0 - np.abs(beyond) / (1.2 * c.edge), 0.0, 1.0) * lungs[side]
            for k in range(6):  # ribs only where the lung is still expanded
                y0 = 0.22 + 0.08 * k + dy
                arc = np.clip(1.0 - np.abs(c.Y - (y0 + 0.9 * (c.X - lx) ** 2)) / 0.014, 0.0, 1.0)
                c.d = c.d + 0.1 * arc * lungs[side] * (1.0 - air)
            c.paint(air, 0.02, jitter=0.01)
            c.paint(line, 0.5)
            continue
        for k in range(6):  # ribs: faint arcs across each lung
            y0 = 0.22 + 0.08 * k + dy
            arc = np.clip(1.0 - np.abs(c.Y - (y0 + 0.9 * (c.X - lx) ** 2)) / 0.014, 0.0, 1.0)
            c.d = c.d + 0.1 * arc * lungs[side]
    c.paint(c.ellipse(0.5 + dx, 0.45 + dy, 0.05, 0.32), 0.65)  # mediastinum + spine
    big = _on(f, "cardiomegaly")
    c.paint(c.ellipse(0.53 + dx, 0.64 + dy, 0.23 if big else 0.13, 0.14 if big else 0.11), 0.66)
    if _on(f, "effusion"):
        level = {"small": 0.6, "medium": 0.5, "large": 0.4}[f.size] + dy
        lat = np.abs(c.X - 0.5) / 0.35  # fluid climbs laterally (meniscus)
        fluid = np.clip((c.Y - level + 0.08 * lat) / c.edge + 0.5, 0.0, 1.0) * lungs[f.side]
        c.paint(fluid, 0.58)
    if _on(f, "consolidation"):
        # Airspace filling a lung zone: a hazy patch, softer and larger than a nodule, cut by the lung edge.
        r = 0.13 * RADIUS[f.size]
        lx = sx(f.side, 0.2) + dx
        cy = (0.33 if f.zone == "upper" else 0.58) + dy + rng.uniform(-0.02, 0.02)
        patch = c.ellipse(lx + rng.uniform(-0.03, 0.03), cy, r, r * 0.8) * lungs[f.side]
        c.paint(patch, 0.45)
    if _on(f, "nodule"):
        r = 0.075 * RADIUS[f.size]
        lx = sx(f.side, 0.2) + dx
        y0, y1 = (0.22, 0.42) if f.zone == "upper" else (0.48, 0.68)  # lung zones: above / below the hila
        for x, y in spots(rng, f.count, (lx - 0.08, y0 + dy, lx + 0.08, y1 + dy), r):
            c.paint(c.ellipse(x, y, r, r), 0.7)


# Head densities: CT; MRI is T2-like (fluid bright).
_HEAD = {"ct": dict(scalp=None, skull=1.0, grey=0.5, white=0.44, csf=0.12, blood=0.85, rim=0.68, core=0.28, infarct=0.26,
                    calcium=1.0),
         "mri": dict(scalp=0.72, skull=0.08, grey=0.6, white=0.44, csf=0.95, blood=0.15, rim=0.22, core=0.88, infarct=0.82,
                     calcium=0.05)}


def head(c: Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    v = _HEAD[f.modality]
    cy, a, b = 0.5 + dy, 0.36, 0.44
    if v["scalp"] is not None:
        c.paint(c.ellipse(0.5 + dx, cy, a + 0.03, b + 0.03), v["scalp"])
    c.paint(c.ellipse(0.5 + dx, cy, a, b), v["skull"])
    brain = c.ellipse(0.5 + dx, cy, a - 0.03, b - 0.03)
    c.paint(brain, v["grey"])
    c.paint(c.ellipse(0.5 + dx, cy, a - 0.07, b - 0.07), v["white"])
    for s in ("right", "left"):
        c.paint(c.ellipse(sx(s, 0.055) + dx, 0.48 + dy, 0.035, 0.11), v["csf"])
    if _on(f, "infarct"):
        # A peripheral wedge: the brain inside a disc centred on the skull at the side.
        r = {"small": 0.13, "medium": 0.19, "large": 0.25}[f.size]
        wy = cy + (-0.22 if f.zone == "frontal" else 0.22) + rng.uniform(-0.04, 0.04)  # anterior is up
        wedge = c.ellipse(sx(f.side, a - 0.04) + dx, wy, r, r * 1.2) * brain
        c.paint(wedge, v["infarct"])
    if _on(f, "calcification"):  # tiny dense foci (bright on CT, signal voids on MRI), counted
        hx, hy = sx(f.side, 0.18) + dx, cy - 0.17 if f.zone == "frontal" else cy + 0.17
        for x, y in spots(rng, f.count, (hx - 0.07, hy - 0.06, hx + 0.07, hy + 0.06), 0.022):
            c.paint(c.ellipse(x, y, 0.022, 0.022), v["calcium"], jitter=0.0)
    if _on(f, "hemorrhage") or _on(f, "mass"):
        r = 0.11 * RADIUS[f.size]
        hx = sx(f.side, 0.18) + dx
        hy = cy - 0.17 if f.zone == "frontal" else cy + 0.17  # anterior is up
        x, y = spots(rng, 1, (hx - 0.04, hy - 0.05, hx + 0.04, hy + 0.05), r)[0]
        if f.kind == "hemorrhage":
            c.paint(c.ellipse(x, y, r, r * 0.8), v["blood"])
        else:  # ring: enhancing rim, necrotic core
            c.paint(c.ellipse(x, y, r, r), v["rim"])
            c.paint(c.ellipse(x, y, r * 0.6, r * 0.6), v["core"])


# Abdomen densities: CT and T2-like MRI (fluid bright, stones dark signal voids).
_ABDOMEN = {
    "ct": dict(fat=0.3, muscle=0.42, liver=0.6, spleen=0.56, kidney=0.72, bone=0.95, aorta=0.7, cyst=0.18, stone=1.0),
    "mri": dict(fat=0.7, muscle=0.3, liver=0.28, spleen=0.55, kidney=0.6, bone=0.4, aorta=0.08, cyst=0.95, stone=0.0),
}


def abdomen(c: Canvas, f: Findings, rng: np.random.Generator) -> None:
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    v = _ABDOMEN[f.modality]
    c.paint(c.ellipse(0.5 + dx, 0.5 + dy, 0.46, 0.36), v["fat"])  # subcutaneous fat
    c.paint(c.ellipse(0.5 + dx, 0.5 + dy, 0.42, 0.32), v["muscle"])  # muscle / bowel
    c.paint(c.ellipse(sx("right", 0.2) + dx, 0.4 + dy, 0.17, 0.14), v["liver"])
    big = _on(f, "splenomegaly")
    c.paint(c.ellipse(sx("left", 0.25) + dx, 0.44 + dy, 0.11 if big else 0.055, 0.16 if big else 0.08), v["spleen"])
    kidneys = {s: (sx(s, 0.18) + dx, 0.6 + dy) for s in ("right", "left")}
    for kx, ky in kidneys.values():
        c.paint(c.ellipse(kx, ky, 0.09, 0.13), v["kidney"])
    c.paint(c.ellipse(0.5 + dx, 0.74 + dy, 0.05, 0.05), v["bone"])  # vertebra
    c.paint(c.ellipse(0.53 + dx, 0.6 + dy, 0.022, 0.022), v["aorta"])
    if _on(f, "cyst"):
        r = 0.065 * RADIUS[f.size]
        kx, ky = kidneys[f.side]
        c.paint(c.ellipse(kx, ky - 0.065 if f.zone == "upper" else ky + 0.065, r, r), v["cyst"])
    if _on(f, "hydronephrosis"):  # a dilated collecting system: fluid along the kidney's long axis, centred
        kx, ky = kidneys[f.side]
        s_ = RADIUS[f.size]
        c.paint(c.ellipse(kx, ky, 0.035 * s_, 0.09 * s_), v["cyst"])
    if _on(f, "kidney stone"):
        kx, ky = kidneys[f.side]
        py = ky - 0.065 if f.zone == "upper" else ky + 0.065
        for k in range(f.count):  # side by side across the pole
            x = kx + (k - (f.count - 1) / 2) * 0.05 + rng.uniform(-0.005, 0.005)
            c.paint(c.ellipse(x, py + rng.uniform(-0.012, 0.012), STONE_RADIUS, STONE_RADIUS), v["stone"], jitter=0.0)


DRAW = {"chest": chest_xray, "head": head, "abdomen": abdomen}


def draw(findings: Findings, style: str, rng: np.random.Generator) -> Image.Image:
    """Render one study as an 8-bit grayscale image in the given acquisition style."""
    assert findings.kind in KINDS
    s = STYLES[style]
    c = Canvas(s.size, s.edge_px, rng)
    DRAW[findings.region](c, findings, rng)
    w0, w1 = s.window[0] + rng.uniform(-0.03, 0.03), s.window[1] + rng.uniform(-0.03, 0.03)
    x = np.clip((c.d - w0) / (w1 - w0), 0.0, 1.0)
    if s.smoothstep:
        x = x * x * (3.0 - 2.0 * x)  # polynomial, so bit-exact everywhere
    if s.invert:
        x = 1.0 - x
    v = s.display[0] + (s.display[1] - s.display[0]) * x
    grey = np.floor(v * 255.0 + 0.5).astype(np.int32)
    b = s.noise_block
    m = -(-s.size // b)  # blocks per side
    noise = rng.integers(-s.noise, s.noise + 1, size=(3, m, m), dtype=np.int32).sum(axis=0)
    noise = np.repeat(np.repeat(noise, b, axis=0), b, axis=1)[:s.size, :s.size]
    return Image.fromarray(np.clip(grey + noise, 0, 255).astype(np.uint8), mode="L")
