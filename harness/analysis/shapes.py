"""Threshold or smooth rise? The broken stick against smooth alternatives, by a parametric bootstrap.

Every shape here is y = c + a·f(L), a ≥ 0, for one basis function f of the loss L taken from a family
(docs/statistics.md, "Shape"):

- ``stick``: f = max(η − L, 0), η on a grid over the observed losses (the threshold model);
- ``linear``: f = −L (the stick with η at the highest loss is this line);
- ``logistic``: f = σ((c − L)/w), the centre anywhere near the data, the width w ≥ SMOOTH_MIN_SCALE;
- ``exponential``: f = exp(r·(L_max − L)), r ≤ 1/SMOOTH_MIN_SCALE: linear on the log scale, the mirage
  of a per-token log-probability linear in loss seen through exact match (p_token^K);
- ``logit-power`` (exact match only): f = σ(u0 + r·(L_max − L))^K, K answer tokens, K·r ≤ 1/SMOOTH_MIN_SCALE:
  the per-token probability linear on the logit scale, raised to the K tokens of an exact answer.

For a fixed f the fit is linear with a closed form (a = Sxy/Sxx clipped at 0), so every member of a
family is fitted at once, for one curve or a stack of simulated ones. The smooth families are bounded
in curvature: none bends over less than SMOOTH_MIN_SCALE nats, which is what tells them apart from a
threshold. The test: T = min SSE over the smooth families − min SSE over the sticks (least squares
weighted by each checkpoint's inverse variance), with its null distribution from curves simulated from
the best smooth fit with each checkpoint's own noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.broken_stick import GRID_POINTS, simulate_curves
from harness.analysis.curves import FitPoints

SMOOTH_MIN_SCALE = 0.3  # nats: the smooth alternatives bend over at least this much loss
SHAPE_ALPHA = 0.05  # "emerged" needs the stick to beat every smooth alternative at this level
SMOOTH_FAMILIES = ("linear", "logistic", "exponential", "logit-power")


@dataclass(frozen=True)
class Family:
    """Basis functions of the loss: ``kind`` and one parameter row per member."""

    names: tuple[str, ...]  # family of each member
    params: np.ndarray  # (K, 3) per member: meaning depends on its family

    def __len__(self) -> int:
        return len(self.names)

    def evaluate(self, loss: np.ndarray) -> np.ndarray:
        """f_k(L) for every member k and every loss: (K, m) (or (K, m, D) for a (m, D) loss array)."""
        loss = np.asarray(loss, float)
        shape = (-1,) + (1,) * loss.ndim
        p = [self.params[:, j].reshape(shape) for j in range(3)]
        out = np.zeros((len(self),) + loss.shape)
        L = loss[None, ...]
        for kind in set(self.names):
            sel = np.flatnonzero(np.array(self.names) == kind)
            a, b, c = (q[sel] for q in p)
            if kind == "stick":
                val = np.clip(a - L, 0.0, None)
            elif kind == "linear":
                val = np.broadcast_to(-L, (len(sel),) + loss.shape)
            elif kind == "logistic":  # a: centre, b: width
                val = 0.5 * (1 + np.tanh((a - L) / (2 * b)))
            elif kind == "exponential":  # a: anchor loss, b: rate
                val = np.exp(np.clip(b * (a - L), -50, 50))
            else:  # logit-power: a: anchor loss, b: per-token rate, c: tokens K; u0 folded into the anchor
                val = (0.5 * (1 + np.tanh(np.clip(b * (a - L), -50, 50) / 2))) ** c
            out[sel] = val
        return out


def stick_family(low: float, high: float, points: int = GRID_POINTS) -> Family:
    etas = np.linspace(low, high, points)
    return Family(("stick",) * points, np.column_stack([etas, np.zeros(points), np.zeros(points)]))


def smooth_family(low: float, high: float, exact_match: bool, min_scale: float = SMOOTH_MIN_SCALE) -> Family:
    """The smooth alternatives for losses in [low, high] (see the module's docstring)."""
    names, rows = ["linear"], [(0.0, 0.0, 0.0)]
    span = max(high - low, 1e-6)
    for w in np.geomspace(min_scale, max(4 * span, 2 * min_scale), 10):
        for c in np.linspace(low - 4 * w, high + 2 * w, 40):
            names.append("logistic")
            rows.append((c, w, 0.0))
    for r in np.linspace(0.1, 1.0 / min_scale, 16):
        names.append("exponential")
        rows.append((high, r, 0.0))
    if exact_match:
        for k in (2.0, 3.0, 5.0, 10.0):
            for r in np.linspace(0.1, 1.0 / min_scale, 8) / k:
                # σ(r·(a − L))^K: the anchor a moves the per-token probability's starting point
                for a in np.linspace(low - 3 / r if r > 0 else low, high + 3 / r, 12):
                    names.append("logit-power")
                    rows.append((a, r, k))
    return Family(tuple(names), np.array(rows, float))


def profile(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Weighted) least squares of y = c + a·x_k, a ≥ 0, for every row x_k of ``X`` (K, m); ``y`` is (m,) or
    (B, m); ``w`` (m,) weights (None: all 1). Returns slope a, level c and the (weighted) SSE, each (K,) or (B, K)."""
    if w is None:
        w = np.ones(X.shape[1])
    w = w / w.sum()
    x_mean = X @ w
    xc = X - x_mean[:, None]
    xw = xc * w
    sxx = np.einsum("km,km->k", xw, xc)
    inverse = np.where(sxx > 1e-18, 1.0 / np.where(sxx > 1e-18, sxx, 1.0), 0.0)
    y_mean = (y @ w)[..., None]
    yc = y - y_mean
    sxy = np.einsum("...m,km->...k", yc, xw)
    syy = np.einsum("...m,...m->...", yc * w, yc)
    slope = np.maximum(sxy * inverse, 0.0)
    sse = np.maximum(np.asarray(syy)[..., None] - slope * sxy, 0.0)
    level = y_mean - slope * x_mean
    return slope, level, sse


def noise_weights(points: FitPoints, mean: np.ndarray) -> np.ndarray:
    """1 / variance of each checkpoint: binomial at ``mean`` (kept half an item from 0 and 1), else 1/se²."""
    if points.binomial:
        p = np.clip(mean, 0.5 / points.n, 1 - 0.5 / points.n)
        return points.n / (p * (1 - p))
    return 1.0 / points.se**2


@dataclass(frozen=True)
class ShapeTest:
    """The threshold model against the smooth alternatives on one curve (better direction)."""

    p_value: float  # of "a smooth curve" against "a broken stick"; small: a threshold is supported
    statistic: float  # T = SSE_smooth − SSE_stick, each weighted by the checkpoints' inverse variances
    smooth: str  # the best smooth family
    smooth_mean: np.ndarray  # its fitted values at the curve's checkpoints
    smooth_slope: float  # its mean gain per nat over the observed losses (better direction)
    stick_eta: float


def shape_test(points: FitPoints, exact_match: bool, resamples: int, seed: int,
               min_scale: float = SMOOTH_MIN_SCALE) -> ShapeTest:
    """Parametric-bootstrap test of the broken stick against every smooth alternative at once."""
    loss, y = points.loss, points.y
    low, high = float(loss.min()), float(loss.max())
    sticks = stick_family(low, high)
    smooth = smooth_family(low, high, exact_match, min_scale)
    Xs, Xm = sticks.evaluate(loss), smooth.evaluate(loss)
    # weights: each checkpoint's inverse variance, binomial at a first (unweighted) smooth fit; the same
    # weights for the observed curve and every simulated one, so the bootstrap calibrates the statistic as used
    a, c, sse_smooth = profile(Xm, y)
    first = int(np.argmin(sse_smooth))
    w = noise_weights(points, c[first] + a[first] * Xm[first])
    _, _, sse_stick = profile(Xs, y, w)
    a, c, sse_smooth = profile(Xm, y, w)
    best = int(np.argmin(sse_smooth))
    observed = float(sse_smooth[best] - sse_stick.min())
    mean = c[best] + a[best] * Xm[best]
    rng = np.random.default_rng(seed)
    samples = simulate_curves(points, mean, resamples, rng)
    null = profile(Xm, samples, w)[2].min(axis=1) - profile(Xs, samples, w)[2].min(axis=1)
    scale = max(float(sse_smooth[best]), 1e-300) * 1e-9
    p_value = (1 + int((null >= observed - scale).sum())) / (resamples + 1)
    at_low, at_high = mean[np.argmin(loss)], mean[np.argmax(loss)]
    slope = float((at_low - at_high) / (high - low)) if high > low else 0.0
    return ShapeTest(p_value, observed, smooth.names[best], mean, slope, float(sticks.params[int(np.argmin(sse_stick)), 0]))


def benjamini_hochberg(p_values) -> np.ndarray:
    """BH q-values (step-up, monotone), nan where p is nan."""
    p = np.asarray(p_values, float)
    q = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.minimum(ranked, 1.0)
    return q
