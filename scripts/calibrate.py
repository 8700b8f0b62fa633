"""Calibrate the verdicts of harness.analysis.thresholds on simulated sweeps whose truth is known.

Each case draws a sweep (one or several models, each a curve of checkpoints with binomial or
normal noise around a known shape), runs the report's own functions on it, and counts how often
the verdict is the right one. Prints one row per measured rate, with its Monte-Carlo standard
error and the target from docs/statistics.md:

    python scripts/calibrate.py --runs 300 --seed 0

tests/test_calibration.py runs the same cases with fewer runs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from harness.analysis.agreement import agreement
from harness.analysis.thresholds import EMERGED, FROM_START, Curve, emergence_threshold, pool

# --- the simulated sweeps --------------------------------------------------------------------------
CHECKPOINTS = 20  # per model
HIGHEST_LOSS, LOWEST_LOSS = 3.6, 1.8  # the largest model's range; a smaller model stops higher
ETA = 2.6  # the true threshold of the broken-stick cases
SLOPE = 0.5  # accuracy gained per nat below η
MMLU_ITEMS = 14042


def proportion_curve(rng: np.random.Generator, p_at, *, items: int, metric: str = "acc", chance: float | None = 0.25,
                     lowest: float = LOWEST_LOSS, highest: float = HIGHEST_LOSS, checkpoints: int = CHECKPOINTS) -> Curve:
    """One model: ``checkpoints`` losses evenly from ``highest`` to ``lowest``; k ~ Binomial(items, p_at(loss))."""
    loss = np.linspace(highest, lowest, checkpoints)
    value = rng.binomial(items, np.clip(p_at(loss), 0.0, 1.0)) / items
    return Curve.of(loss, value, np.sqrt(value * (1 - value) / (items - 1)), np.full(checkpoints, items), metric,
                    True, chance)


def continuous_curve(rng: np.random.Generator, mean_at, *, stderr: float, lowest: float = LOWEST_LOSS) -> Curve:
    """One model of a continuous metric (correct_choice_prob): normal noise with a known stderr."""
    loss = np.linspace(HIGHEST_LOSS, lowest, CHECKPOINTS)
    value = mean_at(loss) + stderr * rng.standard_normal(CHECKPOINTS)
    return Curve.of(loss, value, np.full(CHECKPOINTS, stderr), np.zeros(CHECKPOINTS), "correct_choice_prob", True, 0.25)


def broken_stick(eta: float, base: float, slope: float = SLOPE):
    return lambda loss: base + slope * np.clip(eta - loss, 0.0, None)


def flat(level: float):
    return lambda loss: np.full(len(loss), level)


def model_ranges(models: int) -> list[float]:
    """The lowest loss of each model, smallest model first: 2.4, 2.1, 1.8 for three."""
    return [LOWEST_LOSS + 0.3 * (models - 1 - s) for s in range(models)]


# --- what is measured ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    case: str
    truth: str
    measure: str
    hits: int
    trials: int
    target: str  # "<= 0.10", ">= 0.95", "0.85-0.95"

    @property
    def rate(self) -> float:
        return self.hits / self.trials if self.trials else float("nan")

    @property
    def mc_stderr(self) -> float:
        return math.sqrt(self.rate * (1 - self.rate) / self.trials) if self.trials else float("nan")

    @property
    def ok(self) -> bool:
        if self.target.startswith("<="):
            return self.rate <= float(self.target[2:])
        if self.target.startswith(">="):
            return self.rate >= float(self.target[2:])
        low, high = (float(v) for v in self.target.split("-"))
        return low <= self.rate <= high


def flat_cases(runs: int, rng: np.random.Generator, resamples: int) -> list[Row]:
    """No emergence anywhere: exact match at 1% of 100 items, 4-choice accuracy a constant 1.2 points
    above chance on an MMLU-sized test, a continuous metric flat at 0.30; three models each."""
    cases = [
        ("flat exact match 1% (n=100), 3 models", "no emergence",
         lambda lowest: proportion_curve(rng, flat(0.01), items=100, metric="exact_match", chance=0.0, lowest=lowest)),
        ("flat 4-choice acc 0.262 (n=14042), 3 models", "above chance from the start",
         lambda lowest: proportion_curve(rng, flat(0.262), items=MMLU_ITEMS, lowest=lowest)),
        ("flat correct_choice_prob 0.30 (se 0.01), 3 models", "no emergence",
         lambda lowest: continuous_curve(rng, flat(0.30), stderr=0.01, lowest=lowest)),
    ]
    rows = []
    for name, truth, draw in cases:
        per_model = pooled = from_start = 0
        for run in range(runs):
            curves = {f"m{s}": draw(lowest) for s, lowest in enumerate(model_ranges(3))}
            verdicts = [emergence_threshold(c, resamples=resamples, seed=run) for c in curves.values()]
            per_model += sum(t.status == EMERGED for t in verdicts)
            from_start += sum(t.status == FROM_START for t in verdicts)
            pooled += emergence_threshold(pool(curves), resamples=resamples, seed=run).status == EMERGED
        rows += [Row(name, truth, "false 'emerged', per model", per_model, 3 * runs, "<= 0.10"),
                 Row(name, truth, "false 'emerged', pooled", pooled, runs, "<= 0.10")]
        if truth.startswith("above chance"):
            rows.append(Row(name, truth, f"'{FROM_START}', per model", from_start, 3 * runs, ">= 0.80"))
    return rows


def broken_stick_cases(runs: int, rng: np.random.Generator, resamples: int) -> list[Row]:
    """One model rising below η = 2.6: accuracy from chance (1000 items), exact match from 0 (100 items)
    and a continuous metric with normal noise."""
    cases = [
        ("broken stick η=2.6, acc from 0.25 (n=1000)", lambda: proportion_curve(rng, broken_stick(ETA, 0.25), items=1000)),
        ("broken stick η=2.6, exact match from 0 (n=100)",
         lambda: proportion_curve(rng, broken_stick(ETA, 0.0, 0.3), items=100, metric="exact_match", chance=0.0)),
        ("broken stick η=2.6, correct_choice_prob from 0.3 (se 0.01)",
         lambda: continuous_curve(rng, broken_stick(ETA, 0.3, 0.2), stderr=0.01)),
    ]
    rows = []
    for name, draw in cases:
        detected = covered = 0
        for run in range(runs):
            t = emergence_threshold(draw(), resamples=resamples, seed=run)
            detected += t.emerged
            covered += t.emerged and t.low <= ETA <= t.high
        rows += [Row(name, "emerged at 2.6", "detected ('emerged')", detected, runs, ">= 0.95"),
                 Row(name, "emerged at 2.6", "90% interval covers η", covered, detected, "0.85-0.95")]
    return rows


def agreement_cases(runs: int, rng: np.random.Generator, resamples: int) -> list[Row]:
    """Several models, 20 checkpoints of 1000 items each: a shared η, two η 0.7 nats apart, and a model
    that goes below the others' η without rising."""
    def shared():
        return {f"m{s}": proportion_curve(rng, broken_stick(ETA, 0.25), items=1000, lowest=lowest)
                for s, lowest in enumerate(model_ranges(3))}

    def apart():
        return {"early": proportion_curve(rng, broken_stick(3.0, 0.25), items=1000),
                "late": proportion_curve(rng, broken_stick(2.3, 0.25), items=1000)}

    def one_flat():
        curves = {f"m{s}": proportion_curve(rng, broken_stick(ETA, 0.25), items=1000) for s in range(2)}
        curves["flat"] = proportion_curve(rng, flat(0.25), items=1000)
        return curves

    cases = [("3 models share η=2.6", "agree", shared, True),
             ("2 models, η 3.0 and 2.3", "disagree", apart, False),
             ("2 models at η=2.6, 1 flat to loss 1.8", "disagree, 'flat' named", one_flat, False)]
    rows = []
    for name, truth, draw, expected in cases:
        right = named = 0
        for run in range(runs):
            a = agreement(draw(), resamples=resamples, seed=run)
            right += a.agree is expected
            named += "flat" in a.contrary
        rows.append(Row(name, truth, f"'{'agree' if expected else 'disagree'}'", right, runs, ">= 0.80"))
        if "flat" in truth:
            rows.append(Row(name, truth, "the flat model is named", named, runs, ">= 0.80"))
    return rows


def calibration_table(runs: int, seed: int, resamples: int, coverage_runs: int | None = None) -> list[Row]:
    rng = np.random.default_rng(seed)
    return (flat_cases(runs, rng, resamples)
            + broken_stick_cases(coverage_runs or runs, rng, resamples)
            + agreement_cases(runs, rng, resamples))


def markdown(rows: list[Row]) -> str:
    lines = ["| case | truth | measure | rate | MC stderr | target | |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.truth} | {r.measure} | {r.rate:.3f} ({r.hits}/{r.trials}) | {r.mc_stderr:.3f} "
                     f"| {r.target} | {'ok' if r.ok else 'FAIL'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="simulated sweeps per case (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per fit (default 1000, as the report)")
    args = parser.parse_args()

    start = time.perf_counter()
    rows = calibration_table(args.runs, args.seed, args.resamples)
    print(markdown(rows))
    print(f"\n{args.runs} runs per case, seed {args.seed}, {args.resamples} resamples; {time.perf_counter() - start:.0f} s on "
          f"{platform.machine()} ({os.cpu_count()} CPUs visible), Python {platform.python_version()}, NumPy {np.__version__}")
    raise SystemExit(0 if all(r.ok for r in rows) else 1)
