"""Do the models share one threshold (Du et al.: one loss threshold whatever the size)?

    curves by model ─► each model's verdict and the pooled one (``thresholds.emergence_threshold``)
        ─► contrary models (never emerged, though the common curve says they visibly should have)
        ─► one shared η against one η per model over the emerged ones (parametric-bootstrap null)
        ─► Agreement

The statistic, its null distribution and the rule for contrary models, with their calibration, are
in docs/statistics.md ("Do the models agree?").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from harness.analysis.bootstrap import simulate_curves
from harness.analysis.broken_stick import BrokenStick, _grid, _mean_curve, _profile
from harness.analysis.curves import Curve, _points, _Points, pool
from harness.analysis.thresholds import (
    FROM_START,
    MIN_DEPARTURE_POINTS,
    NO_EMERGENCE,
    Threshold,
    emergence_threshold,
)

AGREEMENT_ALPHA = 0.05  # "disagree" when the shared-η fit is rejected at this level
DETECTABLE_Z = 3.0  # a non-emerged model is contrary when the pooled fit predicts a rise this many se's high


@dataclass(frozen=True)
class Agreement:
    agree: bool | None  # None when undetermined (fewer than two models emerged and none is contrary)
    p_value: float | None  # of "one shared η" against "one η per model"; None when not tested
    models: tuple[str, ...]  # emerged models, the ones compared by the test
    contrary: tuple[str, ...]  # models well below the pooled interval that never emerged
    note: str
    shared_eta: float | None = None  # η of the shared fit over ``models``


def _contrary(curves: Mapping[str, Curve], thresholds: Mapping[str, Threshold], pooled: Threshold) -> tuple[str, ...]:
    """Models that never emerged although the common curve says they should visibly have.

    The common curve is the pooled fit when the pooled curve emerged, else that of the emerged models
    (the lowest low end of their intervals, their smallest slope). A model is contrary when its
    MIN_DEPARTURE_POINTS lowest-loss checkpoints all lie below that interval, where the common curve
    rises, from the interval's low end, by at least DETECTABLE_Z of their own standard errors: a rise
    its departure test would have seen.
    """
    if pooled.emerged:
        low, slope = pooled.low, abs(pooled.slope)
    else:
        emerged = [t for t in thresholds.values() if t.emerged]
        if not emerged:
            return ()
        low, slope = min(t.low for t in emerged), min(abs(t.slope) for t in emerged)
    out = []
    for name, t in thresholds.items():
        if t.status not in (NO_EMERGENCE, FROM_START):
            continue
        points = _points(curves[name])
        lowest = np.argsort(points.loss, kind="stable")[:MIN_DEPARTURE_POINTS]
        if len(lowest) < MIN_DEPARTURE_POINTS:
            continue
        se = points.se[lowest]
        if points.binomial:  # the noise at the plateau, not at the (possibly 0) observed value
            p = np.clip(points.y[lowest], 0.0, 1.0)
            se = np.sqrt(np.maximum(p * (1 - p), 0.25 / points.n[lowest]) / points.n[lowest])
        if (slope * (low - points.loss[lowest]) >= DETECTABLE_Z * se).all():
            out.append(name)
    return tuple(out)


def _shared_eta_test(points: Mapping[str, _Points], resamples: int, seed: int) -> tuple[float, float]:
    """p-value of one shared η against one η per model, and the shared η.

    Statistic: T = min_η Σ_s SSE_s(η) − Σ_s min_η SSE_s(η) (each model keeps its own level and slope).
    Null distribution: T on curves simulated from the shared-η fit with each checkpoint's own noise.
    """
    all_loss = np.concatenate([p.loss for p in points.values()])
    etas = _grid(all_loss)
    profiles = {name: _profile(p.loss, p.y, etas) for name, p in points.items()}
    total = sum(sse for _, _, sse in profiles.values())
    shared = int(np.argmin(total))
    observed = float(total[shared] - sum(sse.min() for _, _, sse in profiles.values()))
    rng = np.random.default_rng(seed)
    null_total = np.zeros((resamples, len(etas)))
    null_separate = np.zeros(resamples)
    for name, p in points.items():
        slope, level, _ = profiles[name]
        fit = BrokenStick(float(etas[shared]), float(slope[shared]), float(level[shared]), 0.0)
        _, _, sse = _profile(p.loss, simulate_curves(p, _mean_curve(p.loss, fit), resamples, rng), etas)
        null_total += sse
        null_separate += sse.min(axis=1)
    null = null_total.min(axis=1) - null_separate
    # a relative tolerance: T and T* are differences of nearly equal sums
    scale = max(float(total[shared]), 1e-300) * 1e-9
    p_value = (1 + int((null >= observed - scale).sum())) / (resamples + 1)
    return p_value, float(etas[shared])


def agreement(curves: Mapping[str, Curve], *, resamples: int = 1000, seed: int = 0,
              thresholds: Mapping[str, Threshold] | None = None, pooled: Threshold | None = None) -> Agreement:
    """Do the models share one threshold (Du et al.: one loss threshold whatever the size)?

    ``curves`` are keyed by model name. ``thresholds`` (each model's ``emergence_threshold``) and
    ``pooled`` (that of all checkpoints together) are computed when not given. The emerged models are
    compared by ``_shared_eta_test``; a contrary model (``_contrary``) makes the answer "disagree"
    whatever the test says.
    """
    if thresholds is None:
        thresholds = {name: emergence_threshold(c, resamples=resamples, seed=seed) for name, c in curves.items()}
    if pooled is None:
        pooled = emergence_threshold(pool(curves), resamples=resamples, seed=seed)
    emerged = tuple(name for name in curves if thresholds[name].emerged)
    contrary = _contrary(curves, thresholds, pooled)
    against = ""
    if contrary:
        against = f"; {', '.join(contrary)} went well below the common η without emerging"
    if len(emerged) < 2:
        agree = False if contrary and emerged else None
        note = f"{len(emerged)} model{'s' if len(emerged) != 1 else ''} emerged, the test needs two{against}"
        return Agreement(agree, None, emerged, contrary, note)
    p_value, shared = _shared_eta_test({name: _points(curves[name]) for name in emerged}, resamples, seed)
    fits = "one η per model fits better" if p_value < AGREEMENT_ALPHA else "one shared η fits as well as one per model"
    note = f"{fits} (p = {p_value:.3g}, {len(emerged)} models, shared η = {shared:.3f}){against}"
    return Agreement(p_value >= AGREEMENT_ALPHA and not contrary, p_value, emerged, contrary, note, shared)
