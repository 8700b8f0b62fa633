"""The reference a checkpoint must beat, and the test of whether it does (docs/statistics.md,
"Reference" and "Departure").

    FitPoints ─► plateau (the highest-loss checkpoints) ─► Reference ─► per checkpoint: departs?
        ─► departure loss (the highest loss below which every checkpoint departs)

The reference is the plateau of the highest-loss checkpoints, an estimate with its own noise (item
counts summed), and for multiple-choice accuracy max(chance, plateau). A checkpoint *departs* when a
one-sided two-sample test against the reference (Fisher's exact test of two proportions; a z test of
the difference for continuous metrics) rejects at ONE_SIDED_ALPHA and its gain clears a minimum
effect (MIN_EXCESS_ITEMS items and MIN_GAIN for proportions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.analysis.curves import Curve, FitPoints, base_metric, fit_points, to_better, to_metric

# Multiple-choice accuracy: guessing gives the random baseline, so the reference is never below it.
# Exact match has a baseline of 0 in the table, which no model sits at by guessing; it gets the plateau.
CHANCE_REFERENCE_METRICS = frozenset({"acc", "acc_norm", "acc_bytes"})

ONE_SIDED_ALPHA = 0.05  # level of each departure test, and so the bound on false "emerged" per curve
MIN_EXCESS_ITEMS = 3  # a proportion departs only with at least this many items above the reference...
MIN_GAIN = 0.01  # ...and at least one percentage point above it
PLATEAU_FRACTION = 0.25  # the plateau is drawn from this share of the highest-loss checkpoints...
PLATEAU_MIN_POINTS = 3  # ...and at least this many


@dataclass(frozen=True)
class Reference:
    """The level a checkpoint must beat, in metric units, with the noise of its estimate."""

    value: float
    kind: str  # "plateau" | "chance" (multiple-choice accuracy whose plateau is not above chance)
    points: int  # checkpoints pooled into the plateau (also when chance wins, for the record)
    stderr: float = 0.0  # of ``value``; 0 for a known chance level
    successes: int = 0  # pooled correct items of the plateau (binomial reference), else 0
    items: int = 0  # pooled items of the plateau (binomial reference); 0 for chance or continuous
    chance: float | None = None  # the random baseline when it is part of the reference
    above_chance_p: float | None = None  # one-sided p of "plateau > chance" (multiple-choice only)


def _plateau_index(points: FitPoints) -> np.ndarray:
    """The highest-loss checkpoints that form the plateau: the PLATEAU_MIN_POINTS highest, then more,
    up to PLATEAU_FRACTION of them, walking down in loss and stopping before the first one that
    departs from the plateau gathered so far, so a curve that rises early is not averaged into its
    reference. The first few are always taken: a plateau of one checkpoint that happened to fall low
    (below chance, say) would make every later checkpoint "depart"."""
    order = np.argsort(-points.loss, kind="stable")
    size = max(PLATEAU_MIN_POINTS, math.ceil(PLATEAU_FRACTION * len(order)))
    taken = [int(i) for i in order[:PLATEAU_MIN_POINTS]]
    for i in order[PLATEAU_MIN_POINTS:size]:
        reference = _estimate(points, np.array(taken), chance=None)
        if departs(points.take(np.array([i])), reference, None)[0]:
            break
        taken.append(int(i))
    return np.array(taken)


def _estimate(points: FitPoints, index: np.ndarray, chance: float | None) -> Reference:
    """The reference in the better direction from the plateau checkpoints ``index``."""
    if points.binomial:
        successes, items = int(points.k[index].sum()), int(points.n[index].sum())
        value = successes / items
        stderr = math.sqrt(max(value * (1 - value), 0.25 / items) / items)
    else:
        weights = 1.0 / points.se[index] ** 2
        value = float(weights @ points.y[index] / weights.sum())
        stderr = float(1.0 / math.sqrt(weights.sum()))
        successes = items = 0
    if chance is None:
        return Reference(value, "plateau", len(index), stderr, successes, items)
    if points.binomial:
        p_above = float(stats.binom.sf(successes - 1, items, chance)) if value > chance else 1.0
    else:
        p_above = float(stats.norm.sf((value - chance) / stderr))
    if value > chance:
        return Reference(value, "plateau", len(index), stderr, successes, items, chance, p_above)
    return Reference(chance, "chance", len(index), 0.0, 0, 0, chance, p_above)


def departs(points: FitPoints, reference: Reference, plateau: np.ndarray | None) -> np.ndarray:
    """Per checkpoint: better than ``reference`` (better direction) by a one-sided test at
    ONE_SIDED_ALPHA and by the minimum effect. A checkpoint inside the plateau is compared with the
    plateau without itself (leave one out), so no point is tested against its own noise."""
    m = len(points)
    inside = np.zeros(m, dtype=bool)
    if plateau is not None:
        inside[plateau] = True
    estimated = reference.kind == "plateau"
    g = points.y - reference.value
    if points.binomial:
        k, n = points.k, points.n
        if estimated and reference.items > 0:
            ref_k = reference.successes - np.where(inside, k, 0)
            ref_n = reference.items - np.where(inside, n, 0)
            ok = ref_n > 0
            safe_n = np.where(ok, ref_n, 1)
            g = np.where(ok, k / n - ref_k / safe_n, 0.0)
            # Fisher's exact test: P(X >= k) for X ~ Hypergeometric(n + ref_n items, k + ref_k correct, n drawn)
            p = np.where(ok, stats.hypergeom.sf(k - 1, n + safe_n, k + ref_k, n), 1.0)
        else:
            p = stats.binom.sf(k - 1, n, min(max(reference.value, 0.0), 1.0))
        big_enough = (g * n >= MIN_EXCESS_ITEMS - 1e-9) & (g >= MIN_GAIN - 1e-12)
        return (g > 0) & (p < ONE_SIDED_ALPHA) & big_enough
    ref_value = np.full(m, reference.value)
    ref_se = np.full(m, reference.stderr)
    if estimated and plateau is not None and inside.any():
        w = np.zeros(m)
        w[plateau] = 1.0 / points.se[plateau] ** 2
        rest = w.sum() - w
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = (w @ points.y - w * points.y) / rest
        ref_value = np.where(inside & (rest > 0), loo, ref_value)
        ref_se = np.where(inside & (rest > 0), 1.0 / np.sqrt(np.where(rest > 0, rest, 1.0)), ref_se)
        g = points.y - ref_value
    z = g / np.sqrt(points.se**2 + ref_se**2)
    return (g > 0) & (stats.norm.sf(z) < ONE_SIDED_ALPHA)


def plateau_reference(points: FitPoints, curve: Curve) -> tuple[Reference, np.ndarray]:
    plateau = _plateau_index(points)
    chance = None
    if base_metric(curve.metric) in CHANCE_REFERENCE_METRICS and curve.random_baseline is not None:
        chance = float(to_better(curve, curve.random_baseline))
    return _estimate(points, plateau, chance), plateau


def in_metric_units(curve: Curve, ref: Reference) -> Reference:
    value = float(to_metric(curve, ref.value))
    chance = None if ref.chance is None else float(to_metric(curve, ref.chance))
    return Reference(value, ref.kind, ref.points, ref.stderr, ref.successes, ref.items, chance, ref.above_chance_p)


_in_better_units = in_metric_units  # the map is its own inverse


def reference_level(curve: Curve) -> Reference:
    """The reference of ``curve`` in metric units: the pooled plateau of its highest-loss checkpoints,
    and for multiple-choice accuracy with a random baseline max(chance, plateau)."""
    points = fit_points(curve)
    if len(points) == 0:
        raise ValueError("no checkpoint has a loss, a value and a noise estimate")
    return in_metric_units(curve, plateau_reference(points, curve)[0])


def _as_reference(curve: Curve, reference: Reference | float) -> Reference:
    if isinstance(reference, Reference):
        return _in_better_units(curve, reference)
    # a bare number is a known constant (no noise of its own), as a chance level is
    return Reference(float(to_better(curve, float(reference))), "chance", 0)


def exceeds(curve: Curve, reference: Reference | float) -> np.ndarray:
    """Per checkpoint of ``curve``: does it depart from ``reference``?

    ``reference`` is a ``Reference`` (from ``reference_level``: a plateau is an estimate, tested by
    two samples) or a number, taken as a known constant (an exact binomial test, or a z test with the
    checkpoint's own stderr). The minimum effect applies either way. A checkpoint without a loss, a
    value or any noise estimate cannot be shown to depart: False.
    """
    out = np.zeros(len(curve), dtype=bool)
    points = fit_points(curve)
    if len(points):
        out[points.index] = departs(points, _as_reference(curve, reference), None)
    return out


def first_departure(points: FitPoints, above: np.ndarray) -> float | None:
    departure = None
    # checkpoints at one loss (two models can meet there) must all depart for that loss to count
    for level in np.unique(points.loss):
        if not above[points.loss == level].all():
            break
        departure = float(level)
    return departure


def departure_loss(curve: Curve, reference: Reference | float) -> float | None:
    """The highest loss L such that every checkpoint at loss ≤ L departs from ``reference``
    (``exceeds``); None when the lowest-loss checkpoint does not. (``emergence_threshold`` also
    leaves each plateau checkpoint out of its own reference; this function cannot know which they
    are, which matters only when the departure reaches into the plateau.)"""
    points = fit_points(curve)
    if len(points) == 0:
        return None
    ref = _as_reference(curve, reference)
    return first_departure(points, departs(points, ref, None))
