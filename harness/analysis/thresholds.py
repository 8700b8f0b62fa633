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
- here: the status, ``emerged`` when the three lowest-loss checkpoints depart, so a flat curve is
  called emerged at most 5% of the time whatever its number of checkpoints (the lowest checkpoint
  alone must reject at 5%);
- ``agreement`` (which builds on this module): one shared η against one η per model, a
  likelihood-ratio-type statistic with a parametric-bootstrap null; a model that went well below the
  pooled interval without emerging is named and counts against agreement.

    broken_stick ─► curves ─► departure ──┐
                       └──► bootstrap ──┴─► thresholds (one curve) ─► agreement (several models)

The names of ``curves``, ``departure``, ``broken_stick`` and ``bootstrap`` that the report, the
prediction test and ``scripts/calibrate.py`` use are importable from here as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.bootstrap import INTERVAL_LEVEL, eta_interval
from harness.analysis.broken_stick import GRID_POINTS, BrokenStick, fit_broken_stick
from harness.analysis.curves import (
    MIN_CHECKPOINTS,
    PROPORTION_METRICS,
    Curve,
    _points,
    _slope_to_metric,
    base_metric,
    is_proportion,
    pool,
)
from harness.analysis.departure import (
    CHANCE_REFERENCE_METRICS,
    MIN_EXCESS_ITEMS,
    MIN_GAIN,
    ONE_SIDED_ALPHA,
    PLATEAU_FRACTION,
    PLATEAU_MIN_POINTS,
    Reference,
    _departs,
    _departure,
    _in_metric_units,
    _reference,
    departure_loss,
    exceeds,
    reference_level,
)

__all__ = [
    "EMERGED", "NO_EMERGENCE", "FROM_START", "INSUFFICIENT", "STATUSES", "MIN_DEPARTURE_POINTS", "MIN_ITEMS",
    "Threshold", "emergence_threshold",
    # re-exported from the modules below this one
    "MIN_CHECKPOINTS", "PROPORTION_METRICS", "Curve", "base_metric", "is_proportion", "pool",
    "CHANCE_REFERENCE_METRICS", "MIN_EXCESS_ITEMS", "MIN_GAIN", "ONE_SIDED_ALPHA", "PLATEAU_FRACTION",
    "PLATEAU_MIN_POINTS", "Reference", "departure_loss", "exceeds", "reference_level",
    "GRID_POINTS", "BrokenStick", "fit_broken_stick", "INTERVAL_LEVEL",
]

EMERGED = "emerged"
NO_EMERGENCE = "no emergence"
FROM_START = "above reference from the start"
INSUFFICIENT = "insufficient data"
STATUSES = (EMERGED, NO_EMERGENCE, FROM_START, INSUFFICIENT)

MIN_DEPARTURE_POINTS = 3  # lowest-loss checkpoints that must all depart for "emerged"
MIN_ITEMS = 20  # median items per checkpoint below this: insufficient data


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
    low, high = eta_interval(points, fit, resamples, seed)
    if fit.eta >= points.loss.max() - 1e-9:
        notes.append("η at the highest observed loss (edge of the data)")
    return Threshold(**base, status=EMERGED, departure_loss=departure, eta=fit.eta, low=low, high=high,
                     slope=_slope_to_metric(curve, fit.slope), note="; ".join(notes))
