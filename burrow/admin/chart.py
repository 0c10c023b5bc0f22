"""The overview's throughput chart: jobs finished per minute, drawn on the server.

No script, so it works offline and obeys the page's Content-Security-Policy, which
also forbids inline styles: colours come from the stylesheet by class name. The
bars are an SVG stretched to the box (``preserveAspectRatio="none"``) and the axis
labels are HTML beside it, so the text stays readable from a phone to a wide
screen instead of shrinking with the drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from burrow.stats import ThroughputPoint

MINUTES = 60  # the stylesheet's .xaxis grid has this many columns
SERIES = ("succeeded", "retried", "failed")  # stacked bottom to top
_STEPS = (1, 2, 4, 5, 6, 8)  # axis tops: these times a power of ten
GAP = 0.18  # between two bars, in minutes


def axis_top(value: int) -> int:
    """The smallest of 2, 4, 5, 6, 8, 10, 20, 40, ... at least ``value``: a round top
    for the axis whose half is round too."""
    scale = 1
    while True:
        for step in _STEPS:
            if step * scale >= max(value, 2):
                return step * scale
        scale *= 10


def series_totals(points: Sequence[ThroughputPoint]) -> dict[str, int]:
    """Each series added up over ``points``: the legend's and the chart's summary."""
    return {name: sum(getattr(p, name) for p in points) for name in SERIES}


def throughput_chart(points: Sequence[ThroughputPoint]) -> Markup:
    """One stacked bar per minute (succeeded, retried, failed), oldest on the left;
    hovering a minute shows its counts. ``points`` is ``q.throughput(MINUTES)``."""
    totals = [p.succeeded + p.retried + p.failed for p in points]
    top = axis_top(max(totals, default=0))
    bars = []
    for index, point in enumerate(points):
        label = f"{point.minute:%H:%M} UTC: {point.succeeded} succeeded, {point.retried} retried, {point.failed} failed"
        rects = [f'<rect class="hit" x="{index}" y="0" width="1" height="100"/>']
        base = 0.0
        for name in SERIES:
            height = getattr(point, name) / top * 100
            if height:
                rects.append(
                    f'<rect class="bar {name}" x="{index + GAP / 2:g}" y="{100 - base - height:.3f}" '
                    f'width="{1 - GAP:g}" height="{height:.3f}"/>'
                )
                base += height
        bars.append(f"<g><title>{escape(label)}</title>{''.join(rects)}</g>")
    grid = "".join(
        f'<line class="grid" x1="0" x2="{len(points)}" y1="{y}" y2="{y}" vector-effect="non-scaling-stroke"/>'
        for y in (0, 50, 100)
    )
    ticks = "".join(
        f"<span>{f'{p.minute:%H:%M}' if p.minute.minute % 15 == 0 else ''}</span>" for p in points
    )
    summary = ", ".join(f"{count} {name}" for name, count in series_totals(points).items())
    empty = "" if any(totals) else '<p class="nothing">no job finished in this hour</p>'
    return Markup(
        f'<figure class="chart" role="img" aria-label="Jobs finished per minute, last {len(points)} minutes: '
        f'{escape(summary)}">'
        f'<div class="yaxis" aria-hidden="true"><span class="y-top">{top}</span><span class="y-mid">{top / 2:g}</span>'
        f'<span class="y-zero">0</span></div>'
        f'<svg class="plot" viewBox="0 0 {len(points)} 100" preserveAspectRatio="none">{grid}{"".join(bars)}</svg>'
        f"{empty}"
        f'<div class="xaxis" aria-hidden="true">{ticks}</div>'
        "</figure>"
    )
