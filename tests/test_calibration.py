"""The verdicts of harness.analysis.thresholds are calibrated: on simulated sweeps whose truth is known, false
"emerged" stays at or below 10%, the 90% interval of η covers the truth 85–95% of the time, clear
rises are found, and "the sizes agree" is right at least 80% of the time either way.

The cases and simulators are those of scripts/calibrate.py (which prints the same table for more
runs; its output is in docs/statistics.md). Seeded; fewer runs here to stay under a minute, with more
runs where the target is a two-sided band (the coverage).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate.py"
RUNS = 100  # Monte-Carlo stderr ≤ 0.05 on a rate; the targets sit far from the measured rates
COVERAGE_RUNS = 400  # per case: stderr 0.015 on a 90% coverage inside an 85–95% band
RESAMPLES = 300


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
    assert all(r.trials >= 0.95 * COVERAGE_RUNS for r in rows)
    _check(rows)


def test_agreement_is_right_when_eta_is_shared_and_when_it_differs():
    rows = calibrate.agreement_cases(RUNS, np.random.default_rng(303), RESAMPLES)
    assert {r.case for r in rows} == {"3 models share η=2.6", "2 models, η 3.0 and 2.3",
                                      "2 models at η=2.6, 1 flat to loss 1.8"}
    _check(rows)


def test_a_row_that_misses_its_target_is_reported_as_failing():
    row = calibrate.Row("case", "truth", "measure", hits=12, trials=100, target="<= 0.10")
    assert row.rate == 0.12 and row.mc_stderr == pytest.approx((0.12 * 0.88 / 100) ** 0.5) and not row.ok
    assert calibrate.Row("c", "t", "m", 84, 100, "0.85-0.95").ok is False
    assert calibrate.Row("c", "t", "m", 85, 100, "0.85-0.95").ok is True
    assert calibrate.Row("c", "t", "m", 94, 100, ">= 0.95").ok is False
