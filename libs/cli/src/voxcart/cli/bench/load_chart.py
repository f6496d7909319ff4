"""The load bench's PNG (``--chart``): four panels drawn with Pillow from the report dict alone.

1. turn latency, cumulative distribution per step (and the in-process baseline's turns, grey);
2. the turn breakdown per step: median of each segment, stacked;
3. CPU (cores) per service against the number of calls;
4. peak memory (MiB) per service against the number of calls.

Invariants: the chart reads only the report (what ``--json`` writes); a panel with nothing to draw says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .load_measure import SEGMENTS

__all__ = ["draw_chart"]

W, H = 1200, 860
PANEL_W, PANEL_H = 600, 430
PAD_L, PAD_R, PAD_T, PAD_B = 62, 20, 34, 44
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SERVICES = ("gateway", "stt", "brain", "tts", "redis", "caller")
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


class _Panel:
    """One panel: a title, axes with ticks, and data-to-pixel mapping."""

    def __init__(self, draw: ImageDraw.ImageDraw, x0: int, y0: int, title: str, font: Font) -> None:
        self.d, self.font = draw, font
        self.left, self.top = x0 + PAD_L, y0 + PAD_T
        self.right, self.bottom = x0 + PANEL_W - PAD_R, y0 + PANEL_H - PAD_B
        draw.text((x0 + PAD_L, y0 + 8), title, fill="black", font=font)
        self.xmax = self.ymax = 1.0

    def axes(
        self, xmax: float, ymax: float, xlabel: str, ylabel: str, *, xticks: Sequence[float] = (), yticks: bool = True
    ) -> None:
        """Frame the panel for ``[0, xmax] x [0, ymax]``: ticks at ``xticks`` (else 5 even ones) and 5 on y."""
        self.xmax, self.ymax = max(xmax, 1e-9), max(ymax, 1e-9)
        d = self.d
        d.rectangle((self.left, self.top, self.right, self.bottom), outline="#888")
        for fx in xticks or [self.xmax * i / 5 for i in range(6)]:
            x = self.px(fx, 0)[0]
            d.line((x, self.bottom, x, self.bottom + 4), fill="#888")
            d.text((x - 12, self.bottom + 6), f"{fx:.3g}", fill="#333", font=self.font)
        for i in range(6):
            fy = self.ymax * i / 5
            y = self.px(0, fy)[1]
            if yticks:
                d.line((self.left - 4, y, self.right, y), fill="#eee")
                d.text((self.left - 46, y - 7), f"{fy:.3g}", fill="#333", font=self.font)
        d.text(((self.left + self.right) // 2 - 30, self.bottom + 24), xlabel, fill="black", font=self.font)
        d.text((self.left - 56, self.top - 20), ylabel, fill="black", font=self.font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (
            self.left + (self.right - self.left) * x / self.xmax,
            self.bottom - (self.bottom - self.top) * y / self.ymax,
        )

    def legend(self, entries: Sequence[tuple[str, str]]) -> None:
        for i, (label, color) in enumerate(entries):
            y = self.top + 6 + 16 * i
            self.d.rectangle((self.right - 130, y + 3, self.right - 120, y + 13), fill=color)
            self.d.text((self.right - 115, y), label, fill="black", font=self.font)

    def empty(self, why: str) -> None:
        self.d.text((self.left + 20, (self.top + self.bottom) // 2), why, fill="#888", font=self.font)


def _cdf(panel: _Panel, series: Sequence[tuple[str, Sequence[float], str]]) -> None:
    values = [v for _, vs, _ in series for v in vs]
    if not values:
        panel.empty("no turn latency measured")
        return
    panel.axes(max(values) * 1.05, 1.0, "turn latency (ms)", "fraction")
    for _, vs, color in series:
        xs = sorted(vs)
        points = [panel.px(x, (i + 1) / len(xs)) for i, x in enumerate(xs)]
        if len(points) > 1:
            panel.d.line(points, fill=color, width=2)
        elif points:
            panel.d.ellipse((points[0][0] - 3, points[0][1] - 3, points[0][0] + 3, points[0][1] + 3), fill=color)
    panel.legend([(label, color) for label, _, color in series])


def _breakdown(panel: _Panel, steps: Sequence[Mapping[str, Any]]) -> None:
    bars = [(s["calls"], [s["breakdown_ms"].get(k, {}).get("p50", 0.0) for k in SEGMENTS]) for s in steps]
    bars = [(n, vs) for n, vs in bars if any(vs)]
    if not bars:
        panel.empty("no per-turn breakdown")
        return
    longest = max(sum(vs) for _, vs in bars)
    panel.axes(longest * 1.4, len(bars), "median ms per segment, stacked", "", yticks=False)
    for i, (calls, vs) in enumerate(bars):
        y0, y1 = panel.px(0, i + 0.2)[1], panel.px(0, i + 0.8)[1]
        at = 0.0
        for k, v in enumerate(vs):
            x0, x1 = panel.px(at, 0)[0], panel.px(at + max(0.0, v), 0)[0]
            panel.d.rectangle((x0, y1, x1, y0), fill=COLORS[k % len(COLORS)])
            at += max(0.0, v)
        panel.d.text((panel.left + 4, (y0 + y1) / 2 - 7), f"N={calls}", fill="white", font=panel.font)
    panel.legend([(name, COLORS[k % len(COLORS)]) for k, name in enumerate(SEGMENTS)])


def _per_service(panel: _Panel, steps: Sequence[Mapping[str, Any]], key: str, label: str) -> None:
    xs = [s["calls"] for s in steps]
    lines = {
        svc: [(s["calls"], s["resources"]["services"][svc][key]) for s in steps if svc in s["resources"]["services"]]
        for svc in SERVICES
    }
    lines = {svc: pts for svc, pts in lines.items() if pts}
    if not lines:
        panel.empty("no process measured")
        return
    top = max(v for pts in lines.values() for _, v in pts) * 1.15
    panel.axes(max(xs) * 1.1, top, "concurrent calls", label, xticks=sorted(set(xs)))
    legend = []
    for i, (svc, pts) in enumerate(lines.items()):
        color = COLORS[i % len(COLORS)]
        points = [panel.px(x, y) for x, y in pts]
        if len(points) > 1:
            panel.d.line(points, fill=color, width=2)
        for x, y in points:
            panel.d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        legend.append((svc, color))
    panel.legend(legend)


def draw_chart(report: Mapping[str, Any], path: str) -> None:
    """Draw the report's four panels into a PNG at ``path``."""
    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)
    font = _font(13)
    steps = report.get("steps", [])
    series = [(f"N={s['calls']}", s.get("latencies_ms", []), COLORS[i % len(COLORS)]) for i, s in enumerate(steps)]
    base = report.get("baseline")
    if base is not None:
        series.append((f"inproc N={base['calls']}", base.get("turn_ms", []), "#999999"))
    _cdf(_Panel(draw, 0, 0, "turn latency (caller side), CDF", font), series)
    _breakdown(_Panel(draw, PANEL_W, 0, "turn breakdown (median per segment)", font), steps)
    _per_service(_Panel(draw, 0, PANEL_H, "CPU by service (cores)", font), steps, "cpu_cores", "cores")
    _per_service(_Panel(draw, PANEL_W, PANEL_H, "peak memory by service (MiB)", font), steps, "rss_mib_peak", "MiB")
    image.save(path, format="PNG")
