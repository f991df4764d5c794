"""Charts drawn on the server as inline SVG: no JavaScript, no CDN, readable without styles.

Each chart is an <svg role="img"> with a title, a <title> tooltip on every bar
or point, and a legend; numbers are also in the table under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 920, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 34, 42
PALETTE = ("#0b5cad", "#b3261e", "#1d7a3a", "#9a6500", "#6b3fa0")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str = ""


def nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (the top of the y axis)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def axis(maximum: float, ticks: int = 5) -> tuple[float, float]:
    """(top, step) of a y axis: a round step, and the top at the first step at or above the maximum."""
    step = nice_ceiling(maximum / ticks) if maximum > 0 else 1
    return step * max(1, math.ceil(maximum / step)), step


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:,.1f}"


def _frame(
    title: str, labels: Sequence[str], maximum: float, unit: str
) -> tuple[list[str], float, float, float]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="600" fill="#1b1f24">{escape(title)}</text>',
    ]
    top, step = axis(maximum)
    for i in range(int(round(top / step)) + 1):
        value = step * i
        y = TOP + plot_h - plot_h * value / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7ec"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5b6570">{_fmt(value)}{escape(unit)}</text>'
        )
    count = max(len(labels), 1)
    step = max(1, math.ceil(count / 12))
    slot = plot_w / count
    for i, label in enumerate(labels):
        if i % step == 0:
            x = LEFT + slot * (i + 0.5)
            y = HEIGHT - BOTTOM + 16
            parts.append(
                f'<text x="{x:.1f}" y="{y}" text-anchor="middle" fill="#5b6570">{escape(label)}</text>'
            )
    return parts, plot_w, plot_h, top


def _legend(parts: list[str], series: Sequence[Series]) -> None:
    x = WIDTH - RIGHT
    for s in reversed(series):
        width = 14 + 7 * len(s.name)
        x -= width + 12
        parts.append(f'<rect x="{x}" y="7" width="10" height="10" fill="{s.color}"/>')
        parts.append(f'<text x="{x + 14}" y="16" fill="#1b1f24">{escape(s.name)}</text>')


def _colored(series: Sequence[Series]) -> list[Series]:
    return [Series(s.name, s.values, s.color or PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "") -> SafeString:
    """Stacked bars, one per label."""
    series = _colored(series)
    totals = [sum((s.values[i] or 0) for s in series) for i in range(len(labels))]
    parts, plot_w, plot_h, top = _frame(title, labels, max(totals, default=0), unit)
    slot = plot_w / max(len(labels), 1)
    bar_w = max(slot * 0.7, 1)
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base = TOP + plot_h
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{s.color}">'
                f"<title>{escape(label)}: {_fmt(value)}{escape(unit)} {escape(s.name.lower())}</title></rect>"
            )
    _legend(parts, series)
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#5b6570"/>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text in it went through escape()


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "") -> SafeString:
    """Lines with a dot per value; gaps where a value is missing."""
    series = _colored(series)
    highest = max((v for s in series for v in s.values if v is not None), default=0)
    parts, plot_w, plot_h, top = _frame(title, labels, highest, unit)
    slot = plot_w / max(len(labels), 1)
    for s in series:
        segments: list[list[str]] = [[]]
        for i, value in enumerate(s.values):
            if value is None:
                segments.append([])
                continue
            x = LEFT + slot * (i + 0.5)
            y = TOP + plot_h - plot_h * value / top
            segments[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{s.color}">'
                f"<title>{escape(labels[i])}: {_fmt(value)}{escape(unit)} {escape(s.name.lower())}</title></circle>"
            )
        for points in segments:
            if len(points) > 1:
                parts.append(
                    f'<polyline points="{" ".join(points)}" fill="none" stroke="{s.color}" stroke-width="1.8"/>'
                )
    _legend(parts, series)
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#5b6570"/>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text in it went through escape()
