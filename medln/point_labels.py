"""Where each point's label goes on a scatter plot (plotly's `textposition`), so that labels of
near-equal points do not print over each other or over a neighbour's marker. Pure geometry,
no plotly: medln.plots asks it for the metric-vs-parameters figure."""

from __future__ import annotations

import math

# Where a point's label may go, as (dx, dy) of the label box's centre from the point, in units
# of (half the label's width + the marker's radius, half a line + the marker's radius).
SPOTS = {"top center": (0, 1), "bottom center": (0, -1), "middle right": (1, 0), "middle left": (-1, 0),
                "top right": (1, 1), "bottom right": (1, -1), "top left": (-1, 1), "bottom left": (-1, -1)}


# Where the points spread over (px: about 80 % of the plot area, which plotly pads) on a phone, a
# narrow and a wide desktop column: a label placement must hold on all three.
AREAS = ((140, 300), (340, 300), (540, 300))


def label_positions(points: list[tuple[float, float]], names: list[str] | None = None, *,
                    areas: tuple[tuple[float, float], ...] = AREAS,
                    y_range: tuple[float, float] | None = None) -> list[str]:
    """Text positions for point labels on a log-x plot: each label, in order of x, takes the
    first spot around its point whose box (from the label's length) overlaps no marker and no
    label placed before it on every plot area in `areas`, or else the spot that overlaps least
    summed over them; so labels of near-equal scopes (ln, ln-llm, ln-vision) do not print over
    each other or over a neighbour's marker, on a phone or a desktop (the points spread with
    the plot, the text does not, so one size alone does not settle it).
    `y_range`: the y axis's range when it spans more than the points (reference lines): the
    points then sit closer together on the screen, and their labels are placed for that."""
    if not points:
        return []
    names = names or ["label"] * len(points)
    xs = [math.log10(max(x, 1)) for x, _ in points]
    ys = [y for _, y in points]
    lo, hi = y_range or (min(ys), max(ys))
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (hi - lo) or 1.0
    r, char_w, line_h = 8.0, 7.0, 14.0  # marker radius, character width, line height (px, 12 px font)
    # per area: each point's pixel position and its marker's box
    px = [[((x - min(xs)) / span_x * w, (y - lo) / span_y * h) for x, y in zip(xs, ys)] for w, h in areas]
    markers = [[(x - r, y - r, x + r, y + r) for x, y in area] for area in px]

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    n = len(points)
    labels: dict[int, tuple[str, list]] = {}  # point -> (spot, its box on each area)

    def place(i: int) -> None:
        """The least-overlapping spot for i's label, against every marker but its own and
        every other label placed so far (the first spot that overlaps nothing wins at once)."""
        half_w, half_h = len(names[i]) * char_w / 2, line_h / 2
        best = None
        for spot, (dx, dy) in SPOTS.items():
            centres = [(a[i][0] + dx * (half_w + r), a[i][1] + dy * (half_h + r)) for a in px]
            placed = [(cx - half_w, cy - half_h, cx + half_w, cy + half_h) for cx, cy in centres]
            cost = sum(overlap(box, marker) for k, box in enumerate(placed) for j, marker in enumerate(markers[k]) if j != i)
            cost += sum(overlap(box, other[1][k]) for j, other in labels.items() if j != i for k, box in enumerate(placed))
            if best is None or cost < best[0]:
                best = (cost, spot, placed)
            if cost == 0:
                break
        labels[i] = (best[1], best[2])

    order = sorted(range(n), key=lambda i: (xs[i], ys[i]))
    for i in order:  # greedy, left to right
        place(i)
    for _ in range(3):  # then each label again, with all the others in place: fixes early choices
        for i in order:
            place(i)
    return [labels[i][0] for i in range(n)]
