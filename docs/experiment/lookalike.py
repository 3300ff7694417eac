"""Session 13, a pilot: does a wide stage with look-alikes of the new findings teach their read-out?

readout.py found that `full`, the best findings scope, reads a new finding only where the untuned
model already has a read-out for its look (the infarct) and at 200 steps builds none for the
pneumothorax or the kidney stones, although the features the decoder is given hold the pneumothorax. Session 10's wide stage had added one look-alike
(calcifications: small dense foci, counted, in the head; like the stones). This pilot adds three
more pretraining-only kinds, each in another organ than the target kind it resembles, so that
the target's kinds, their look in their organ and their answer words stay new:

  granuloma       chest: one to three tiny calcified foci in a lung zone, counted (the stones' look)
  pneumocephalus  head: black air over a frontal convexity (a dark collection without structure,
                  at an organ's edge: the pneumothorax's look)
  free air        abdomen: a black pocket under the anterior wall (the same)

    python docs/experiment/lookalike.py --out OUT --steps 600 --studies 4000 --lr 1e-4 --stream 108

continues medln-tiny (assets) with a wide stage in which these kinds join WIDE_KINDS (every
`medln pretrain-tiny` option applies; the control is the same command with `medln pretrain-tiny
--init assets/medln-tiny --wide`). Its result and the control's: docs/experiment.md, "Session 13".
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

from medln.config import from_args
from medln.make import draw, findings, questions, task
from medln.make.pretrain import PretrainArgs, pretrain_tiny

LOOK_ALIKES = {"chest": ("granuloma",), "head": ("pneumocephalus",), "abdomen": ("free air",)}


def install() -> None:
    """The three kinds join the pretraining-only source-wide domain (module state, this process only)."""
    K = findings.Kind
    findings.KINDS.update(granuloma=K(side=True, zones=("upper", "lower"), max_count=3, where="{side} {zone} lung"),
                          pneumocephalus=K(side=True, size=True, where="{side} frontal convexity"),
                          **{"free air": K(side=True, size=True, where="{side} upper abdomen")})
    questions.KIND_PHRASE.update(granuloma="a granuloma", pneumocephalus="pneumocephalus", **{"free air": "free air"})
    questions.PLURAL["granuloma"] = "granulomas"
    kinds = {region: findings.WIDE_KINDS[region] + LOOK_ALIKES[region] for region in LOOK_ALIKES}
    task.PRETRAIN_DOMAINS["source-wide"] = replace(task.PRETRAIN_DOMAINS["source-wide"], kinds=kinds)
    draw.DRAW.update(chest=_chest, head=_head, abdomen=_abdomen)


def peek_offsets(rng: np.random.Generator) -> tuple[float, float]:
    """The (dx, dy) a region's drawing draws first, without advancing `rng`: a drawing wrapped
    around medln.make.draw's region functions knows where they put the anatomy (readout.py too)."""
    twin = np.random.default_rng()
    twin.bit_generator.state = rng.bit_generator.state
    return tuple(twin.uniform(-0.02, 0.02, 2))


def _chest(c, f, rng, _draw=draw.chest_xray):
    dx, dy = peek_offsets(rng)
    _draw(c, f, rng)  # a kind it does not know: the normal chest, with the same draws
    if f.present and f.kind == "granuloma":
        lx = draw.sx(f.side, 0.2) + dx
        y0, y1 = (0.22, 0.42) if f.zone == "upper" else (0.48, 0.68)
        for x, y in draw.spots(rng, f.count, (lx - 0.08, y0 + dy, lx + 0.08, y1 + dy), 0.022):
            c.paint(c.ellipse(x, y, 0.022, 0.022), 1.0, jitter=0.0)


def _air(c, within, x: float, y: float, r: float, stretch: float) -> None:
    """Black air (no structure) in a flat ellipse at (x, y), cut to the organ mask `within`."""
    c.paint(c.ellipse(x, y, r * stretch, r) * within, 0.02, jitter=0.01)


def _head(c, f, rng, _draw=draw.head):
    dx, dy = peek_offsets(rng)
    _draw(c, f, rng)
    if f.present and f.kind == "pneumocephalus":  # over the frontal convexity, inside the skull
        r = {"small": 0.08, "medium": 0.12, "large": 0.16}[f.size]
        _air(c, c.ellipse(0.5 + dx, 0.5 + dy, 0.33, 0.41), draw.sx(f.side, 0.2) + dx, 0.1 + dy, r, 1.6)


def _abdomen(c, f, rng, _draw=draw.abdomen):
    dx, dy = peek_offsets(rng)
    _draw(c, f, rng)
    if f.present and f.kind == "free air":  # under the anterior abdominal wall
        r = {"small": 0.07, "medium": 0.1, "large": 0.13}[f.size]
        _air(c, c.ellipse(0.5 + dx, 0.5 + dy, 0.42, 0.32), draw.sx(f.side, 0.2) + dx, 0.2 + dy, r, 1.8)

if __name__ == "__main__":
    import argparse

    from medln.config import add_arguments

    install()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, PretrainArgs)
    args = parser.parse_args(["--init", "assets/medln-tiny", "--wide", *sys.argv[1:]])
    pretrain_tiny(from_args(args, PretrainArgs))
