"""Axes for the SVG charts the templates draw (no chart library, no JavaScript).

A ``Frame`` is one SVG: its size and the plot rectangle inside the margins. A ``Scale`` maps
data values onto pixels along one side of it, linearly or logarithmically, and names its ticks;
``padded`` widens a data range so that points do not sit on the frame. Every chart module
(histograms, scatter plots, curves, trade-off panels) draws through these, so an axis means the
same thing on every page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Data values in [lo, hi] onto pixels from ``start`` (where lo lands) to ``end`` (where hi
    lands). A y axis runs from the bottom up, so its ``end`` is the smaller pixel: SVG's y grows
    downwards. ``log``: equal ratios take equal lengths (lo and hi must be positive). ``clamp``:
    values outside [lo, hi] land on the nearer end instead of off the plot. Pixels are rounded to
    ``digits`` decimals, which keeps the SVG small."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False
    clamp: bool = False
    digits: int = 2

    def __post_init__(self) -> None:
        if self.log and (self.lo <= 0 or self.hi <= 0):
            raise ValueError(f"a log scale needs a positive range, not [{self.lo}, {self.hi}]")

    def fraction(self, value: float) -> float:
        """Where ``value`` lies between lo (0) and hi (1); a range of zero width maps lo to 0."""
        if self.clamp:
            value = min(max(value, self.lo), self.hi)
        if self.log:
            lo, hi, value = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            lo, hi = self.lo, self.hi
        return (value - lo) / ((hi - lo) or 1)

    def __call__(self, value: float) -> float:
        return round(self.start + (self.end - self.start) * self.fraction(value), self.digits)

    def length(self, value: float) -> float:
        """The distance from lo's pixel to ``value``'s (a bar's height on a y axis from 0)."""
        return round(abs(self.end - self.start) * self.fraction(value), self.digits)

    def ticks(self, count: int = 5) -> list[float]:
        """Values to label: ``count`` evenly spaced from lo to hi on a linear scale; on a log
        scale every 1, 2 and 5 × a power of ten inside the range (lo and hi if none is)."""
        if self.log:
            found = [
                m * 10.0**exp
                for exp in range(
                    math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1
                )
                for m in (1, 2, 5)
                if self.lo <= m * 10.0**exp <= self.hi
            ]
            return found or [self.lo, self.hi]
        if count < 2:
            return [self.lo]
        return [self.lo + (self.hi - self.lo) * i / (count - 1) for i in range(count)]


def padded(
    lo: float,
    hi: float,
    *,
    fraction: float = 0.0,
    minimum: float = 0.0,
    factor: float = 1.0,
    flat: float = 0.5,
    bounds: tuple[float | None, float | None] = (None, None),
) -> tuple[float, float]:
    """[lo, hi] widened on both sides: by ``fraction`` of its width but at least ``minimum``
    (linear axes), or divided and multiplied by ``factor`` (log axes); then cut to ``bounds``
    (e.g. (0, 1) for a metric). A range that is still flat (every value equal) gets ``flat`` on
    each side, so that a line has somewhere to be drawn."""
    if factor != 1.0:
        lo, hi = lo / factor, hi * factor
    pad = max((hi - lo) * fraction, minimum)
    lo, hi = lo - pad, hi + pad
    if hi - lo < 1e-9:
        lo, hi = lo - flat, hi + flat
    floor, ceiling = bounds
    if floor is not None:
        lo = max(floor, lo)
    if ceiling is not None:
        hi = min(ceiling, hi)
    return lo, hi


@dataclass(frozen=True)
class Frame:
    """One SVG of ``width`` × ``height`` with its plot rectangle inside the margins."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @classmethod
    def of(
        cls,
        width: int,
        height: int,
        pad: int = 0,
        *,
        left: int | None = None,
        right: int | None = None,
        top: int | None = None,
        bottom: int | None = None,
    ) -> Frame:
        """A frame with margins of ``pad`` on every side, or the ones named."""
        return cls(
            width=width,
            height=height,
            left=pad if left is None else left,
            right=width - (pad if right is None else right),
            top=pad if top is None else top,
            bottom=height - (pad if bottom is None else bottom),
        )

    @property
    def plot_width(self) -> int:
        return self.right - self.left

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top

    def x(self, lo: float, hi: float, **options) -> Scale:
        """A horizontal scale: lo at the left edge of the plot, hi at its right edge."""
        return Scale(lo, hi, self.left, self.right, **options)

    def y(self, lo: float, hi: float, **options) -> Scale:
        """A vertical scale: lo at the bottom of the plot, hi at its top."""
        return Scale(lo, hi, self.bottom, self.top, **options)

    def geometry(self) -> dict:
        """What every chart template draws its frame and axes from."""
        return {
            "width": self.width,
            "height": self.height,
            "left": self.left,
            "right": self.right,
            "top": self.top,
            "bottom": self.bottom,
        }
