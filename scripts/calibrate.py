"""Calibrate the verdicts of harness.analysis.thresholds on simulated sweeps whose truth is known.

Each case draws a sweep (one or several models, each a curve of checkpoints with binomial or
normal noise around a known shape), runs the report's own functions on it, and counts how often
the verdict is the right one. Prints one row per measured rate, with its Monte-Carlo standard
error and the target from docs/statistics.md:

    python scripts/calibrate.py --runs 300 --seed 0

tests/analysis/test_calibration.py runs the same cases with fewer runs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import zlib
from dataclasses import dataclass

import numpy as np

from harness.analysis.agreement import agreement
from harness.analysis.agreement import with_q as with_agreement_q
from harness.analysis.curves import Curve, pool
from harness.analysis.shapes import benjamini_hochberg
from harness.analysis.thresholds import EMERGED, FROM_START, emergence_threshold, with_q

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
        if self.target == "report":  # measured and shown, no target
            return True
        if self.trials == 0:
            return True  # nothing to measure (no curve was called emerged): shown as n/a, not as a pass
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
            verdicts = [emergence_threshold(c, resamples=resamples, seed=run, departure_interval=False) for c in curves.values()]
            per_model += sum(t.status == EMERGED for t in verdicts)
            from_start += sum(t.status == FROM_START for t in verdicts)
            pooled += emergence_threshold(pool(curves), resamples=resamples, seed=run, departure_interval=False).status == EMERGED
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
            t = emergence_threshold(draw(), resamples=resamples, seed=run, departure_interval=False)
            detected += t.emerged
            covered += t.emerged and t.low <= ETA <= t.high
        rows += [Row(name, "emerged at 2.6", "detected ('emerged')", detected, runs, ">= 0.80"),
                 Row(name, "emerged at 2.6", "90% interval covers η", covered, detected, "0.85-0.95")]
    return rows


def agreement_cases(runs: int, rng: np.random.Generator, resamples: int, only: tuple[str, ...] | None = None) -> list[Row]:
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
        if only is not None and name not in only:
            continue
        right = named = 0
        for run in range(runs):
            a = agreement(draw(), resamples=resamples, seed=run)
            right += a.agree is expected
            named += "flat" in a.contrary
        rows.append(Row(name, truth, f"'{'agree' if expected else 'disagree'}'", right, runs, ">= 0.80"))
        if "flat" in truth:
            rows.append(Row(name, truth, "the flat model is named", named, runs, ">= 0.80"))
    return rows


# --- the issue-20 sweeps: three sizes, checkpoints log-spaced in step (they crowd near each final loss) ----
FINALS = (2.6, 2.3, 2.0)  # lowest loss of the small, medium and large size
SIZES = ("small", "medium", "large")
MMLU_SUBJECT_ITEMS = (100, 135, 152, 100, 265, 144, 100, 100, 100, 173, 102, 100, 235, 114, 145, 378, 126, 100, 310,
                      203, 100, 165, 198, 193, 390, 270, 238, 151, 545, 216, 204, 237, 223, 131, 121, 108, 163, 112,
                      103, 234, 100, 783, 346, 895, 306, 311, 324, 282, 1534, 272, 612, 110, 245, 201, 100, 166, 171)


def sweep_losses(final: float, checkpoints: int, start: float = 3.8) -> np.ndarray:
    """Losses at steps log-spaced from 1e3 to 1.43e5 under a power law L(step) ∝ step^-0.5, from ``start`` to ``final``."""
    steps = np.geomspace(1e3, 1.43e5, checkpoints)
    u = (steps ** -0.5 - steps[-1] ** -0.5) / (steps[0] ** -0.5 - steps[-1] ** -0.5)
    return final + (start - final) * u


def sizes_on(p_at, *, items: int = 1000, checkpoints: int = 10, finals=FINALS, shift=(0.0, 0.0, 0.0),
             metric: str = "acc", chance: float | None = 0.25):
    """Three sizes of binomial accuracy on one curve of the loss ``p_at``; size s reaches the curve's values
    at a loss higher by ``shift[s]`` (its curve is p_at(L − shift))."""
    def draw(rng):
        out = {}
        for s, final in enumerate(finals):
            loss = sweep_losses(final, checkpoints)
            value = rng.binomial(items, np.clip(p_at(loss - shift[s]), 0, 1)) / items
            out[SIZES[s]] = Curve.of(loss, value, np.sqrt(value * (1 - value) / (items - 1)),
                                     np.full(checkpoints, items), metric, True, chance)
        return out
    return draw


def mirage(shift=(0.0, 0.0, 0.0), items: int = 300, tokens: int = 5):
    """Schaeffer et al.'s mirage: the per-token log-prob of item i is min(m(L) + o_i, 0), m linear in loss,
    o_i ~ N(0, 0.3) fixed across checkpoints; exact match of a ``tokens``-token answer ~ Bernoulli(exp(tokens·logprob))."""
    def draw(rng):
        offsets = rng.normal(0, 0.3, items)
        out = {}
        for s, final in enumerate(FINALS):
            loss = sweep_losses(final, 10)
            m = -0.21 - 0.65 * (loss - shift[s] - 2.0)
            logprob = np.minimum(m[:, None] + offsets[None, :] + 0.05 * rng.standard_normal((len(loss), items)), 0)
            value = (rng.random(logprob.shape) < np.exp(tokens * logprob)).mean(axis=1)
            out[SIZES[s]] = Curve.of(loss, value, np.sqrt(value * (1 - value) / (items - 1)), np.full(len(loss), items),
                                     "exact_match", True, 0.0)
        return out
    return draw


def linear(low: float = 0.25, gain: float = 0.20):
    return lambda loss: low + gain * (3.8 - loss) / 1.8


def logistic(centre: float = 2.8, width: float = 0.35, low: float = 0.25, high: float = 0.60):
    return lambda loss: low + (high - low) / (1 + np.exp((loss - centre) / width))


def few_checkpoints(eta: float = 2.2, slope: float = 0.4, finals=(2.35, 2.0, 1.8), checkpoints: int = 5):
    """The issue's sparse design: a broken stick at ``eta``, ``checkpoints`` per size (5 in the issue) from loss
    3.4, item counts drawn per checkpoint from {150, 400, 1500} (subsampled evals)."""
    def draw(rng):
        out = {}
        for s, final in enumerate(finals):
            loss = sweep_losses(final, checkpoints, start=3.4)
            items = rng.choice([150, 400, 1500], size=checkpoints)
            value = rng.binomial(items, np.clip(0.25 + slope * np.clip(eta - loss, 0, None), 0, 1)) / items
            out[SIZES[s]] = Curve.of(loss, value, np.sqrt(value * (1 - value) / (items - 1)), items, "acc", True, 0.25)
        return out
    return draw


@dataclass(frozen=True)
class Scenario:
    name: str
    truth: str  # "flat", "flat above chance", "smooth", "threshold", "shifted"
    draw: object  # rng -> {size: Curve}
    eta: float | None = None  # the true η of a threshold
    emerged_max: float = 0.10  # target on false "emerged" for smooth truths
    shifted: str | None = None  # the size whose curve is shifted


SCENARIOS = (
    Scenario("flat exact match 0.5% (n=200)", "flat", sizes_on(lambda L: 0.005 + 0 * L, items=200, metric="exact_match", chance=0.0)),
    Scenario("flat 4-choice acc 0.27 (n=2000), 10 ckpts/size", "flat above chance", sizes_on(lambda L: 0.27 + 0 * L, items=2000)),
    Scenario("flat 4-choice acc 0.27 (n=2000), 40 ckpts/size", "flat above chance",
             sizes_on(lambda L: 0.27 + 0 * L, items=2000, checkpoints=40)),
    Scenario("acc linear in loss 0.25→0.45 (n=1000)", "smooth", sizes_on(linear())),
    Scenario("MMLU-sized acc linear 0.25→0.27 (n=14042)", "smooth", sizes_on(linear(gain=0.02), items=MMLU_ITEMS)),
    Scenario("mirage: exact match = exp(5 × per-token log-prob linear in loss)", "smooth", mirage()),
    Scenario("gentle logistic (centre 2.8, width 0.35)", "smooth", sizes_on(logistic()), emerged_max=0.30),
    Scenario("broken stick η=2.6, slope 0.3 (n=1000), finals 2.2/2.0/1.8", "threshold",
             sizes_on(broken_stick(2.6, 0.25, 0.3), finals=(2.2, 2.0, 1.8)), eta=2.6),
    Scenario("broken stick η=2.6, slope 0.5, 20 ckpts/size, finals 2.2/2.0/1.8", "threshold",
             sizes_on(broken_stick(2.6, 0.25, 0.5), checkpoints=20, finals=(2.2, 2.0, 1.8)), eta=2.6),
    Scenario("linear, medium size shifted +0.5 nats", "shifted", sizes_on(linear(), shift=(0, 0.5, 0)), shifted="medium"),
    Scenario("broken stick η=2.6, medium size shifted +0.5 nats", "shifted",
             sizes_on(broken_stick(2.6, 0.25, 0.3), finals=(2.2, 2.0, 1.8), shift=(0, 0.5, 0)), shifted="medium"),
    Scenario("mirage, medium size shifted +0.5 nats", "shifted", mirage(shift=(0, 0.5, 0)), shifted="medium"),
    Scenario("gentle logistic, medium size shifted +0.5 nats", "shifted", sizes_on(logistic(), shift=(0, 0.5, 0)),
             shifted="medium"),
    Scenario("broken stick η=2.2, 5 ckpts/size, n in {150, 400, 1500}, finals 2.35/2.0/1.8", "threshold",
             few_checkpoints(), eta=2.2),
    # the same sparse design with more checkpoints: how many a sweep needs before a threshold can be told
    # from a smooth rise (the 5-checkpoint case has 5 points below η in all, none of them on the small size)
    Scenario("broken stick η=2.2, 7 ckpts/size, n in {150, 400, 1500}, finals 2.35/2.0/1.8", "threshold",
             few_checkpoints(checkpoints=7), eta=2.2),
    Scenario("broken stick η=2.2, 10 ckpts/size, n in {150, 400, 1500}, finals 2.35/2.0/1.8", "threshold",
             few_checkpoints(checkpoints=10), eta=2.2),
)


def scenario_rows(scenario: Scenario, runs: int, seed: int, resamples: int) -> list[Row]:
    """Runs ``scenario`` ``runs`` times through the report's functions (each size, the pooled curve, the
    agreement test) and returns the rates its truth calls for."""
    rng = np.random.default_rng([seed, zlib.crc32(scenario.name.encode())])
    per = {s: {"emerged": 0, "from_start": 0, "covered": 0} for s in SIZES}
    pooled_emerged = pooled_from_start = pooled_covered = disagree = shifted_named = other_named = shift_covered = 0
    shift_tested = 0
    for run in range(runs):
        curves = scenario.draw(rng)
        verdicts = {s: emergence_threshold(c, resamples=resamples, seed=run, departure_interval=False) for s, c in curves.items()}
        whole = emergence_threshold(pool(curves), resamples=resamples, seed=run, departure_interval=False)
        for s, t in verdicts.items():
            per[s]["emerged"] += t.emerged
            per[s]["from_start"] += t.status == FROM_START
            per[s]["covered"] += t.emerged and scenario.eta is not None and t.low <= scenario.eta <= t.high
        pooled_emerged += whole.emerged
        pooled_from_start += whole.status == FROM_START
        pooled_covered += whole.emerged and scenario.eta is not None and whole.low <= scenario.eta <= whole.high
        if scenario.truth in ("smooth", "threshold", "shifted"):
            a = agreement(curves, resamples=resamples, seed=run, thresholds=verdicts, pooled=whole)
            disagree += a.agree is False
            if scenario.shifted:
                shifted_named += scenario.shifted in a.contrary
                other_named += any(s != scenario.shifted for s in a.contrary)
                if a.shift is not None:
                    shift_tested += 1
                    shift_covered += a.shift_low <= 0.5 <= a.shift_high
    n, name, truth = runs, scenario.name, scenario.truth
    each = sum(p["emerged"] for p in per.values())
    rows = []
    if truth.startswith("flat"):
        rows += [Row(name, truth, "false 'emerged', per size", each, 3 * n, "<= 0.05"),
                 Row(name, truth, "false 'emerged', pooled", pooled_emerged, n, "<= 0.05")]
        if truth == "flat above chance":
            rows += [Row(name, truth, f"'{FROM_START}', per size", sum(p["from_start"] for p in per.values()), 3 * n, ">= 0.80"),
                     Row(name, truth, f"'{FROM_START}', pooled", pooled_from_start, n, ">= 0.80")]
    elif truth == "smooth":
        target = f"<= {scenario.emerged_max:.2f}"
        rows += [Row(name, truth, f"false 'emerged', {s}", p["emerged"], n, target) for s, p in per.items()]
        rows += [Row(name, truth, "false 'emerged', pooled", pooled_emerged, n, target),
                 Row(name, truth, "false 'disagree' (one curve)", disagree, n, "<= 0.10")]
    elif truth == "threshold":
        rows += [Row(name, truth, "'emerged', pooled", pooled_emerged, n, ">= 0.80"),
                 Row(name, truth, "90% interval covers η, pooled (among emerged)", pooled_covered, pooled_emerged, "0.85-0.95")]
        rows += [Row(name, truth, f"'emerged', {s}", p["emerged"], n, "report") for s, p in per.items()]
        rows += [Row(name, truth, f"90% interval covers η, {s} (among emerged)", p["covered"], p["emerged"], "0.85-0.95")
                 for s, p in per.items()]
        rows.append(Row(name, truth, "false 'disagree' (one curve)", disagree, n, "<= 0.10"))
    else:
        rows += [Row(name, truth, "'disagree'", disagree, n, ">= 0.80"),
                 Row(name, truth, f"the shifted size ({scenario.shifted}) named", shifted_named, n, "report"),
                 Row(name, truth, "an unshifted size named", other_named, n, "<= 0.10"),
                 Row(name, truth, "largest shift's 90% interval covers 0.5", shift_covered, shift_tested, "report")]
    return rows


def mmlu_rows(runs: int, seed: int, resamples: int, checkpoints: int = 20) -> list[Row]:
    """57 flat MMLU-sized subjects at chance × 3 sizes = one report: how many reports hold a false
    "emerged" (any curve, after the report's Benjamini-Hochberg step) and false "disagree"s per report."""
    rng = np.random.default_rng([seed, 57])
    any_emerged = disagree_total = 0
    for run in range(runs):
        pooled_p, per_p, agree_p = [], [], []
        for items in MMLU_SUBJECT_ITEMS:
            curves = sizes_on(lambda L: 0.25 + 0 * L, items=items, checkpoints=checkpoints)(rng)
            verdicts = {s: emergence_threshold(c, resamples=resamples, seed=run, departure_interval=False) for s, c in curves.items()}
            whole = emergence_threshold(pool(curves), resamples=resamples, seed=run, departure_interval=False)
            a = agreement(curves, resamples=resamples, seed=run, thresholds=verdicts, pooled=whole)
            pooled_p.append(whole)
            per_p.append(verdicts)
            agree_p.append(a)
        q = benjamini_hochberg([np.nan if t.shape_p is None else t.shape_p for t in pooled_p])
        final = [with_q(t, None if np.isnan(v) else float(v)) for t, v in zip(pooled_p, q)]
        for s in SIZES:
            qs = benjamini_hochberg([np.nan if v[s].shape_p is None else v[s].shape_p for v in per_p])
            final += [with_q(v[s], None if np.isnan(x) else float(x)) for v, x in zip(per_p, qs)]
        any_emerged += any(t.emerged for t in final)
        qa = benjamini_hochberg([np.nan if a.p_value is None else a.p_value for a in agree_p])
        disagree_total += sum(with_agreement_q(a, None if np.isnan(x) else float(x)).agree is False
                              for a, x in zip(agree_p, qa))
    name = f"57 flat MMLU subjects at chance × 3 sizes, {checkpoints} ckpts/size (one report per run)"
    return [Row(name, "flat", "reports with any false 'emerged'", any_emerged, runs, "<= 0.05"),
            Row(name, "flat", "false 'disagree' per report (mean; hits = total)", disagree_total, runs, "<= 0.50")]


def calibration_table(runs: int, seed: int, resamples: int, coverage_runs: int | None = None,
                      scenarios: tuple[Scenario, ...] = SCENARIOS, mmlu_runs: int | None = None) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = (flat_cases(runs, rng, resamples)
            + broken_stick_cases(coverage_runs or runs, rng, resamples)
            + agreement_cases(runs, rng, resamples))
    for scenario in scenarios:
        rows += scenario_rows(scenario, runs, seed, resamples)
    return rows + (mmlu_rows(runs if mmlu_runs is None else mmlu_runs, seed, resamples) if mmlu_runs != 0 else [])


def markdown(rows: list[Row]) -> str:
    lines = ["| case | truth | measure | rate | MC stderr | target | |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.trials == 0:  # e.g. a coverage among curves called emerged, when none was
            lines.append(f"| {r.case} | {r.truth} | {r.measure} | n/a (0/0) | | {r.target} | n/a |")
            continue
        lines.append(f"| {r.case} | {r.truth} | {r.measure} | {r.rate:.3f} ({r.hits}/{r.trials}) | {r.mc_stderr:.3f} "
                     f"| {r.target} | {'' if r.target == 'report' else ('ok' if r.ok else 'FAIL')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="simulated sweeps per case (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per fit (default 1000, as the report)")
    parser.add_argument("--only", nargs="*", help="run only the scenarios whose name contains one of these strings "
                                                   "('mmlu' for the 57-subject reports, 'legacy' for the single-curve cases)")
    args = parser.parse_args()

    start = time.perf_counter()
    if args.only:
        def keep(name):
            return any(k.lower() in name.lower() for k in args.only)

        rows = []
        if any(k == "legacy" for k in args.only):
            rows += calibration_table(args.runs, args.seed, args.resamples, scenarios=(), mmlu_runs=0)
        for scenario in SCENARIOS:
            if keep(scenario.name):
                rows += scenario_rows(scenario, args.runs, args.seed, args.resamples)
        if any(k.lower() == "mmlu" for k in args.only):
            rows += mmlu_rows(args.runs, args.seed, args.resamples)
    else:
        rows = calibration_table(args.runs, args.seed, args.resamples)
    print(markdown(rows))
    print(f"\n{args.runs} runs per case, seed {args.seed}, {args.resamples} resamples; {time.perf_counter() - start:.0f} s on "
          f"{platform.machine()} ({os.cpu_count()} CPUs visible), Python {platform.python_version()}, NumPy {np.__version__}")
    raise SystemExit(0 if all(r.ok for r in rows) else 1)
