"""A curve: one task's metric at many checkpoints, and the same curve made ready for tests and fits.

    Curve (metric units, as the table holds it) ─► fit_points ─► FitPoints (finite checkpoints, the
    metric's better direction, each checkpoint's noise)

Every computation downstream (``departure``, ``broken_stick``, ``bootstrap``, ``thresholds``,
``agreement``) runs on ``FitPoints`` in the better direction (``y``: the value, 1 − value for a
lower-is-better proportion, −value for a lower-is-better continuous metric), so "above" always means
"better". The noise of a checkpoint is binomial at its item count for proportions (exact match,
accuracy), else normal with its standard error, estimated from the broken-stick fit's residuals when
the table has none (docs/statistics.md, "Noise of one checkpoint").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from harness.analysis.broken_stick import fit_broken_stick

# Metrics whose value is a mean of per-item 0/1 scores: binomial noise at the item count. Every other
# metric (correct_choice_prob, brier_score, bleu) is continuous. "<metric>_macro" is its base metric.
PROPORTION_METRICS = frozenset({
    "acc", "acc_norm", "acc_bytes",
    "exact_match", "exact_match_strict", "exact_match_flexible", "exact_match_numeric",
    "numeric_match",
})

MIN_CHECKPOINTS = 5  # fewer usable checkpoints: insufficient data


@dataclass(frozen=True, eq=False)
class Curve:
    """One metric at several checkpoints; arrays are aligned, one entry per checkpoint."""

    loss: np.ndarray
    value: np.ndarray
    stderr: np.ndarray  # nan where the table has none
    n: np.ndarray  # items behind each value (0 where unknown)
    metric: str
    higher_is_better: bool
    random_baseline: float | None = None

    @classmethod
    def of(cls, loss, value, stderr, n, metric: str, higher_is_better: bool,
           random_baseline: float | None = None) -> Curve:
        def as_float(xs):
            return np.asarray(xs, dtype=float).reshape(-1)

        n_arr = np.nan_to_num(as_float(n), nan=0.0).astype(int)
        curve = cls(as_float(loss), as_float(value), as_float(stderr), n_arr, metric, bool(higher_is_better),
                    None if random_baseline is None or np.isnan(random_baseline) else float(random_baseline))
        if not (len(curve.loss) == len(curve.value) == len(curve.stderr) == len(curve.n)):
            raise ValueError("loss, value, stderr and n must have one entry per checkpoint")
        return curve

    def take(self, index: np.ndarray) -> Curve:
        return Curve(self.loss[index], self.value[index], self.stderr[index], self.n[index],
                     self.metric, self.higher_is_better, self.random_baseline)

    def __len__(self) -> int:
        return len(self.loss)


def pool(curves: Mapping[str, Curve]) -> Curve:
    """One curve of every checkpoint of ``curves`` (the first curve's metric and direction)."""
    first = next(iter(curves.values()))
    def cat(field):
        return np.concatenate([getattr(c, field) for c in curves.values()])

    return Curve(cat("loss"), cat("value"), cat("stderr"), cat("n"), first.metric, first.higher_is_better,
                 first.random_baseline)


def base_metric(metric: str) -> str:
    return metric.removesuffix("_macro")


def is_proportion(metric: str) -> bool:
    return base_metric(metric) in PROPORTION_METRICS


@dataclass(frozen=True, eq=False)
class FitPoints:
    """A curve ready for tests and fits: finite values, the better direction, each point's noise."""

    loss: np.ndarray
    y: np.ndarray  # value in the better direction
    se: np.ndarray  # standard error of y (binomial: at the observed proportion)
    n: np.ndarray  # items; > 0 everywhere when ``binomial``
    binomial: bool
    index: np.ndarray  # position of each point in the curve it came from
    se_from_residuals: bool = False

    @property
    def k(self) -> np.ndarray:
        return np.round(self.y * self.n)

    def take(self, index: np.ndarray) -> FitPoints:
        return FitPoints(self.loss[index], self.y[index], self.se[index], self.n[index], self.binomial,
                         self.index[index], self.se_from_residuals)

    def __len__(self) -> int:
        return len(self.loss)


def to_better(curve: Curve, values: np.ndarray | float) -> np.ndarray | float:
    if curve.higher_is_better:
        return values
    return 1.0 - values if is_proportion(curve.metric) else -values


to_metric = to_better  # the map is its own inverse


def slope_to_metric(curve: Curve, slope: float) -> float:
    return slope if curve.higher_is_better else -slope


def fit_points(curve: Curve) -> FitPoints:
    """Finite checkpoints of ``curve`` with their noise. Binomial when a proportion has item counts
    everywhere; otherwise normal with the table's stderr (or the binomial one where only n is known),
    and, when no checkpoint has either, one σ estimated from the residuals of the broken-stick fit."""
    at = np.flatnonzero(np.isfinite(curve.loss) & np.isfinite(curve.value))
    c = curve.take(at)
    y = np.asarray(to_better(c, c.value), dtype=float)
    n = c.n.astype(float)
    if is_proportion(c.metric) and len(c) and (n > 0).all():
        p = np.clip(y, 0.0, 1.0)
        return FitPoints(c.loss, p, np.sqrt(p * (1 - p) / n), n, True, at)
    se = np.where(np.isfinite(c.stderr) & (c.stderr > 0), c.stderr, np.nan)
    if is_proportion(c.metric):
        # a floor of half an item keeps a checkpoint at 0 or 1 from claiming no noise at all
        p = np.clip(y, 0.0, 1.0)
        from_n = np.sqrt(np.maximum(p * (1 - p), 0.5 / np.maximum(n, 1)) / np.maximum(n, 1))
        se = np.where(np.isnan(se) & (n > 0), from_n, se)
    if np.isfinite(se).sum() >= MIN_CHECKPOINTS or len(c) < MIN_CHECKPOINTS + 2:
        keep = np.flatnonzero(np.isfinite(se))
        return FitPoints(c.loss[keep], y[keep], se[keep], np.zeros(len(keep)), False, at[keep])
    fit = fit_broken_stick(c.loss, y)
    if fit is None:
        return FitPoints(c.loss[:0], y[:0], se[:0], n[:0], False, at[:0])
    sigma = math.sqrt(max(fit.sse, 1e-300) / (len(c) - 3))
    return FitPoints(c.loss, y, np.full(len(c), sigma), np.zeros(len(c)), False, at, se_from_residuals=True)

