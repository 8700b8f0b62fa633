"""Thresholds on synthetic curves with a known answer, and on hand-computed cases (the calibration of
the rates lives in tests/analysis/test_calibration.py)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from harness.analysis import broken_stick, thresholds
from harness.analysis.agreement import agreement
from harness.analysis.broken_stick import fit_broken_stick
from harness.analysis.correlations import loss_correlation
from harness.analysis.curves import Curve, is_proportion
from harness.analysis.departure import Reference, departure_loss, exceeds, reference_level
from harness.analysis.thresholds import EMERGED, FROM_START, INSUFFICIENT, NO_EMERGENCE, emergence_threshold

ITEMS = 1000


def accuracy_curve(eta: float | None, seed: int, sizes: int = 3, per_size: int = 20, slope: float = 0.5,
                   base: float = 0.25, items: int = ITEMS) -> Curve:
    """Binomial accuracy on ``items`` items: ``base`` above η, rising by ``slope`` per nat below it."""
    rng = np.random.default_rng(seed)
    loss = np.concatenate([np.linspace(3.6 - 0.1 * s, 1.8 + 0.05 * s, per_size) for s in range(sizes)])
    p = base + (slope * np.clip(eta - loss, 0, None) if eta is not None else np.zeros(len(loss)))
    value = rng.binomial(items, p) / items
    stderr = np.sqrt(value * (1 - value) / (items - 1))
    return Curve.of(loss, value, stderr, np.full(len(loss), items), "acc", True, 0.25)


def test_the_five_statuses_are_the_published_strings():
    assert thresholds.STATUSES == ("emerged", "smooth rise", "no emergence", "above reference from the start",
                                   "insufficient data")
    assert (EMERGED, thresholds.SMOOTH_RISE, NO_EMERGENCE, FROM_START, INSUFFICIENT) == thresholds.STATUSES


def test_broken_stick_at_2_2_is_recovered_within_its_interval():
    for seed in range(3):
        t = emergence_threshold(accuracy_curve(2.2, seed), resamples=500, seed=seed)
        assert t.status == EMERGED and t.emerged
        # the plateau above 2.2 is at chance: max(chance, plateau) is chance or a plateau within noise of it
        assert t.reference.kind in ("chance", "plateau") and abs(t.reference.value - 0.25) < 0.02
        assert t.low <= 2.2 <= t.high, (seed, t)
        assert abs(t.eta - 2.2) < 0.05 and t.high - t.low < 0.2
        assert t.slope == pytest.approx(0.5, rel=0.15)
        # the departure is where the rise clears the noise: below η, above the lowest loss
        assert 1.8 < t.departure_loss < 2.2
        assert t.describe().startswith(f"η = {t.eta:.3f} [{t.low:.3f}, {t.high:.3f}]")


def test_flat_at_chance_reports_no_emergence_and_no_number():
    for seed in range(3):
        t = emergence_threshold(accuracy_curve(None, seed), resamples=200)
        assert t.status == NO_EMERGENCE and not t.emerged
        assert t.eta is None and t.low is None and t.high is None and t.slope is None
        assert t.describe().startswith(NO_EMERGENCE)


def test_constant_above_chance_is_above_reference_from_the_start_not_emerged():
    # 4-choice accuracy at 0.262 on an MMLU-sized test at every checkpoint: better than chance, never rising
    t = emergence_threshold(accuracy_curve(None, seed=5, sizes=1, base=0.262, items=14042), resamples=200)
    assert t.status == FROM_START and t.eta is None
    assert t.reference.kind == "plateau" and t.reference.chance == 0.25 and t.reference.above_chance_p < 1e-6
    assert t.describe().startswith(FROM_START + " (level 0.26")
    assert "curve consistent with flat" in t.note


def test_lower_is_better_continuous_metric_uses_a_weighted_plateau():
    rng = np.random.default_rng(7)
    loss = np.linspace(3.5, 1.8, 40)
    brier = 0.75 - 0.3 * np.clip(2.2 - loss, 0, None) + rng.normal(0, 0.004, len(loss))
    curve = Curve.of(loss, brier, np.full(len(loss), 0.004), np.full(len(loss), ITEMS), "brier_score", False, 0.75)
    t = emergence_threshold(curve, resamples=500)
    # brier_score is not accuracy: its reference is the plateau, the ceil(40/4) = 10 highest-loss checkpoints
    # (equal stderr: the weighted mean is the plain mean), with stderr 0.004/sqrt(10)
    assert t.reference.kind == "plateau" and t.reference.points == 10
    assert t.reference.value == pytest.approx(brier[:10].mean())
    assert t.reference.stderr == pytest.approx(0.004 / math.sqrt(10))
    assert t.emerged and t.low <= 2.2 <= t.high
    assert t.slope == pytest.approx(-0.3, rel=0.1)  # in metric units: the Brier score falls


def test_a_rise_beyond_the_lowest_loss_is_not_extrapolated():
    # η = 1.5 lies below every observed loss (≥ 1.8): the data are flat, no number is made up
    t = emergence_threshold(accuracy_curve(1.5, seed=0), resamples=200)
    assert t.status == NO_EMERGENCE and t.eta is None


def test_too_few_checkpoints_or_items_are_insufficient_data():
    four = Curve.of([3.0, 2.8, 2.5, 2.0], [0.25, 0.3, 0.5, 0.7], [0.015] * 4, [ITEMS] * 4, "acc", True, 0.25)
    t = emergence_threshold(four, resamples=100)
    assert t.status == INSUFFICIENT and t.reference is None and t.eta is None
    assert t.describe() == "insufficient data (4 usable checkpoints at distinct losses; at least 5 needed)"
    ten_items = accuracy_curve(2.2, seed=1, sizes=1, items=10)
    assert emergence_threshold(ten_items, resamples=100).status == INSUFFICIENT
    # a continuous metric with no stderr anywhere and too few points to estimate one
    bare = Curve.of(np.linspace(3, 2, 6), [0.3, 0.3, 0.3, 0.4, 0.5, 0.6], [np.nan] * 6, [0] * 6, "bleu", True)
    assert emergence_threshold(bare, resamples=100).status == INSUFFICIENT


def test_missing_stderr_falls_back_to_the_residual_scatter():
    rng = np.random.default_rng(2)
    loss = np.linspace(3.6, 1.8, 30)
    bleu = 5 + 20 * np.clip(2.6 - loss, 0, None) + rng.normal(0, 0.5, 30)
    t = emergence_threshold(Curve.of(loss, bleu, [np.nan] * 30, [0] * 30, "bleu", True), resamples=300)
    assert t.emerged and t.low <= 2.6 <= t.high and "stderr estimated from the fit's residuals" in t.note


def test_fisher_exact_departure_against_an_estimated_plateau_hand_computed():
    # plateau 0/100 at each of 3 checkpoints → 0/300. 3/100 against it: P(X >= 3), X ~ Hypergeom(400, 3, 100)
    # = C(100,3)/C(400,3) = 0.0153 < 0.05. 2/100: C(100,2)/C(400,2) = 0.062 (and 2 items are too few anyway)
    assert math.comb(100, 3) / math.comb(400, 3) == pytest.approx(0.01527, abs=1e-5)
    assert math.comb(100, 2) / math.comb(400, 2) == pytest.approx(0.0620, abs=1e-4)
    curve = Curve.of([4.0, 3.9, 3.8, 2.0, 1.9], [0, 0, 0, 0.03, 0.02], [np.nan] * 5, [100] * 5, "exact_match", True, 0.0)
    ref = reference_level(curve)
    assert ref == Reference(0.0, "plateau", 3, pytest.approx(math.sqrt(0.25 / 300) / math.sqrt(300)), 0, 300)
    assert exceeds(curve, ref).tolist() == [False, False, False, True, False]
    # the same 3/100 against the known constant 0 would be "certain" (P = 0); a plateau of 0 is not a constant
    assert stats.binom.sf(2, 100, 0.0) == 0.0


def test_two_items_out_of_a_hundred_never_depart_however_large_the_plateau():
    # against 0/30000 pooled plateau items Fisher's p for 2/100 is ~1e-5, but 2 items is below the minimum effect
    loss = np.r_[np.linspace(4, 3, 300), [2.0, 1.9, 1.8]]
    value = np.r_[np.zeros(300), [0.02, 0.02, 0.02]]
    curve = Curve.of(loss, value, np.full(303, np.nan), np.full(303, 100), "exact_match", True, 0.0)
    assert not exceeds(curve, reference_level(curve))[-3:].any()
    t = emergence_threshold(curve, resamples=100)
    assert t.status == NO_EMERGENCE and t.departure_loss is None
    three = curve.take(np.arange(303))
    three.value[-3:] = 0.03  # three items is enough
    assert exceeds(three, reference_level(three))[-3:].all()


def test_exceeds_against_a_known_constant_is_an_exact_binomial_test():
    # 33/100 against p = 0.25: P(X >= 33) = sum_{k>=33} C(100,k) .25^k .75^(100-k)
    def tail(k):
        return sum(math.comb(100, j) * 0.25**j * 0.75 ** (100 - j) for j in range(k, 101))

    assert tail(33) < 0.05 < tail(32)  # so 0.33 departs and 0.32 does not
    curve = Curve.of([3.0, 3.0], [0.33, 0.32], [0.047, 0.047], [100, 100], "acc", True, 0.25)
    assert exceeds(curve, 0.25).tolist() == [True, False]
    # lower is better: 0.60 is better than a 0.75 reference, 0.80 is not; no stderr → cannot tell
    brier = Curve.of([3.0] * 3, [0.60, 0.80, 0.10], [0.05, 0.05, np.nan], [0] * 3, "brier_score", False)
    assert exceeds(brier, 0.75).tolist() == [True, False, False]


def test_continuous_departure_counts_the_plateau_noise():
    # plateau 0.30, 0.31, 0.32 (se 0.01 each): mean 0.31, se 0.01/sqrt(3). A checkpoint at 0.328 (se 0.01):
    # against the estimate z = 0.018 / sqrt(0.01² + 0.01²/3) = 1.559 < 1.645; against the constant 0.31, z = 1.8
    assert 0.018 / math.sqrt(1e-4 + 1e-4 / 3) == pytest.approx(1.559, abs=1e-3)
    curve = Curve.of([4.0, 3.9, 3.8, 2.0, 1.9], [0.30, 0.31, 0.32, 0.328, 0.35], [0.01] * 5, [0] * 5,
                     "correct_choice_prob", True, 0.25)
    ref = reference_level(curve)
    assert ref.kind == "plateau" and ref.points == 3
    assert ref.value == pytest.approx(0.31) and ref.stderr == pytest.approx(0.01 / math.sqrt(3))
    assert exceeds(curve, ref).tolist()[3:] == [False, True]  # 0.35: z = 3.46
    assert exceeds(curve, 0.31).tolist()[3:] == [True, True]


def test_plateau_pools_item_counts_not_values():
    # 2/100, 2/200, 3/100 → 7/400 = 0.0175, not the mean of 0.02, 0.01, 0.03
    curve = Curve.of([4.0, 3.9, 3.8, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3, 2.2],
                     [0.02, 0.01, 0.03] + [0.02] * 9, [np.nan] * 12, [100, 200, 100] + [100] * 9, "exact_match", True, 0.0)
    ref = reference_level(curve)
    assert (ref.successes, ref.items, ref.points) == (7, 400, 3) and ref.value == pytest.approx(0.0175)


def test_plateau_takes_the_first_three_then_stops_before_the_first_significant_rise():
    # 16 checkpoints: the plateau may grow to ceil(16/4) = 4; the 4th (0.50) departs from (0.30, 0.31, 0.32)
    loss = np.linspace(4.0, 2.5, 16)
    value = [0.30, 0.31, 0.32, 0.50] + [0.9] * 12
    curve = Curve.of(loss, value, [0.01] * 16, [0] * 16, "correct_choice_prob", True, 0.25)
    assert reference_level(curve) == Reference(pytest.approx(0.31), "plateau", 3, pytest.approx(0.01 / math.sqrt(3)))
    # a 4th at 0.325 does not depart: z = 0.015 / sqrt(0.01² + 0.01²/3) = 1.30 < 1.645, so four are pooled
    value[3] = 0.325
    curve = Curve.of(loss, value, [0.01] * 16, [0] * 16, "correct_choice_prob", True, 0.25)
    assert reference_level(curve).points == 4 and reference_level(curve).value == pytest.approx(0.31375)
    # the first three are always pooled, even when the 2nd would "depart" from the 1st alone
    early = Curve.of(loss[:8], [0.20, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30], [0.01] * 8, [0] * 8,
                     "correct_choice_prob", True, 0.25)
    assert reference_level(early).points == 3 and reference_level(early).value == pytest.approx(0.80 / 3)


def test_multiple_choice_reference_is_max_of_chance_and_plateau():
    loss = np.linspace(4, 2, 8)
    below = Curve.of(loss, [0.24] * 8, [0.0135] * 8, [1000] * 8, "acc_macro", True, 0.25)
    ref = reference_level(below)
    assert ref.kind == "chance" and ref.value == 0.25 and ref.stderr == 0 and ref.chance == 0.25
    above = Curve.of(loss, [0.262] * 8, [0.0037] * 8, [14042] * 8, "acc", True, 0.25)
    ref = reference_level(above)
    # the 3 highest-loss checkpoints pooled: 3·3679 correct of 3·14042; one-sided exact p of "above 0.25"
    assert ref.kind == "plateau" and (ref.successes, ref.items) == (3 * 3679, 3 * 14042)
    assert ref.above_chance_p == pytest.approx(stats.binom.sf(3 * 3679 - 1, 3 * 14042, 0.25))
    # exact match has a baseline of 0 in the table but gets the plateau, never "chance"
    em = Curve.of(loss, [0.0] * 8, [0.0] * 8, [100] * 8, "exact_match", True, 0.0)
    assert reference_level(em).kind == "plateau" and reference_level(em).chance is None


def test_departure_loss_walks_up_from_the_lowest_loss():
    stderr = [0.01] * 5
    # departing pattern by loss 1, 2, 3, 4, 5: yes, yes, no, yes, no → every checkpoint at loss ≤ 2 departs
    curve = Curve.of([5, 4, 3, 2, 1], [0.0, 0.9, 0.0, 0.9, 0.9], stderr, [0] * 5, "bleu", True)
    assert departure_loss(curve, 0.0) == 2.0
    # a tie at loss 2 with a checkpoint that does not depart: only loss 1 qualifies
    tie = Curve.of([2, 2, 1], [0.9, 0.0, 0.9], [0.01] * 3, [0] * 3, "bleu", True)
    assert departure_loss(tie, 0.0) == 1.0
    low_fails = Curve.of([2, 1], [0.9, 0.0], [0.01] * 2, [0] * 2, "bleu", True)
    assert departure_loss(low_fails, 0.0) is None


def test_fewer_than_three_departing_checkpoints_are_not_emergence():
    # flat at chance, then 0.30 and 0.31 of 1000 items at the two lowest losses: each p < 1e-3, yet two points
    loss = np.linspace(3.5, 2.0, 12)
    value = np.array([0.25, 0.24, 0.26, 0.25, 0.25, 0.24, 0.26, 0.25, 0.25, 0.24, 0.30, 0.31])
    curve = Curve.of(loss, value, np.full(12, 0.014), np.full(12, ITEMS), "acc", True, 0.25)
    t = emergence_threshold(curve, resamples=100)
    assert t.status == NO_EMERGENCE and t.eta is None and t.departure_loss == pytest.approx(loss[-2])
    assert t.note == "only the 2 lowest-loss checkpoints depart; 3 needed"


def test_fit_broken_stick_recovers_exact_data_with_its_level():
    loss = np.linspace(3.5, 1.5, 41)
    y = 0.1 + 0.4 * np.clip(2.2 - loss, 0, None)
    fit = fit_broken_stick(loss, y)
    assert fit.eta == pytest.approx(2.2, abs=1e-4) and fit.slope == pytest.approx(0.4, abs=1e-4)
    assert fit.level == pytest.approx(0.1, abs=1e-6) and fit.sse == pytest.approx(0.0, abs=1e-10)
    # a falling curve is not a rise: the slope is clipped at 0 and the level is the mean
    falling = fit_broken_stick(loss, -y)
    assert falling.slope == 0.0 and falling.level == pytest.approx(-y.mean())
    assert fit_broken_stick(np.array([2.0, 2.0, 2.0]), np.array([0.1, 0.2, 0.3])) is None


def test_the_vectorised_profile_equals_one_fit_per_curve():
    rng = np.random.default_rng(4)
    loss = np.linspace(3.6, 1.8, 25)
    ys = 0.25 + 0.5 * np.clip(2.6 - loss, 0, None) + rng.normal(0, 0.02, (6, 25))
    etas = np.linspace(1.8, 3.6, 50)
    slope, level, sse = broken_stick.stick_profile(loss, ys, etas)
    for b in range(6):
        for g in (0, 17, 31, 49):
            x = np.clip(etas[g] - loss, 0, None)
            a, c = np.polyfit(x, ys[b], 1) if np.ptp(x) > 0 else (0.0, ys[b].mean())
            a, c = (a, c) if a > 0 else (0.0, ys[b].mean())
            assert slope[b, g] == pytest.approx(a, abs=1e-9)
            assert sse[b, g] == pytest.approx(((ys[b] - c - a * x) ** 2).sum(), abs=1e-9)
            one_slope, one_level, one_sse = broken_stick.stick_profile(loss, ys[b], etas)  # one curve: the level too
            assert (one_slope[g], one_level[g], one_sse[g]) == pytest.approx((a, c, sse[b, g]), abs=1e-9)


def test_interval_is_reproducible_and_only_the_seed_moves_it():
    curve = accuracy_curve(2.2, seed=11)
    a, b = emergence_threshold(curve, resamples=300, seed=3), emergence_threshold(curve, resamples=300, seed=3)
    assert (a.low, a.high) == (b.low, b.high) and a.eta == b.eta
    other = emergence_threshold(curve, resamples=300, seed=4)
    assert other.eta == a.eta and (other.low, other.high) != (a.low, a.high)


def test_a_threshold_takes_well_under_half_a_second():
    # the report runs ~16 models × 9 tasks; 1000 resamples on a 30-checkpoint curve, best of three
    curve = accuracy_curve(2.6, seed=0, sizes=1, per_size=30)
    times = []
    for seed in range(3):
        start = time.perf_counter()
        emergence_threshold(curve, resamples=1000, seed=seed)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.5


def test_which_metrics_are_proportions():
    assert all(is_proportion(m) for m in ("acc", "acc_norm", "acc_macro", "exact_match_strict", "numeric_match"))
    assert not any(is_proportion(m) for m in ("correct_choice_prob", "brier_score", "bleu", "brier_score_macro"))


def _model(eta: float | None, seed: int, lowest: float = 1.8) -> Curve:
    rng = np.random.default_rng(seed)
    loss = np.linspace(3.6, lowest, 20)
    p = 0.25 + (0.5 * np.clip(eta - loss, 0, None) if eta is not None else 0 * loss)
    value = rng.binomial(ITEMS, p) / ITEMS
    return Curve.of(loss, value, np.sqrt(value * (1 - value) / ITEMS), np.full(20, ITEMS), "acc", True, 0.25)


def test_agreement_shared_and_apart():
    shared = agreement({"70m": _model(2.6, 0, lowest=2.4), "410m": _model(2.6, 1), "1b": _model(2.6, 2)}, resamples=300)
    assert shared.agree is True and shared.p_value >= 0.05 and shared.contrary == ()
    assert shared.models == ("70m", "410m", "1b")
    assert shared.note.startswith("one curve of loss fits as well as one shifted per size (p = ")
    assert shared.shift is not None and shared.shift_low <= 0.0 + 0.1 and shared.shift < 0.15
    apart = agreement({"410m": _model(3.0, 3), "1b": _model(2.3, 4)}, resamples=300)
    assert apart.agree is False and apart.p_value < 0.05
    assert apart.note.startswith("one curve of loss shifted per size fits better")
    # the rise of 410m starts 0.7 nats higher: the largest shift is 0.7, its interval holds it
    assert apart.shift_pair == ("410m", "1b") and apart.shift_low <= 0.7 <= apart.shift_high
    assert abs(apart.shift - 0.7) < 0.1


def test_a_model_below_the_common_eta_that_never_rose_is_named():
    curves = {"70m": _model(None, 5), "410m": _model(2.6, 6), "1b": _model(2.6, 7)}
    a = agreement(curves, resamples=300)
    assert a.contrary == ("70m",) and a.agree is False and a.models == ("70m", "410m", "1b")
    assert "off the common curve: 70m" in a.note
    # a small model that stops above η is no evidence either way
    stops_early = agreement({"70m": _model(None, 5, lowest=2.8), "410m": _model(2.6, 6), "1b": _model(2.6, 7)},
                            resamples=300)
    assert stops_early.contrary == () and stops_early.agree is True


def test_agreement_is_undetermined_without_overlap_or_without_a_rise():
    far = _model(2.6, 8)
    high = Curve.of(far.loss + 3.0, far.value, far.stderr, far.n, "acc", True, 0.25)  # losses 4.8-6.6: no overlap
    a = agreement({"70m": high, "1b": _model(2.6, 9)}, resamples=200)
    assert a.agree is None and a.p_value is None and "fewer than two sizes overlap" in a.note
    flat = agreement({"a": _model(None, 10), "b": _model(None, 11)}, resamples=200)
    assert flat.agree is None and flat.p_value is None and "no curve rises" in flat.note


def test_correlation_hand_computed_and_equal_to_scipy():
    # x = 1, 2, 3; y = 1, 3, 2: Pearson = Σdxdy / sqrt(Σdx² Σdy²) = (−1·−1 + 0 + 1·0) / sqrt(2·2) = 0.5; ranks equal values
    c = loss_correlation([1, 2, 3], [1, 3, 2])
    assert c.n == 3 and c.pearson == pytest.approx(0.5) and c.spearman == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    loss = rng.uniform(2, 4, 50)
    value = 0.25 + np.clip(2.5 - loss, 0, None) + rng.normal(0, 0.02, 50)
    value[3] = np.nan  # a missing value is dropped, and n says so
    c = loss_correlation(loss, value)
    ok = ~np.isnan(value)
    assert c.n == 49
    assert c.spearman == stats.spearmanr(loss[ok], value[ok]).statistic
    assert c.pearson == stats.pearsonr(loss[ok], value[ok]).statistic
    assert c.spearman_p == stats.spearmanr(loss[ok], value[ok]).pvalue
    flat = loss_correlation(loss, np.full(50, 0.25))
    assert flat.n == 50 and math.isnan(flat.spearman) and math.isnan(flat.pearson)
