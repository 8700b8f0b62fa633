"""Threshold or smooth rise (harness.analysis.shapes and the statuses built on it), on seeded curves whose
truth is known, and the hand-computable pieces (the Benjamini-Hochberg step, the flatness test).
The rates are calibrated in tests/analysis/test_calibration.py and scripts/calibrate.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.analysis import shapes, thresholds
from harness.analysis.curves import Curve, fit_points
from harness.analysis.shapes import benjamini_hochberg, profile, shape_test, smooth_family, stick_family
from harness.analysis.thresholds import EMERGED, FROM_START, NO_EMERGENCE, SMOOTH_RISE, emergence_threshold, with_q


def _sweep(p_at, seed: int, items: int = 1000, finals=(2.6, 2.3, 2.0), per_size: int = 10, metric: str = "acc",
           chance: float = 0.25) -> Curve:
    """Three sizes pooled into one curve, losses log-spaced in step (crowding near each final loss)."""
    rng = np.random.default_rng(seed)
    steps = np.geomspace(1e3, 1.43e5, per_size)
    u = (steps ** -0.5 - steps[-1] ** -0.5) / (steps[0] ** -0.5 - steps[-1] ** -0.5)
    loss = np.concatenate([f + (3.8 - f) * u for f in finals])
    value = rng.binomial(items, np.clip(p_at(loss), 0, 1)) / items
    return Curve.of(loss, value, np.sqrt(value * (1 - value) / (items - 1)), np.full(len(loss), items), metric, True, chance)


def test_accuracy_linear_in_loss_is_a_smooth_rise_with_no_eta():
    t = emergence_threshold(_sweep(lambda L: 0.25 + 0.2 * (3.8 - L) / 1.8, seed=3), resamples=300)
    assert t.status == SMOOTH_RISE and not t.emerged
    assert t.eta is None and t.low is None and t.high is None and t.slope is None
    assert t.shape_p >= 0.05 and t.smooth in shapes.SMOOTH_FAMILIES
    # the best smooth fit's mean slope is the truth's 0.2 / 1.8 = 0.111 per nat
    assert t.smooth_slope == pytest.approx(0.2 / 1.8, rel=0.25)
    assert t.departure_loss is not None and t.departure_low <= t.departure_high
    assert t.describe().startswith(f"smooth rise: departs below {t.departure_loss:.3f} [")


def test_the_mirage_is_a_smooth_rise():
    # Schaeffer et al.: per-token log-prob linear in loss, exact match of a 5-token answer = exp(5 · per-token)
    rng = np.random.default_rng(4)
    offsets = rng.normal(0, 0.3, 300)
    steps = np.geomspace(1e3, 1.43e5, 10)
    u = (steps ** -0.5 - steps[-1] ** -0.5) / (steps[0] ** -0.5 - steps[-1] ** -0.5)
    loss = np.concatenate([f + (3.8 - f) * u for f in (2.6, 2.3, 2.0)])
    per_token = np.minimum((-0.21 - 0.65 * (loss - 2.0))[:, None] + offsets[None, :], 0)
    value = (rng.random(per_token.shape) < np.exp(5 * per_token)).mean(axis=1)
    curve = Curve.of(loss, value, np.full(len(loss), np.nan), np.full(len(loss), 300), "exact_match", True, 0.0)
    t = emergence_threshold(curve, resamples=300)
    assert t.status == SMOOTH_RISE and t.eta is None and t.shape_p >= 0.05


def test_a_broken_stick_is_a_threshold_over_every_smooth_alternative():
    t = emergence_threshold(_sweep(lambda L: 0.25 + 0.3 * np.clip(2.6 - L, 0, None), seed=5, finals=(2.2, 2.0, 1.8)),
                            resamples=300)
    assert t.status == EMERGED and t.shape_p < 0.05 and t.low <= 2.6 <= t.high
    assert t.note.startswith("threshold supported over every smooth alternative (shape p = ")


def test_a_rise_at_the_edge_of_the_data_gets_no_eta():
    # η = 3.55: only the highest-loss checkpoint lies above it, so no flat part is seen
    rng = np.random.default_rng(6)
    loss = np.linspace(3.6, 1.8, 20)
    value = rng.binomial(1000, 0.25 + 0.3 * np.clip(3.55 - loss, 0, None)) / 1000
    t = emergence_threshold(Curve.of(loss, value, np.full(20, np.nan), np.full(20, 1000), "acc", True, 0.25),
                            resamples=300)
    assert t.status == SMOOTH_RISE and t.eta is None
    assert "the rise begins at the edge of the observed losses" in t.note


def test_above_chance_from_the_start_survives_one_noisy_dip_below_chance():
    # flat at 0.27 of 2000 items, one checkpoint at 0.249 (2.1 standard errors low): the curve is still flat
    value = np.full(10, 0.27)
    value[6] = 0.249
    curve = Curve.of(np.linspace(3.8, 2.0, 10), value, np.full(10, np.nan), np.full(10, 2000), "acc", True, 0.25)
    t = emergence_threshold(curve, resamples=200)
    assert t.status == FROM_START and "curve consistent with flat" in t.note
    # a curve that wanders (up 5 points in the middle, back down at the end) is not flat: no emergence
    value = np.array([0.27, 0.27, 0.27, 0.32, 0.33, 0.32, 0.33, 0.27, 0.27, 0.27])
    wander = Curve.of(np.linspace(3.8, 2.0, 10), value, np.full(10, np.nan), np.full(10, 2000), "acc", True, 0.25)
    assert emergence_threshold(wander, resamples=200).status == NO_EMERGENCE


def test_flatness_is_a_chi_square_test_of_homogeneity_hand_computed():
    k, n = np.array([50, 60, 70]), np.array([200, 200, 200])
    pbar = 180 / 600
    chi2 = (((k - n * pbar) ** 2) / (n * pbar * (1 - pbar))).sum()  # (10² + 0 + 10²) / 42 = 4.762
    assert chi2 == pytest.approx(200 / 42)
    curve = Curve.of([3, 2.5, 2], k / n, [np.nan] * 3, n, "acc", True, 0.25)
    assert thresholds._flat_p(fit_points(curve)) == pytest.approx(stats.chi2.sf(200 / 42, 2))


def test_benjamini_hochberg_hand_computed_and_equal_to_scipy():
    p = [0.01, 0.04, 0.03, 0.5, np.nan]
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.06, 0.0533, 0.5, then the running minimum from the top
    q = benjamini_hochberg(p)
    assert q[:4] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5]) and np.isnan(q[4])
    assert q[:4] == pytest.approx(stats.false_discovery_control(p[:4]))


def test_a_q_value_above_alpha_turns_emerged_into_a_smooth_rise():
    t = emergence_threshold(_sweep(lambda L: 0.25 + 0.3 * np.clip(2.6 - L, 0, None), seed=5, finals=(2.2, 2.0, 1.8)),
                            resamples=300)
    assert t.emerged
    kept = with_q(t, 0.01)
    assert kept.emerged and kept.shape_q == 0.01 and kept.eta == t.eta
    demoted = with_q(t, 0.2)
    assert demoted.status == SMOOTH_RISE and demoted.eta is None and demoted.shape_q == 0.2
    assert "threshold not supported after the other tasks" in demoted.note
    assert with_q(t, None) is t


def test_the_smooth_families_bend_no_faster_than_their_minimum_scale():
    fam = smooth_family(2.0, 3.8, exact_match=True)
    assert set(fam.names) == set(shapes.SMOOTH_FAMILIES)
    logistic = fam.params[np.array(fam.names) == "logistic"]
    assert logistic[:, 1].min() == pytest.approx(shapes.SMOOTH_MIN_SCALE)
    exponential = fam.params[np.array(fam.names) == "exponential"]
    assert exponential[:, 1].max() == pytest.approx(1 / shapes.SMOOTH_MIN_SCALE)
    power = fam.params[np.array(fam.names) == "logit-power"]
    assert (power[:, 1] * power[:, 2]).max() == pytest.approx(1 / shapes.SMOOTH_MIN_SCALE)
    assert "logit-power" not in smooth_family(2.0, 3.8, exact_match=False).names


def test_the_basis_profile_recovers_an_exact_stick():
    loss = np.linspace(3.6, 1.8, 12)
    y = 0.25 + 0.4 * np.clip(2.5 - loss, 0, None)
    sticks = stick_family(1.8, 3.6, 181)  # η on a 0.01 grid: 2.5 is a member
    slope, level, sse = profile(sticks.evaluate(loss), y)
    best = int(np.argmin(sse))
    assert sticks.params[best, 0] == pytest.approx(2.5) and sse[best] == pytest.approx(0, abs=1e-20)
    assert slope[best] == pytest.approx(0.4) and level[best] == pytest.approx(0.25)


def test_the_shape_test_is_reproducible_from_its_seed():
    points = fit_points(_sweep(lambda L: 0.25 + 0.2 * (3.8 - L) / 1.8, seed=7))
    assert shape_test(points, False, 200, 1).p_value == shape_test(points, False, 200, 1).p_value
