"""The verdicts of harness.analysis.thresholds and agreement are calibrated: on simulated sweeps whose truth
is known, false "emerged" stays at or below its target (flat curves, and smooth rises: linear, the mirage),
the 90% interval of η covers the truth 85–95% of the time, clear thresholds are found, sizes on one curve
are not called "disagree", a size shifted by 0.5 nats is, and a 57-subject report of flat subjects holds
no false "emerged".

The cases and simulators are those of scripts/calibrate.py (which prints the same table for 200+ runs;
its output is in docs/statistics.md). Seeded; fewer runs here to stay near a minute.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "calibrate.py"
RUNS = 60  # Monte-Carlo stderr ≤ 0.065 on a rate; the targets sit far from the measured rates
COVERAGE_RUNS = 100  # per case: stderr 0.03 on a 90% coverage; checked against the 85–95% band widened by 1 stderr
AGREEMENT_RUNS = 10  # the agreement test is the costly part (a bootstrap of a refit per resample)
RESAMPLES = 200


def _load():
    spec = importlib.util.spec_from_file_location("calibrate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibrate"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


calibrate = _load()


def _check(rows) -> None:
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + calibrate.markdown(failed)


@pytest.fixture(scope="module")
def flat_rows():
    return calibrate.flat_cases(RUNS, np.random.default_rng(101), RESAMPLES)


def test_flat_curves_are_not_called_emerged_pooled_or_per_model(flat_rows):
    false_emerged = [r for r in flat_rows if r.measure.startswith("false 'emerged'")]
    assert {r.measure for r in false_emerged} == {"false 'emerged', per model", "false 'emerged', pooled"}
    assert len(false_emerged) == 6 and all(r.target == "<= 0.10" for r in false_emerged)
    _check(false_emerged)


def test_flat_above_chance_is_never_emerged_and_mostly_from_the_start(flat_rows):
    mmlu = [r for r in flat_rows if r.case.startswith("flat 4-choice acc 0.262")]
    assert all(r.hits == 0 for r in mmlu if r.measure.startswith("false 'emerged'"))
    _check(mmlu)


def test_a_clear_broken_stick_is_found_and_its_interval_covers_eta():
    rows = calibrate.broken_stick_cases(COVERAGE_RUNS, np.random.default_rng(202), RESAMPLES)
    assert [r.measure for r in rows].count("90% interval covers η") == 3
    detected = [r for r in rows if r.measure.startswith("detected")]
    _check(detected)
    for r in rows:
        # at least 85% less one Monte-Carlo stderr (≈ 0.03 here); above 95% is conservative, and exact match
        # from 0 sits there among the curves the shape test calls emerged (0.97, docs/statistics.md)
        if r.measure == "90% interval covers η":
            assert 0.85 - r.mc_stderr <= r.rate <= 0.98, calibrate.markdown([r])


def test_agreement_is_right_when_eta_is_shared_and_when_it_differs():
    # (three sizes sharing η: test_a_shared_broken_stick_emerges_and_a_shifted_size_disagrees)
    rows = calibrate.agreement_cases(AGREEMENT_RUNS, np.random.default_rng(303), RESAMPLES,
                                     only=("2 models, η 3.0 and 2.3", "2 models at η=2.6, 1 flat to loss 1.8"))
    assert {r.case for r in rows} == {"2 models, η 3.0 and 2.3", "2 models at η=2.6, 1 flat to loss 1.8"}
    _check(rows)


def test_a_row_that_misses_its_target_is_reported_as_failing():
    row = calibrate.Row("case", "truth", "measure", hits=12, trials=100, target="<= 0.10")
    assert row.rate == 0.12 and row.mc_stderr == pytest.approx((0.12 * 0.88 / 100) ** 0.5) and not row.ok
    assert calibrate.Row("c", "t", "m", 84, 100, "0.85-0.95").ok is False
    assert calibrate.Row("c", "t", "m", 85, 100, "0.85-0.95").ok is True
    assert calibrate.Row("c", "t", "m", 94, 100, ">= 0.95").ok is False


def _scenario(name: str):
    return next(s for s in calibrate.SCENARIOS if s.name.startswith(name))


def test_a_linear_rise_is_a_smooth_rise_and_its_sizes_agree():
    rows = calibrate.scenario_rows(_scenario("acc linear in loss"), AGREEMENT_RUNS, 404, RESAMPLES)
    assert [r.measure for r in rows][-2:] == ["false 'emerged', pooled", "false 'disagree' (one curve)"]
    _check(rows)


def test_the_mirage_is_not_called_emerged():
    rows = calibrate.scenario_rows(_scenario("mirage: exact match"), AGREEMENT_RUNS, 505, RESAMPLES)
    assert all(r.measure.startswith("false") for r in rows)
    # 10 runs: one false call in a row is within noise of a 5% rate; the totals must stay at the target
    emerged = [r for r in rows if r.measure.startswith("false 'emerged'")]
    assert sum(r.hits for r in emerged) <= 0.10 * sum(r.trials for r in emerged)
    assert rows[-1].hits <= 1


def test_a_shared_broken_stick_emerges_and_a_shifted_size_disagrees():
    rows = calibrate.scenario_rows(_scenario("broken stick η=2.6, slope 0.3"), AGREEMENT_RUNS, 606, RESAMPLES)
    pooled = [r for r in rows if r.measure in ("'emerged', pooled", "false 'disagree' (one curve)")]
    assert len(pooled) == 2
    _check(pooled)
    shifted = calibrate.scenario_rows(_scenario("broken stick η=2.6, medium size shifted"), AGREEMENT_RUNS, 707, RESAMPLES)
    assert shifted[0].measure == "'disagree'"
    _check(shifted)


def test_a_report_of_57_flat_subjects_holds_no_false_emerged():
    rows = calibrate.mmlu_rows(3, 808, RESAMPLES, checkpoints=10)
    assert rows[0].hits == 0 and rows[1].hits <= 1
