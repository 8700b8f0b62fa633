"""Below which pre-training loss does an ability appear? One curve's verdict, and the names to import.

A curve is the metric of one task at many checkpoints (one model, or several pooled), each with its
pre-training loss, standard error and item count. Every computation runs in the metric's better
direction (``y``: the value, 1 − value for a lower-is-better proportion, −value for a lower-is-better
continuous metric), so "above the reference" always means "better". The methods, their reasons and
their calibration on simulated sweeps are in ``docs/statistics.md``; in one screen, by module:

- ``curves``: the noise of a checkpoint, binomial at its item count for proportions (exact match,
  accuracy), else normal with its standard error (estimated from the fit's residuals when the table
  has none);
- ``departure``: the reference, the plateau of the highest-loss checkpoints, an estimate with its own
  noise (item counts summed), for multiple-choice accuracy max(chance, plateau); a checkpoint
  *departs* when a one-sided two-sample test against it (Fisher's exact test of two proportions; a
  z test of the difference for continuous metrics) rejects at 5% and its gain clears a minimum
  effect (3 items and one percentage point for proportions);
- ``broken_stick`` and ``bootstrap``: η, least squares of y = c + a·max(η − L, 0), a ≥ 0, with a 90%
  interval from a parametric bootstrap of the fitted curve with each checkpoint's own noise (hull of
  the percentile and the profile intervals);
- ``shapes``: the broken stick against smooth alternatives (linear, logistic, exponential and, for
  exact match, logit-power: Schaeffer et al.'s mirage), a parametric-bootstrap test;
- here: the status. A curve *rises* when its three lowest-loss checkpoints depart (so a flat curve rises
  at most 5% of the time whatever its number of checkpoints); it is ``emerged`` when the shape test
  supports a threshold over every smooth alternative, else ``smooth rise`` (a departure loss and the
  best smooth fit, no η); ``above reference from the start`` is one test of the level against chance
  and one of flatness;
- ``agreement`` (which builds on this module): do the sizes lie on one curve of the loss? One shared
  curve against the same curve shifted along the loss per size, with a parametric-bootstrap null and
  the largest shift's interval.

    broken_stick (the fit and its bootstrap) ─► curves ─► departure ─► shapes ─► thresholds (one curve)
        ─► agreement (several models)

Each name is imported from the module that defines it (``Curve`` from ``curves``, ``departure_loss``
from ``departure``): this module re-exports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from harness.analysis.broken_stick import INTERVAL_LEVEL, eta_interval, fit_broken_stick, simulate_curves
from harness.analysis.curves import (
    MIN_CHECKPOINTS,
    Curve,
    base_metric,
    fit_points,
    slope_to_metric,
    to_metric,
)
from harness.analysis.departure import (
    PLATEAU_MIN_POINTS,
    Reference,
    departs,
    first_departure,
    in_metric_units,
    plateau_reference,
)
from harness.analysis.shapes import SHAPE_ALPHA, shape_test

__all__ = [
    "EMERGED", "SMOOTH_RISE", "NO_EMERGENCE", "FROM_START", "INSUFFICIENT", "STATUSES", "MIN_DEPARTURE_POINTS", "MIN_ITEMS",
    "Threshold", "emergence_threshold", "with_q", "carries_verdict", "AT_EDGE", "TOO_FEW_DEPARTING",
]

EMERGED = "emerged"
SMOOTH_RISE = "smooth rise"
NO_EMERGENCE = "no emergence"
FROM_START = "above reference from the start"
INSUFFICIENT = "insufficient data"
STATUSES = (EMERGED, SMOOTH_RISE, NO_EMERGENCE, FROM_START, INSUFFICIENT)

MIN_DEPARTURE_POINTS = 3  # lowest-loss checkpoints that must all depart for "emerged"
MIN_ITEMS = 20  # median items per checkpoint below this: insufficient data
MIN_ABOVE_ETA = 3  # checkpoints above η̂ needed for a threshold (a plateau's worth); fewer: the rise begins at the edge
FLAT_ALPHA = 0.05  # "above reference from the start" needs the curve consistent with flat at this level...
FROM_START_ALPHA = 0.001  # ...and its checkpoints pooled above chance at this level (one-sided; 228 curves of a 57-subject report at chance: 0.23 false calls)
DEPARTURE_RESAMPLES = 50  # curves simulated from the smooth fit for the departure loss's interval
EXACT_MATCH_PREFIXES = ("exact_match", "numeric_match")
# the notes of the two verdicts the data do not carry (matched by ``carries_verdict``, written below)
AT_EDGE = "the rise begins at the edge of the observed losses"
TOO_FEW_DEPARTING = f"; {MIN_DEPARTURE_POINTS} needed"


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
    # the shape test (curves that depart): broken stick against the smooth alternatives
    shape_p: float | None = None  # small: a threshold is supported over every smooth alternative
    shape_q: float | None = None  # Benjamini-Hochberg q over the tasks of a report (None outside one)
    smooth: str | None = None  # the best smooth family ("linear", "logistic", ...)
    smooth_slope: float | None = None  # its mean gain per nat over the observed losses (metric units)
    departure_low: float | None = None  # 90% interval of the departure loss (smooth rise)
    departure_high: float | None = None
    # kept so that a report can demote "emerged" to "smooth rise" when its q-value says so
    stick_eta: float | None = None

    @property
    def emerged(self) -> bool:
        return self.status == EMERGED

    def describe(self) -> str:
        if self.status == SMOOTH_RISE:
            text = f"smooth rise: departs below {self.departure_loss:.3f}"  # (departure_loss is set for every smooth rise)
            if self.departure_low is not None:
                text += f" [{self.departure_low:.3f}, {self.departure_high:.3f}]"
            text += f", best smooth fit {self.smooth}, {self.smooth_slope:+.3g} per nat"
            return f"{text}; {self.note}" if self.note else text
        if self.status != EMERGED or self.eta is None:
            return f"{self.status} ({self.note})" if self.note else self.status
        text = f"η = {self.eta:.3f} [{self.low:.3f}, {self.high:.3f}]"
        return f"{text}; {self.note}" if self.note else text


def is_exact_match(metric: str) -> bool:
    return base_metric(metric).startswith(EXACT_MATCH_PREFIXES)


def carries_verdict(status: str, note: str) -> bool:
    """A verdict the data carry: neither too little data, nor a rise at the edge of the checkpoints, nor
    too few departing checkpoints to tell (a curve's ``status`` and ``note``, as on a Threshold or in
    thresholds.csv)."""
    note = note if isinstance(note, str) else ""
    return status != INSUFFICIENT and AT_EDGE not in note and TOO_FEW_DEPARTING not in note


def with_q(t: Threshold, q: float | None) -> Threshold:
    """``t`` with its shape q-value; an "emerged" whose q is not below SHAPE_ALPHA becomes "smooth rise"
    (the threshold is not supported once the other tasks of the report are counted)."""
    if q is None or t.shape_p is None:
        return t
    if t.status == EMERGED and not q < SHAPE_ALPHA:
        note = f"threshold not supported after the other tasks (shape p = {t.shape_p:.2g}, q = {q:.2g})"
        return replace(t, status=SMOOTH_RISE, eta=None, low=None, high=None, slope=None, shape_q=q,
                       note="; ".join(x for x in (note, t.note) if x))
    return replace(t, shape_q=q)


def _flat_p(points) -> float:
    """p of "every checkpoint has the same expected value": a χ² test of homogeneity (binomial: of the
    proportions; continuous: of the inverse-variance weighted deviations from their weighted mean)."""
    if points.binomial:
        k, n = points.k, points.n
        pbar = k.sum() / n.sum()
        if pbar <= 0 or pbar >= 1:
            return 1.0
        chi2 = float((((k - n * pbar) ** 2) / (n * pbar * (1 - pbar))).sum())
    else:
        w = 1.0 / points.se**2
        mean = float(w @ points.y / w.sum())
        chi2 = float((w * (points.y - mean) ** 2).sum())
    return float(stats.chi2.sf(chi2, len(points) - 1))


def _above_chance_p(points, chance: float) -> float:
    """One-sided p of "the curve's level is above chance", every checkpoint pooled: an exact binomial test of
    Σk of Σn items, or a z test of the inverse-variance weighted mean for a continuous metric."""
    if points.binomial:
        k, n = int(points.k.sum()), int(points.n.sum())
        return float(stats.binom.sf(k - 1, n, chance)) if k / n > chance else 1.0
    w = 1.0 / points.se**2
    mean = float(w @ points.y / w.sum())
    return float(stats.norm.sf((mean - chance) / (1.0 / np.sqrt(w.sum()))))


def _departure_interval(points, mean: np.ndarray, curve: Curve, resamples: int, seed: int) -> tuple[float, float] | None:
    """INTERVAL_LEVEL interval of the departure loss over curves simulated from ``mean`` (the smooth fit)."""
    rng = np.random.default_rng(seed + 7919)
    samples = simulate_curves(points, mean, resamples, rng)
    found = []
    for y in samples:
        sim = replace(points, y=y, se=np.sqrt(np.clip(y, 0, 1) * (1 - np.clip(y, 0, 1)) / points.n)
                      if points.binomial else points.se)
        ref, plateau = plateau_reference(sim, curve)
        d = first_departure(sim, departs(sim, ref, plateau))
        found.append(float(points.loss.min()) if d is None else d)
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = np.quantile(found, [tail, 1 - tail])
    return float(low), float(high)


def emergence_threshold(curve: Curve, *, resamples: int = 1000, seed: int = 0,
                        departure_interval: bool = True) -> Threshold:
    """Status, reference, departure loss and, when emerged, η with its parametric-bootstrap 90% interval."""
    points = fit_points(curve)
    base = {"metric": curve.metric, "checkpoints": len(points)}
    empty = {"departure_loss": None, "eta": None, "low": None, "high": None, "slope": None}
    if len(points) < MIN_CHECKPOINTS or not points.loss.max() > points.loss.min():
        return Threshold(**base, reference=None, status=INSUFFICIENT, **empty,
                         note=f"{len(points)} usable checkpoint{'' if len(points) == 1 else 's'} at distinct losses; "
                              f"at least {MIN_CHECKPOINTS} needed")
    if points.binomial and np.median(points.n) < MIN_ITEMS:
        return Threshold(**base, reference=None, status=INSUFFICIENT, **empty,
                         note=f"{np.median(points.n):.0f} items per checkpoint; at least {MIN_ITEMS} needed")
    ref, plateau = plateau_reference(points, curve)
    above = departs(points, ref, plateau)
    departure = first_departure(points, above)
    base["reference"] = in_metric_units(curve, ref)
    empty["departure_loss"] = departure
    notes = ["stderr estimated from the fit's residuals"] if points.se_from_residuals else []
    departed = 0 if departure is None else int((points.loss <= departure).sum())
    if departed < MIN_DEPARTURE_POINTS:
        if departed:
            notes.insert(0, f"only the {departed} lowest-loss checkpoint{'s' if departed > 1 else ''} depart"
                            f"{'' if departed > 1 else 's'}{TOO_FEW_DEPARTING}")
        # above chance from the start: one test of the plateau against chance, and the curve consistent with
        # flat (a χ² test of homogeneity at FLAT_ALPHA); both keep their level whatever the number of checkpoints
        flat_p = _flat_p(points)
        whole_p = _above_chance_p(points, ref.chance) if ref.chance is not None else None
        from_start = (whole_p is not None and whole_p < FROM_START_ALPHA and flat_p >= FLAT_ALPHA)
        if from_start:
            level = float(to_metric(curve, points.k.sum() / points.n.sum() if points.binomial else
                                     (points.y / points.se**2).sum() / (1 / points.se**2).sum()))
            notes.insert(0, f"level {level:.4g} above chance {base['reference'].chance:.4g} (every checkpoint pooled, "
                            f"p = {whole_p:.2g}), curve consistent with flat (p = {flat_p:.2g})")
        elif whole_p is not None and whole_p < FROM_START_ALPHA:
            notes.insert(0, f"above chance (p = {whole_p:.2g}) but the curve is not flat (p = {flat_p:.2g}) "
                            "and does not rise at its 3 lowest-loss checkpoints")
        return Threshold(**base, status=FROM_START if from_start else NO_EMERGENCE, **empty, note="; ".join(notes))
    fit = fit_broken_stick(points.loss, points.y)
    if fit is None or fit.slope <= 0:
        notes.insert(0, "departs, but no rising trend to fit")
        return Threshold(**base, status=NO_EMERGENCE, **empty, note="; ".join(notes))
    shape = shape_test(points, is_exact_match(curve.metric), resamples, seed)
    interval = (None, None)
    if departure_interval:  # (no verdict depends on it: scripts/calibrate.py skips it to save time)
        interval = _departure_interval(points, shape.smooth_mean, curve, min(resamples, DEPARTURE_RESAMPLES), seed)
        interval = (min(interval[0], departure), max(interval[1], departure))  # the hull with the estimate, as for η
    shape_fields = {"shape_p": shape.p_value, "smooth": shape.smooth,
                    "smooth_slope": slope_to_metric(curve, shape.smooth_slope),
                    "departure_low": interval[0], "departure_high": interval[1], "stick_eta": fit.eta}
    above_eta = int((points.loss > fit.eta + 1e-9).sum())
    # every checkpoint below the plateau departs: the rise began before the data did
    below_plateau = np.sort(points.loss)[::-1][PLATEAU_MIN_POINTS] if len(points) > PLATEAU_MIN_POINTS else -np.inf
    at_edge = above_eta < MIN_ABOVE_ETA or departure >= below_plateau - 1e-12
    if at_edge:
        notes.insert(0, f"{AT_EDGE} ({above_eta} checkpoint"
                        f"{'' if above_eta == 1 else 's'} above the best kink): no η")
    if at_edge or not shape.p_value < SHAPE_ALPHA:
        if not at_edge:
            notes.insert(0, f"no threshold supported over a smooth {shape.smooth} rise (shape p = {shape.p_value:.2g})")
        return Threshold(**base, status=SMOOTH_RISE, **{**empty, "departure_loss": departure}, note="; ".join(notes),
                         **shape_fields)
    low, high = eta_interval(points, fit, resamples, seed)
    notes.insert(0, f"threshold supported over every smooth alternative (shape p = {shape.p_value:.2g})")
    return Threshold(**base, status=EMERGED, departure_loss=departure, eta=fit.eta, low=low, high=high,
                     slope=slope_to_metric(curve, fit.slope), note="; ".join(notes), **shape_fields)
