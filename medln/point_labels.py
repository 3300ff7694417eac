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
# narrow column and two desktop widths: a label placement must hold on all four.
AREAS = ((140, 300), (340, 300), (540, 300), (740, 300))


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

    n = len(points)
    labels: dict[int, tuple[str, dict]] = {}  # point -> (its spot, every spot's box on each area)

    def place(i: int) -> None:
        """The least-overlapping spot for i's label, against every marker but its own and
        every other label placed so far (the first spot that overlaps nothing wins at once)."""
        half_w, half_h = len(names[i]) * char_w / 2, line_h / 2
        every = {spot: [(a[i][0] + dx * (half_w + r) - half_w, a[i][1] + dy * (half_h + r) - half_h,
                         a[i][0] + dx * (half_w + r) + half_w, a[i][1] + dy * (half_h + r) + half_h) for a in px]
                 for spot, (dx, dy) in SPOTS.items()}
        best = None
        for spot, placed in every.items():
            cost = _on_markers(markers, i, placed) + sum(_between(placed, _box(labels, j)) for j in labels if j != i)
            if best is None or cost < best[0]:
                best = (cost, spot)
            if cost == 0:
                break
        labels[i] = (best[1], every)

    order = sorted(range(n), key=lambda i: (xs[i], ys[i]))
    for i in order:  # greedy, left to right
        place(i)
    for _ in range(3):  # then each label again, with all the others in place: fixes early choices
        for i in order:
            place(i)
    _untangle(labels, markers)
    return [labels[i][0] for i in range(n)]


def _overlap(a: tuple, b: tuple) -> float:
    """The area two boxes (x0, y0, x1, y1) share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _between(a: list, b: list) -> float:
    """Two labels' overlap, summed over the plot areas (a, b: one box per area)."""
    return sum(_overlap(x, y) for x, y in zip(a, b))


def _on_markers(markers: list, i: int, placed: list) -> float:
    """Label i's overlap with every marker but its own, summed over the areas."""
    return sum(_overlap(box, m) for k, box in enumerate(placed) for j, m in enumerate(markers[k]) if j != i)


def _box(labels: dict, i: int) -> list:
    """Label i's box on every area, at its chosen spot."""
    spot, every = labels[i]
    return every[spot]


def _untangle(labels: dict, markers: list, most: int = 6) -> None:
    """Where labels still overlap after the greedy passes (a tight cluster, e.g. four scopes of
    2-3 k parameters at near-equal scores), search every spot combination of the labels that
    clash and of the neighbours that may have to make room (up to `most`, the rest fixed),
    depth first with the best cost so far as a bound; stops at the first combination with no
    overlap. Changes `labels` in place."""
    def cost_now(i: int) -> float:
        return _on_markers(markers, i, _box(labels, i)) + sum(_between(_box(labels, i), _box(labels, j)) for j in labels if j != i)

    def may_meet(i: int, j: int) -> bool:  # some spot of i's label touches some spot of j's label, or j's marker
        ei, ej = labels[i][1], labels[j][1]
        return any(_between(a, b) for a in ei.values() for b in ej.values()) or any(
            _overlap(box, markers[k][j]) for a in ei.values() for k, box in enumerate(a))

    clash = [i for i in labels if cost_now(i) > 0]
    if not clash:
        return
    near = [j for j in labels if j not in clash and any(may_meet(i, j) for i in clash)]
    group = (clash + near)[:most]
    fixed = [j for j in labels if j not in group]
    # cost of i at a spot against every marker but its own and every fixed label
    unary = {(i, s): _on_markers(markers, i, placed) + sum(_between(placed, _box(labels, j)) for j in fixed)
             for i in group for s, placed in labels[i][1].items()}
    best = [sum(unary[i, labels[i][0]] for i in group) + sum(
        _between(_box(labels, i), _box(labels, j)) for x, i in enumerate(group) for j in group[x + 1:]), None]

    def search(x: int, chosen: list, cost: float) -> None:
        if cost >= best[0]:
            return
        if x == len(group):
            best[:] = [cost, list(chosen)]
            return
        i = group[x]
        for s in sorted(SPOTS, key=lambda s: unary[i, s]):
            extra = unary[i, s] + sum(_between(labels[i][1][s], labels[j][1][t]) for j, t in zip(group, chosen))
            search(x + 1, chosen + [s], cost + extra)
            if best[0] == 0:
                return

    search(0, [], 0.0)
    for i, s in zip(group, best[1] or []):
        labels[i] = (s, labels[i][1])
