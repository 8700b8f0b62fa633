"""The broken stick y = c + a·max(η − L, 0), a ≥ 0: flat above the loss η, rising linearly below it,
and its parametric bootstrap (docs/statistics.md, "η").

``stick_profile`` fits every candidate η of a grid at once, for one curve or a stack of simulated ones;
``fit_broken_stick`` refines the best grid cell. The bootstrap draws curves around a fit with each
checkpoint's own noise and refits them on the grid for η's INTERVAL_LEVEL interval:

    FitPoints + BrokenStick ─► simulate_curves (binomial at each n, or normal with each se)
        ─► refit on the η grid (stick_profile) ─► eta_interval

The agreement test across models (``harness.analysis.agreement``) and the shape test
(``harness.analysis.shapes``) draw their null curves with ``simulate_curves`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize

if TYPE_CHECKING:  # curves imports this module (its residual noise is a broken-stick fit's)
    from harness.analysis.curves import FitPoints

GRID_POINTS = 400  # η candidates across the observed losses (refined for the point estimate)


@dataclass(frozen=True)
class BrokenStick:
    eta: float  # the loss where the rise starts
    slope: float  # gain per nat of loss below η (≥ 0), in the better direction
    level: float  # fitted value above η, in the better direction
    sse: float


def stick_profile(loss: np.ndarray, y: np.ndarray, etas: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Least squares of y = c + a·max(η − L, 0), a ≥ 0, for every candidate η at once.

    ``y`` is one curve (m,) or a stack of resamples (B, m); returns slope, level c (for one curve only,
    else None) and the residual sum of squares, each (G,) or (B, G). For fixed η the model is linear:
    on centred x, a = Sxy/Sxx clipped at 0, and SSE = Syy − a·Sxy (which is Syy when a is clipped).
    """
    x = np.clip(etas[:, None] - loss[None, :], 0.0, None)  # (G, m)
    x_mean = x.mean(axis=1)
    xc = x - x_mean[:, None]
    sxx = np.einsum("gm,gm->g", xc, xc)
    inverse = np.where(sxx > 1e-12, 1.0 / np.where(sxx > 1e-12, sxx, 1.0), 0.0)  # η at the lowest loss: flat
    y_mean = y.mean(axis=-1, keepdims=True)
    yc = y - y_mean
    # einsum, not matmul: these products are small, and a multithreaded BLAS call on a busy machine
    # cost ten times the arithmetic (32 ms against 3 ms for 300 resamples × 400 η on two shared cores)
    sxy = np.einsum("...m,gm->...g", yc, xc)  # (G,) or (B, G)
    syy = np.einsum("...m,...m->...", yc, yc)
    slope = np.maximum(sxy * inverse, 0.0)
    sse = np.maximum(np.asarray(syy)[..., None] - slope * sxy, 0.0)
    level = y_mean - slope * x_mean if y.ndim == 1 else None
    return slope, level, sse


def eta_grid(loss: np.ndarray) -> np.ndarray:
    return np.linspace(float(loss.min()), float(loss.max()), GRID_POINTS)


def fit_broken_stick(loss: np.ndarray, y: np.ndarray, refine: bool = True) -> BrokenStick | None:
    """Least squares of y = c + a·max(η − L, 0), a ≥ 0, η within the observed losses (never
    extrapolated). The best η of a grid is refined by a bounded scalar search. None when the losses do
    not span a range."""
    loss, y = np.asarray(loss, float), np.asarray(y, float)
    if len(loss) < 3 or not loss.max() > loss.min():
        return None
    etas = eta_grid(loss)
    slope, level, sse = stick_profile(loss, y, etas)
    best = int(np.argmin(sse))
    fit = BrokenStick(float(etas[best]), float(slope[best]), float(level[best]), float(sse[best]))
    if refine and fit.slope > 0:
        left, right = etas[max(best - 1, 0)], etas[min(best + 1, GRID_POINTS - 1)]
        res = optimize.minimize_scalar(lambda e: float(stick_profile(loss, y, np.array([e]))[2][0]),
                                       bounds=(left, right), method="bounded", options={"xatol": 1e-6})
        if res.fun < fit.sse:
            s, c, e = stick_profile(loss, y, np.array([res.x]))
            fit = BrokenStick(float(res.x), float(s[0]), float(c[0]), float(e[0]))
    return fit


def stick_mean(loss: np.ndarray, fit: BrokenStick) -> np.ndarray:
    return fit.level + fit.slope * np.clip(fit.eta - loss, 0.0, None)


# ---------------------------------------------------------------------- the parametric bootstrap

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
