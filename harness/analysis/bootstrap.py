"""The parametric bootstrap: curves simulated around a broken-stick fit with each checkpoint's own
noise, and the INTERVAL_LEVEL interval for η built from them (docs/statistics.md, "η").

    FitPoints + BrokenStick ─► simulate_curves (binomial at each n, or normal with each se)
        ─► refit on the η grid (``broken_stick.stick_profile``) ─► eta_interval

The agreement test across models (``harness.analysis.agreement``) draws its null curves with
``simulate_curves`` too.
"""

from __future__ import annotations

import numpy as np

from harness.analysis.broken_stick import BrokenStick, eta_grid, stick_mean, stick_profile
from harness.analysis.curves import FitPoints

INTERVAL_LEVEL = 0.90


def simulate_curves(points: FitPoints, mean: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` curves (B, m) drawn around ``mean`` with each checkpoint's own noise."""
    if points.binomial:
        p = np.clip(mean, 0.0, 1.0)
        return rng.binomial(points.n.astype(np.int64), p, size=(resamples, len(p))) / points.n
    return mean + points.se * rng.standard_normal((resamples, len(mean)))


def eta_interval(points: FitPoints, fit: BrokenStick, resamples: int, seed: int) -> tuple[float, float]:
    """INTERVAL_LEVEL interval for η from curves simulated from the fit with each checkpoint's own noise.

    Two intervals come from the same resamples, and the answer is their hull (both contain η̂):
    - percentile: the central INTERVAL_LEVEL of η* refitted on each resample (a flat refit saw no
      rise in range: its η* is the lowest observed loss);
    - profile: every η whose observed SSE(η) − SSE(η̂) is within the INTERVAL_LEVEL quantile of the
      same statistic at the truth of the resamples, D* = SSE*(η̂) − min_η SSE*(η) (a test inversion).
    On simulated sweeps each alone undercovers in one regime (the percentile interval for binomial
    curves rising from 0, the profile one for accuracy rising from chance); the hull covers 85–95%
    in both (docs/statistics.md, scripts/calibrate.py).
    """
    rng = np.random.default_rng(seed)
    etas = eta_grid(points.loss)
    samples = simulate_curves(points, stick_mean(points.loss, fit), resamples, rng)
    slope, _, sse = stick_profile(points.loss, samples, etas)
    best = np.argmin(sse, axis=1)
    refits = np.where(slope[np.arange(resamples), best] > 0, etas[best], float(points.loss.min()))
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = np.quantile(refits, [tail, 1 - tail])
    at_fit = int(np.argmin(np.abs(etas - fit.eta)))
    cutoff = float(np.quantile(sse[:, at_fit] - sse[np.arange(resamples), best], INTERVAL_LEVEL))
    observed = stick_profile(points.loss, points.y, etas)[2]
    inside = etas[observed - observed.min() <= cutoff]  # holds the grid's best η at least
    return min(float(inside.min()), float(low), fit.eta), max(float(inside.max()), float(high), fit.eta)
