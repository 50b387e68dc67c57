"""Charts drawn on the server as SVG: no script, nothing fetched from elsewhere, and they print.
Each chart is a picture for those who look; the page puts its numbers in a table beside it for
those who listen (the SVG has a title and is one image to a screen reader)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

INK = "#1d3557"  # 12:1 on white: bars are non-text content (WCAG 1.4.11 wants 3:1)
SOFT = "#5b6b7f"


def columns(
    values: Sequence[tuple[str, int]], *, title: str, width: int = 640, height: int = 180
) -> Markup:
    """Vertical bars, one per (label, value), e.g. sign-ups per day; the first and last labels
    and the highest value are written on the chart."""
    top = max((v for _, v in values), default=0) or 1
    pad_x, pad_top, pad_bottom = 36, 16, 24
    inner_w, inner_h = width - pad_x - 8, height - pad_top - pad_bottom
    step = inner_w / max(len(values), 1)
    bars = []
    for i, (label, value) in enumerate(values):
        h = inner_h * value / top
        x = pad_x + i * step
        bars.append(
            f'<rect x="{x + step * 0.15:.1f}" y="{pad_top + inner_h - h:.1f}" '
            f'width="{step * 0.7:.1f}" height="{h:.1f}" fill="{INK}">'
            f"<title>{escape(label)}: {value}</title></rect>"
        )
    labels = ""
    if values:
        labels = (
            f'<text x="{pad_x}" y="{height - 6}" font-size="12" fill="{SOFT}">'
            f"{escape(values[0][0])}</text>"
            f'<text x="{width - 8}" y="{height - 6}" font-size="12" fill="{SOFT}" '
            f'text-anchor="end">{escape(values[-1][0])}</text>'
        )
    return _svg(
        title,
        width=width,
        height=height,
        body=f'<text x="{pad_x - 6}" y="{pad_top + 4}" font-size="12" fill="{SOFT}" '
        f'text-anchor="end">{top}</text>'
        f'<line x1="{pad_x}" y1="{pad_top + inner_h}" x2="{width - 8}" y2="{pad_top + inner_h}" '
        f'stroke="{SOFT}"/>' + "".join(bars) + labels,
    )


def rows(values: Sequence[tuple[str, int]], *, title: str, width: int = 640) -> Markup:
    """Horizontal bars, one per (label, value), longest first in the data's own order, e.g.
    how many readers reached each lesson."""
    top = max((v for _, v in values), default=0) or 1
    row_h, label_w = 22, 150
    height = row_h * len(values) + 8
    bar_w = width - label_w - 60
    parts = []
    for i, (label, value) in enumerate(values):
        y = 4 + i * row_h
        w = bar_w * value / top
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" fill="{SOFT}" '
            f'text-anchor="end">{escape(label[:24])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{INK}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12" fill="{INK}">'
            f"{value}</text>"
        )
    return _svg(title, width=width, height=height, body="".join(parts))


def _svg(title: str, *, width: int, height: int, body: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )
