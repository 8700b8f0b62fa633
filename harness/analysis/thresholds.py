"""Below which pre-training loss does an ability appear? Pure functions over checkpoints' curves.

A curve is the metric of one task at many checkpoints (one model, or several pooled), each with its
pre-training loss, standard error and item count. Every computation runs in the metric's better
direction (``y``: the value, 1 − value for a lower-is-better proportion, −value for a lower-is-better
continuous metric), so "above the reference" always means "better". The methods, their reasons and
their calibration on simulated sweeps are in ``docs/statistics.md``; in one screen:

- noise of a checkpoint: binomial at its item count for proportions (exact match, accuracy), else
  normal with its standard error (estimated from the fit's residuals when the table has none);
- reference: the plateau of the highest-loss checkpoints, an estimate with its own noise (item
  counts summed); for multiple-choice accuracy max(chance, plateau);
- a checkpoint *departs* when a one-sided two-sample test against the reference (Fisher's exact
  test of two proportions; a z test of the difference for continuous metrics) rejects at 5% and
  its gain clears a minimum effect (3 items and one percentage point for proportions);
- status: ``emerged`` when the three lowest-loss checkpoints depart, so a flat curve is called
  emerged at most 5% of the time whatever its number of checkpoints (the lowest checkpoint alone
  must reject at 5%);
- η: least squares of y = c + a·max(η − L, 0), a ≥ 0, with a 90% interval from a parametric
  bootstrap of the fitted curve with each checkpoint's own noise (hull of the percentile and the
  profile intervals);
- agreement of models: one shared η against one η per model, a likelihood-ratio-type statistic
  with a parametric-bootstrap null; a model that went well below the pooled interval without
  emerging is named and counts against agreement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

EMERGED = "emerged"
NO_EMERGENCE = "no emergence"
FROM_START = "above reference from the start"
INSUFFICIENT = "insufficient data"
STATUSES = (EMERGED, NO_EMERGENCE, FROM_START, INSUFFICIENT)

# Metrics whose value is a mean of per-item 0/1 scores: binomial noise at the item count. Every other
# metric (correct_choice_prob, brier_score, bleu) is continuous. "<metric>_macro" is its base metric.
PROPORTION_METRICS = frozenset({
    "acc", "acc_norm", "acc_bytes",
    "exact_match", "exact_match_strict", "exact_match_flexible", "exact_match_numeric",
    "numeric_match",
})
# Multiple-choice accuracy: guessing gives the random baseline, so the reference is never below it.
# Exact match has a baseline of 0 in the table, which no model sits at by guessing; it gets the plateau.
CHANCE_REFERENCE_METRICS = frozenset({"acc", "acc_norm", "acc_bytes"})

ONE_SIDED_ALPHA = 0.05  # level of each departure test, and so the bound on false "emerged" per curve
MIN_EXCESS_ITEMS = 3  # a proportion departs only with at least this many items above the reference...
MIN_GAIN = 0.01  # ...and at least one percentage point above it
MIN_DEPARTURE_POINTS = 3  # lowest-loss checkpoints that must all depart for "emerged"
MIN_CHECKPOINTS = 5  # fewer usable checkpoints: insufficient data
MIN_ITEMS = 20  # median items per checkpoint below this: insufficient data
PLATEAU_FRACTION = 0.25  # the plateau is drawn from this share of the highest-loss checkpoints...
PLATEAU_MIN_POINTS = 3  # ...and at least this many
GRID_POINTS = 400  # η candidates across the observed losses (refined for the point estimate)
INTERVAL_LEVEL = 0.90
AGREEMENT_ALPHA = 0.05  # "disagree" when the shared-η fit is rejected at this level
DETECTABLE_Z = 3.0  # a non-emerged model is contrary when the pooled fit predicts a rise this many se's high


@dataclass(frozen=True, eq=False)
class Curve:
    """One metric at several checkpoints; arrays are aligned, one entry per checkpoint."""

    loss: np.ndarray
    value: np.ndarray
    stderr: np.ndarray  # nan where the table has none
    n: np.ndarray  # items behind each value (0 where unknown)
    metric: str
    higher_is_better: bool
    random_baseline: float | None = None

    @classmethod
    def of(cls, loss, value, stderr, n, metric: str, higher_is_better: bool,
           random_baseline: float | None = None) -> Curve:
        as_float = lambda xs: np.asarray(xs, dtype=float).reshape(-1)
        n_arr = np.nan_to_num(as_float(n), nan=0.0).astype(int)
        curve = cls(as_float(loss), as_float(value), as_float(stderr), n_arr, metric, bool(higher_is_better),
                    None if random_baseline is None or np.isnan(random_baseline) else float(random_baseline))
        if not (len(curve.loss) == len(curve.value) == len(curve.stderr) == len(curve.n)):
            raise ValueError("loss, value, stderr and n must have one entry per checkpoint")
        return curve

    def take(self, index: np.ndarray) -> Curve:
        return Curve(self.loss[index], self.value[index], self.stderr[index], self.n[index],
                     self.metric, self.higher_is_better, self.random_baseline)

    def __len__(self) -> int:
        return len(self.loss)


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


@dataclass(frozen=True)
class BrokenStick:
    eta: float  # the loss where the rise starts
    slope: float  # gain per nat of loss below η (≥ 0), in the better direction
    level: float  # fitted value above η, in the better direction
    sse: float


@dataclass(frozen=True)
class Threshold:
    """The answer for one curve. ``eta``/``low``/``high``/``slope`` are None unless ``status == EMERGED``."""

    metric: str
    checkpoints: int
    reference: Reference | None  # None only with insufficient data
    status: str  # one of STATUSES
    departure_loss: float | None  # highest loss below which every checkpoint departs (None: none does)
    eta: float | None
    low: float | None
    high: float | None
    slope: float | None  # metric units per nat below η (negative for a lower-is-better metric)
    note: str  # a caveat or the reason for the status ("" when none)

    @property
    def emerged(self) -> bool:
        return self.status == EMERGED

    def describe(self) -> str:
        if self.status != EMERGED or self.eta is None:
            return f"{self.status} ({self.note})" if self.note else self.status
        text = f"η = {self.eta:.3f} [{self.low:.3f}, {self.high:.3f}]"
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class Agreement:
    agree: bool | None  # None when undetermined (fewer than two models emerged and none is contrary)
    p_value: float | None  # of "one shared η" against "one η per model"; None when not tested
    models: tuple[str, ...]  # emerged models, the ones compared by the test
    contrary: tuple[str, ...]  # models well below the pooled interval that never emerged
    note: str
    shared_eta: float | None = None  # η of the shared fit over ``models``


# --- curves in the better direction ------------------------------------------------------------------

def base_metric(metric: str) -> str:
    return metric.removesuffix("_macro")


def is_proportion(metric: str) -> bool:
    return base_metric(metric) in PROPORTION_METRICS


@dataclass(frozen=True, eq=False)
class _Points:
    """A curve ready for tests and fits: finite values, the better direction, each point's noise."""

    loss: np.ndarray
    y: np.ndarray  # value in the better direction
    se: np.ndarray  # standard error of y (binomial: at the observed proportion)
    n: np.ndarray  # items; > 0 everywhere when ``binomial``
    binomial: bool
    index: np.ndarray  # position of each point in the curve it came from
    se_from_residuals: bool = False

    @property
    def k(self) -> np.ndarray:
        return np.round(self.y * self.n)

    def take(self, index: np.ndarray) -> _Points:
        return _Points(self.loss[index], self.y[index], self.se[index], self.n[index], self.binomial,
                       self.index[index], self.se_from_residuals)

    def __len__(self) -> int:
        return len(self.loss)


def _to_better(curve: Curve, values: np.ndarray | float) -> np.ndarray | float:
    if curve.higher_is_better:
        return values
    return 1.0 - values if is_proportion(curve.metric) else -values


_to_metric = _to_better  # the map is its own inverse


def _slope_to_metric(curve: Curve, slope: float) -> float:
    return slope if curve.higher_is_better else -slope


def _points(curve: Curve) -> _Points:
    """Finite checkpoints of ``curve`` with their noise. Binomial when a proportion has item counts
    everywhere; otherwise normal with the table's stderr (or the binomial one where only n is known),
    and, when no checkpoint has either, one σ estimated from the residuals of the broken-stick fit."""
    at = np.flatnonzero(np.isfinite(curve.loss) & np.isfinite(curve.value))
    c = curve.take(at)
    y = np.asarray(_to_better(c, c.value), dtype=float)
    n = c.n.astype(float)
    if is_proportion(c.metric) and len(c) and (n > 0).all():
        p = np.clip(y, 0.0, 1.0)
        return _Points(c.loss, p, np.sqrt(p * (1 - p) / n), n, True, at)
    se = np.where(np.isfinite(c.stderr) & (c.stderr > 0), c.stderr, np.nan)
    if is_proportion(c.metric):
        # a floor of half an item keeps a checkpoint at 0 or 1 from claiming no noise at all
        p = np.clip(y, 0.0, 1.0)
        from_n = np.sqrt(np.maximum(p * (1 - p), 0.5 / np.maximum(n, 1)) / np.maximum(n, 1))
        se = np.where(np.isnan(se) & (n > 0), from_n, se)
    if np.isfinite(se).sum() >= MIN_CHECKPOINTS or len(c) < MIN_CHECKPOINTS + 2:
        keep = np.flatnonzero(np.isfinite(se))
        return _Points(c.loss[keep], y[keep], se[keep], np.zeros(len(keep)), False, at[keep])
    fit = fit_broken_stick(c.loss, y)
    if fit is None:
        return _Points(c.loss[:0], y[:0], se[:0], n[:0], False, at[:0])
    sigma = math.sqrt(max(fit.sse, 1e-300) / (len(c) - 3))
    return _Points(c.loss, y, np.full(len(c), sigma), np.zeros(len(c)), False, at, se_from_residuals=True)


# --- the reference and the departure test ------------------------------------------------------------

def _plateau_index(points: _Points) -> np.ndarray:
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
        if _departs(points.take(np.array([i])), reference, None)[0]:
            break
        taken.append(int(i))
    return np.array(taken)


def _estimate(points: _Points, index: np.ndarray, chance: float | None) -> Reference:
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


def _departs(points: _Points, reference: Reference, plateau: np.ndarray | None) -> np.ndarray:
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


def _reference(points: _Points, curve: Curve) -> tuple[Reference, np.ndarray]:
    plateau = _plateau_index(points)
    chance = None
    if base_metric(curve.metric) in CHANCE_REFERENCE_METRICS and curve.random_baseline is not None:
        chance = float(_to_better(curve, curve.random_baseline))
    return _estimate(points, plateau, chance), plateau


def _in_metric_units(curve: Curve, ref: Reference) -> Reference:
    value = float(_to_metric(curve, ref.value))
    chance = None if ref.chance is None else float(_to_metric(curve, ref.chance))
    return Reference(value, ref.kind, ref.points, ref.stderr, ref.successes, ref.items, chance, ref.above_chance_p)


_in_better_units = _in_metric_units  # the map is its own inverse


def reference_level(curve: Curve) -> Reference:
    """The reference of ``curve`` in metric units: the pooled plateau of its highest-loss checkpoints,
    and for multiple-choice accuracy with a random baseline max(chance, plateau)."""
    points = _points(curve)
    if len(points) == 0:
        raise ValueError("no checkpoint has a loss, a value and a noise estimate")
    return _in_metric_units(curve, _reference(points, curve)[0])


def _as_reference(curve: Curve, reference: Reference | float) -> Reference:
    if isinstance(reference, Reference):
        return _in_better_units(curve, reference)
    # a bare number is a known constant (no noise of its own), as a chance level is
    return Reference(float(_to_better(curve, float(reference))), "chance", 0)


def exceeds(curve: Curve, reference: Reference | float) -> np.ndarray:
    """Per checkpoint of ``curve``: does it depart from ``reference``?

    ``reference`` is a ``Reference`` (from ``reference_level``: a plateau is an estimate, tested by
    two samples) or a number, taken as a known constant (an exact binomial test, or a z test with the
    checkpoint's own stderr). The minimum effect applies either way. A checkpoint without a loss, a
    value or any noise estimate cannot be shown to depart: False.
    """
    out = np.zeros(len(curve), dtype=bool)
    points = _points(curve)
    if len(points):
        out[points.index] = _departs(points, _as_reference(curve, reference), None)
    return out


def _departure(points: _Points, above: np.ndarray) -> float | None:
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
    points = _points(curve)
    if len(points) == 0:
        return None
    ref = _as_reference(curve, reference)
    return _departure(points, _departs(points, ref, None))


# --- the broken stick ------------------------------------------------------------------------------

def _profile(loss: np.ndarray, y: np.ndarray, etas: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Least squares of y = c + a·max(η − L, 0), a ≥ 0, for every candidate η at once.

    ``y`` is one curve (m,) or a stack of resamples (B, m); returns slope, level c (for one curve only,
    else None) and the residual sum of squares, each (G,) or (B, G). For fixed η the model is linear:
    on centred x, a = Sxy/Sxx clipped at 0, and SSE = Syy − a·Sxy (which is Syy when a is clipped).
    """
    x = np.clip(etas[:, None] - loss[None, :], 0.0, None)  # (G, m)
    x_mean = x.mean(axis=1)
    xc = x - x_mean[:, None]
    sxx = np.einsum("gm,gm->g", xc, xc)
    inverse = np.where(sxx > 1e-12, 1.0 / np.where(sxx > 1e-12, sxx, 1.0), 0.0)  # η at the lowest loss: flat
    y_mean = y.mean(axis=-1, keepdims=True)
    yc = y - y_mean
    # einsum, not matmul: these products are small, and a multithreaded BLAS call on a busy machine
    # cost ten times the arithmetic (32 ms against 3 ms for 300 resamples × 400 η on two shared cores)
    sxy = np.einsum("...m,gm->...g", yc, xc)  # (G,) or (B, G)
    syy = np.einsum("...m,...m->...", yc, yc)
    slope = np.maximum(sxy * inverse, 0.0)
    sse = np.maximum(np.asarray(syy)[..., None] - slope * sxy, 0.0)
    level = y_mean - slope * x_mean if y.ndim == 1 else None
    return slope, level, sse


def _grid(loss: np.ndarray) -> np.ndarray:
    return np.linspace(float(loss.min()), float(loss.max()), GRID_POINTS)


def fit_broken_stick(loss: np.ndarray, y: np.ndarray, refine: bool = True) -> BrokenStick | None:
    """Least squares of y = c + a·max(η − L, 0), a ≥ 0, η within the observed losses (never
    extrapolated). The best η of a grid is refined by a bounded scalar search. None when the losses do
    not span a range."""
    loss, y = np.asarray(loss, float), np.asarray(y, float)
    if len(loss) < 3 or not loss.max() > loss.min():
        return None
    etas = _grid(loss)
    slope, level, sse = _profile(loss, y, etas)
    best = int(np.argmin(sse))
    fit = BrokenStick(float(etas[best]), float(slope[best]), float(level[best]), float(sse[best]))
    if refine and fit.slope > 0:
        left, right = etas[max(best - 1, 0)], etas[min(best + 1, GRID_POINTS - 1)]
        res = optimize.minimize_scalar(lambda e: float(_profile(loss, y, np.array([e]))[2][0]),
                                       bounds=(left, right), method="bounded", options={"xatol": 1e-6})
        if res.fun < fit.sse:
            s, c, e = _profile(loss, y, np.array([res.x]))
            fit = BrokenStick(float(res.x), float(s[0]), float(c[0]), float(e[0]))
    return fit


def _mean_curve(loss: np.ndarray, fit: BrokenStick) -> np.ndarray:
    return fit.level + fit.slope * np.clip(fit.eta - loss, 0.0, None)


def _simulate(points: _Points, mean: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` curves (B, m) drawn around ``mean`` with each checkpoint's own noise."""
    if points.binomial:
        p = np.clip(mean, 0.0, 1.0)
        return rng.binomial(points.n.astype(np.int64), p, size=(resamples, len(p))) / points.n
    return mean + points.se * rng.standard_normal((resamples, len(mean)))


def _eta_interval(points: _Points, fit: BrokenStick, resamples: int, seed: int) -> tuple[float, float]:
    """INTERVAL_LEVEL interval for η from curves simulated from the fit with each checkpoint's own noise.

    Two intervals come from the same resamples, and the answer is their hull (both contain η̂):
    - percentile: the central INTERVAL_LEVEL of η* refitted on each resample (a flat refit saw no
      rise in range: its η* is the lowest observed loss);
    - profile: every η whose observed SSE(η) − SSE(η̂) is within the INTERVAL_LEVEL quantile of the
      same statistic at the truth of the resamples, D* = SSE*(η̂) − min_η SSE*(η) (a test inversion).
    On simulated sweeps each alone undercovers in one regime (the percentile interval for binomial
    curves rising from 0, the profile one for accuracy rising from chance); the hull covers 85–95%
    in both (docs/statistics.md, scripts/calibrate.py).
    """
    rng = np.random.default_rng(seed)
    etas = _grid(points.loss)
    samples = _simulate(points, _mean_curve(points.loss, fit), resamples, rng)
    slope, _, sse = _profile(points.loss, samples, etas)
    best = np.argmin(sse, axis=1)
    refits = np.where(slope[np.arange(resamples), best] > 0, etas[best], float(points.loss.min()))
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = np.quantile(refits, [tail, 1 - tail])
    at_fit = int(np.argmin(np.abs(etas - fit.eta)))
    cutoff = float(np.quantile(sse[:, at_fit] - sse[np.arange(resamples), best], INTERVAL_LEVEL))
    observed = _profile(points.loss, points.y, etas)[2]
    inside = etas[observed - observed.min() <= cutoff]  # holds the grid's best η at least
    return min(float(inside.min()), float(low), fit.eta), max(float(inside.max()), float(high), fit.eta)


# --- one curve's verdict ---------------------------------------------------------------------------

def emergence_threshold(curve: Curve, *, resamples: int = 1000, seed: int = 0) -> Threshold:
    """Status, reference, departure loss and, when emerged, η with its parametric-bootstrap 90% interval."""
    points = _points(curve)
    base = {"metric": curve.metric, "checkpoints": len(points)}
    empty = {"departure_loss": None, "eta": None, "low": None, "high": None, "slope": None}
    if len(points) < MIN_CHECKPOINTS or not points.loss.max() > points.loss.min():
        return Threshold(**base, reference=None, status=INSUFFICIENT, **empty,
                         note=f"{len(points)} usable checkpoint{'' if len(points) == 1 else 's'} at distinct losses; "
                              f"at least {MIN_CHECKPOINTS} needed")
    if points.binomial and np.median(points.n) < MIN_ITEMS:
        return Threshold(**base, reference=None, status=INSUFFICIENT, **empty,
                         note=f"{np.median(points.n):.0f} items per checkpoint; at least {MIN_ITEMS} needed")
    ref, plateau = _reference(points, curve)
    above = _departs(points, ref, plateau)
    departure = _departure(points, above)
    base["reference"] = _in_metric_units(curve, ref)
    empty["departure_loss"] = departure
    notes = ["stderr estimated from the fit's residuals"] if points.se_from_residuals else []
    departed = 0 if departure is None else int((points.loss <= departure).sum())
    if departed < MIN_DEPARTURE_POINTS:
        if departed:
            notes.insert(0, f"only the {departed} lowest-loss checkpoint{'s' if departed > 1 else ''} depart"
                            f"{'' if departed > 1 else 's'}; {MIN_DEPARTURE_POINTS} needed")
        # above chance from the start: the pooled plateau beats chance significantly and no checkpoint
        # sits below chance (a curve that dips under chance is not "better than chance at every checkpoint")
        from_start = (ref.above_chance_p is not None and ref.kind == "plateau" and ref.above_chance_p < ONE_SIDED_ALPHA
                      and bool((points.y >= ref.chance).all()))
        if from_start:
            notes.insert(0, f"plateau {base['reference'].value:.4g} above chance {base['reference'].chance:.4g} "
                            f"(p = {ref.above_chance_p:.2g}), no checkpoint below chance")
        return Threshold(**base, status=FROM_START if from_start else NO_EMERGENCE, **empty, note="; ".join(notes))
    fit = fit_broken_stick(points.loss, points.y)
    if fit is None or fit.slope <= 0:
        notes.insert(0, "departs, but no rising trend to fit")
        return Threshold(**base, status=NO_EMERGENCE, **empty, note="; ".join(notes))
    low, high = _eta_interval(points, fit, resamples, seed)
    if fit.eta >= points.loss.max() - 1e-9:
        notes.append("η at the highest observed loss (edge of the data)")
    return Threshold(**base, status=EMERGED, departure_loss=departure, eta=fit.eta, low=low, high=high,
                     slope=_slope_to_metric(curve, fit.slope), note="; ".join(notes))


# --- do the models agree? --------------------------------------------------------------------------

def pool(curves: Mapping[str, Curve]) -> Curve:
    """One curve of every checkpoint of ``curves`` (the first curve's metric and direction)."""
    first = next(iter(curves.values()))
    cat = lambda field: np.concatenate([getattr(c, field) for c in curves.values()])
    return Curve(cat("loss"), cat("value"), cat("stderr"), cat("n"), first.metric, first.higher_is_better,
                 first.random_baseline)


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
        _, _, sse = _profile(p.loss, _simulate(p, _mean_curve(p.loss, fit), resamples, rng), etas)
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
