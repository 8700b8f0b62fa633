"""The prediction test on synthetic sweeps whose truth is known by construction: one where
exp(target_logprob) is each item's probability of an exact match, one where it is not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis import prediction

from conftest import SYNTHETIC_ITEMS, SYNTHETIC_LOSSES, per_token_trend, synthetic_items, write_item_sweep


def test_the_surrogate_recovers_a_jump_it_causes():
    items = synthetic_items(surrogate_predicts=True)
    result = prediction.prediction_test(items, "toy", "exact_match", resamples=200)
    # one model: the loss axis is cut at the median of the checkpoints' losses, chosen before exact match is read
    assert result.mode == "quantile" and result.cut_source == "quantile 0.5 of the losses"
    assert result.cut == pytest.approx(3.0) and result.fitted == 6 and result.held_out == 7
    # the fitted trend is the construction's: slope -2.5 per nat, intercept 4.9 (+ the offsets' mean, ~0)
    assert result.slope == pytest.approx(-2.5, abs=1e-9) and result.intercept == pytest.approx(4.9, abs=0.05)
    # predicted exact match = the expected one, so the error is binomial noise (400 items: sd <= 0.025)
    assert result.surrogate_mae < 0.03
    assert result.baseline_mae > 3 * result.surrogate_mae  # a line through the flat start sees nothing coming
    assert result.departure_low <= result.measured_departure <= result.departure_high
    assert result.surrogate_inside is True and result.baseline_inside is False
    assert result.note.startswith("the surrogate predicts the jump")
    points = result.points
    assert list(points["role"]) == ["fitted"] * result.fitted + ["held out"] * result.held_out
    # the per-checkpoint prediction is the mean of exp(log-prob) over items, by hand at the last checkpoint
    last = items[items["loss"] == SYNTHETIC_LOSSES[-1]]
    assert points["surrogate"].iloc[-1] == pytest.approx(np.exp(last["target_logprob"]).mean(), abs=0.01)


def test_the_surrogate_reports_failure_when_it_does_not_drive_exact_match():
    items = synthetic_items(surrogate_predicts=False)
    result = prediction.prediction_test(items, "toy", "exact_match", resamples=200)
    assert result.measured_departure == pytest.approx(2.5, abs=0.11)  # the step, at the first checkpoint below 2.6
    assert result.departure_low is not None
    # exp(log-prob) rises smoothly from ~0: at the held-out checkpoints it is far from the measured 0.7
    assert result.surrogate_mae > 0.2
    # its departure (2.667, where 0.014 of 400 items clears the minimum effect) sits at the edge of the
    # measured interval, but a prediction of 0.04 where 0.65 is measured is no prediction of the jump
    assert not result.note.startswith("the surrogate predicts the jump")
    assert "misses the jump's size" in result.note or "does not predict the jump" in result.note


def test_a_given_cut_and_an_untestable_one():
    items = synthetic_items(surrogate_predicts=True)
    result = prediction.prediction_test(items, "toy", "exact_match", cut=3.3, resamples=100)
    assert result.cut_source == "given" and result.fitted == int((np.array(SYNTHETIC_LOSSES) > 3.3).sum())
    result = prediction.prediction_test(items, "toy", "exact_match", cut_quantile=0.25, resamples=100)
    assert result.cut == pytest.approx(float(np.quantile(SYNTHETIC_LOSSES, 0.25))) and result.held_out == 4
    result = prediction.prediction_test(items, "toy", "exact_match", cut=3.9, resamples=100)
    assert result.surrogate_mae is None and result.note.startswith("not testable: 1 checkpoints fitted and 12 held out")


def test_no_departure_leaves_only_the_errors_to_compare():
    items = synthetic_items(surrogate_predicts=True)
    items["exact"] = 0.0
    result = prediction.prediction_test(items, "toy", "exact_match", resamples=100)
    assert result.measured_departure is None and result.cut == pytest.approx(float(np.median(SYNTHETIC_LOSSES)))
    assert result.surrogate_inside is None and "no departure" in result.note


FITTED_NUMBERS = ("slope", "intercept", "cut", "fitted", "held_out", "surrogate_departure", "baseline_departure")


def _fitted_numbers(result) -> dict:
    return {**{name: getattr(result, name) for name in FITTED_NUMBERS},
            "surrogate": result.points["surrogate"].tolist(), "baseline": result.points["baseline"].tolist()}


def _scramble_held_out(items: pd.DataFrame, held: pd.Series, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    changed = items.copy()
    changed.loc[held, "exact"] = rng.integers(0, 2, int(held.sum())).astype(float)
    changed.loc[held, "target_logprob"] = -rng.exponential(3.0, int(held.sum()))
    return changed


def test_held_out_values_change_no_fitted_number_quantile_mode():
    """Outcome-blind: exact match and log-probs at the held-out checkpoints can be anything; the cut,
    the fit and the predictions stay the same (only the measured side of the comparison moves)."""
    items = synthetic_items(surrogate_predicts=True)
    before = prediction.prediction_test(items, "toy", "exact_match", resamples=100)
    changed = _scramble_held_out(items, items["loss"] <= before.cut, seed=1)
    after = prediction.prediction_test(changed, "toy", "exact_match", resamples=100)
    assert _fitted_numbers(after) == _fitted_numbers(before)
    assert after.surrogate_mae != before.surrogate_mae  # the comparison did read the new values


def family_items(seed: int = 0) -> pd.DataFrame:
    """Three models whose items succeed with probability exp(target_logprob), the log-prob a function of
    the loss alone (the same items at every checkpoint): the largest reaches the lowest losses."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 0.3, SYNTHETIC_ITEMS)
    tokens = rng.integers(2, 5, SYNTHETIC_ITEMS)
    rows = []
    for name, params, losses in (("small", 1e6, np.linspace(4.0, 3.0, 6)), ("medium", 4e6, np.linspace(4.0, 2.6, 6)),
                                 ("large", 1.6e7, np.linspace(4.0, 2.0, 8))):
        for k, loss in enumerate(np.round(losses, 4)):
            logprob = np.minimum(per_token_trend(loss) + offsets, 0.0) * tokens
            exact = rng.random(SYNTHETIC_ITEMS) < np.exp(logprob)
            rows += [{"checkpoint": f"{name}/step-{k}", "series": f"org/{name}", "params": params, "loss": float(loss),
                      "task": "toy", "doc_id": i, "exact": float(exact[i]), "target_logprob": float(logprob[i]),
                      "target_num_tokens": int(tokens[i])} for i in range(SYNTHETIC_ITEMS)]
    return pd.DataFrame(rows, columns=prediction.ITEM_COLUMNS)


def test_smaller_models_predict_the_largest_and_its_values_change_nothing_fitted():
    items = family_items()
    result = prediction.prediction_test(items, "toy", "exact_match", resamples=200)
    assert result.mode == "largest" and result.cut is None
    assert result.split == "fit every checkpoint of org/small, org/medium; predict org/large"
    assert result.fitted == 12 and result.held_out == 8
    held = result.points[result.points["role"] == "held out"]
    assert set(held["series"]) == {"org/large"}
    assert result.slope == pytest.approx(-2.5, abs=1e-9)
    assert result.surrogate_mae < 0.03 and result.surrogate_inside is True
    changed = _scramble_held_out(items, items["series"] == "org/large", seed=2)
    after = prediction.prediction_test(changed, "toy", "exact_match", resamples=200)
    assert _fitted_numbers(after) == _fitted_numbers(result)
    # --predict quantile on the same items cuts the pooled loss axis instead
    pooled = prediction.prediction_test(items, "toy", "exact_match", mode="quantile", resamples=100)
    assert pooled.mode == "quantile" and pooled.fitted + pooled.held_out == 20


def test_exact_match_metric_choice():
    assert prediction.exact_match_metric("exact_match_strict", {"exact_match_strict", "target_logprob"}) == "exact_match_strict"
    assert prediction.exact_match_metric("bleu", {"bleu", "exact_match"}) == "exact_match"
    assert prediction.exact_match_metric("bleu", {"bleu"}) is None


def test_item_records_are_read_back_from_results_folders(tmp_path):
    items = synthetic_items(surrogate_predicts=True)
    items = items[items["doc_id"] < 20]
    root = write_item_sweep(tmp_path / "results", items)
    read = prediction.read_item_records(root, {"toy"}, "exact_match")
    assert len(read) == len(items) and set(read["task"]) == {"toy"}
    mine = read.sort_values(["loss", "doc_id"]).reset_index(drop=True)
    expected = items.sort_values(["loss", "doc_id"]).reset_index(drop=True)
    for column in ("loss", "exact", "target_logprob", "target_num_tokens", "params"):
        assert mine[column].tolist() == pytest.approx(expected[column].tolist())
    assert set(mine["series"]) == {"org/toy"}
    assert math.isclose(prediction.prediction_test(read, "toy", "exact_match", resamples=100).points["n"].iloc[0], 20)
