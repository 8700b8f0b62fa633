"""Do the sizes lie on one curve of loss (Du et al.: the same curve whatever the size)?

    curves by model ─► the sizes whose loss ranges overlap ─► one shared curve y = c + a·f(L)
        (f from every shape family: broken stick, linear, logistic, exponential, logit-power)
        against the same curve shifted along the loss axis per size, y_s = c + a·f(L − δ_s)
        ─► p-value by a parametric bootstrap from the shared fit; the shifts and the largest one with a
           90% interval from a parametric bootstrap of the shifted fit ─► Agreement

A horizontal shift is what "a size reaches the same performance at a different loss" means, for a
smooth rise and a threshold alike; the shared curve keeps one level and one slope for every size, so a
size that covers another loss window is not given its own kink. The statistic, its null distribution
and their calibration are in docs/statistics.md ("Do the sizes agree?").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from harness.analysis.broken_stick import INTERVAL_LEVEL, simulate_curves
from harness.analysis.curves import Curve, FitPoints, fit_points, pool
from harness.analysis.shapes import Family, smooth_family, stick_family
from harness.analysis.thresholds import (
    EMERGED,
    SMOOTH_RISE,
    Threshold,
    emergence_threshold,
    is_exact_match,
)

AGREEMENT_ALPHA = 0.05  # "disagree" when the shared curve is rejected at this level (q-value in a report)
SHIFT_RANGE = 1.0  # nats: shifts searched in [-SHIFT_RANGE, SHIFT_RANGE]
SHIFT_STEP = 0.025
MIN_OVERLAP = 3  # checkpoints of a size inside the other sizes' loss range for it to be compared
SHARED_MIN_SCALE = 0.05  # the shared curve may bend this sharply (it includes the broken stick anyway)
ROUNDS = 5  # alternations of "best shape given the shifts" and "best shift of each size given the shape"
INTERVAL_RESAMPLES = 200  # curves simulated from the shifted fit for the shifts' intervals
IDENTIFIED_SE = 2.0  # a size's shift is estimated only where the common curve rises this many se's across it
CONTRARY_MIN_SHIFT = 0.1  # nats: a size is named off the common curve when its shift's interval clears ±this


@dataclass(frozen=True)
class Agreement:
    agree: bool | None  # None when undetermined (fewer than two overlapping sizes, or no rise to align)
    p_value: float | None  # of "one curve of loss" against "one curve shifted per size"; None when not tested
    models: tuple[str, ...]  # the sizes compared
    contrary: tuple[str, ...]  # sizes whose own shift is clear of the others' (only when they disagree)
    note: str
    shared_eta: float | None = None  # kink of the shared curve when its best shape is a broken stick
    q_value: float | None = None  # Benjamini-Hochberg over the tasks of a report
    shift: float | None = None  # largest shift between two sizes, nats (≥ 0)
    shift_low: float | None = None  # its 90% interval
    shift_high: float | None = None
    shift_pair: tuple[str, str] | None = None  # (size at higher loss, size at lower loss)
    shifts: dict | None = None  # size -> shift from the median size, nats (positive: same value at a higher loss)
    shape: str | None = None  # the shared curve's family
    detail: str = ""  # what follows the verdict in the note (sizes left out, shifts not estimated)


def _overlapping(points: Mapping[str, FitPoints]) -> list[str]:
    names = [n for n, p in points.items() if len(p)]
    while len(names) > 1:
        keep = []
        for n in names:
            others = np.concatenate([points[o].loss for o in names if o != n])
            inside = (points[n].loss >= others.min()) & (points[n].loss <= others.max())
            if inside.sum() >= MIN_OVERLAP:
                keep.append(n)
        if keep == names:
            break
        names = keep
    return names


@dataclass
class _Design:
    sizes: list[str]
    group: np.ndarray  # size index of every point
    loss: np.ndarray
    family: Family
    F: np.ndarray  # (K, m, D): f_k(L_i − δ_d)
    deltas: np.ndarray
    zero: int  # index of δ = 0


def _design(points: Mapping[str, FitPoints], sizes: list[str], exact_match: bool) -> _Design:
    loss = np.concatenate([points[n].loss for n in sizes])
    group = np.concatenate([np.full(len(points[n]), i) for i, n in enumerate(sizes)])
    low, high = float(loss.min()), float(loss.max())
    st = stick_family(low, high, 200)
    sm = smooth_family(low, high, exact_match, SHARED_MIN_SCALE)
    family = Family(st.names + sm.names, np.vstack([st.params, sm.params]))
    deltas = np.round(np.arange(-SHIFT_RANGE, SHIFT_RANGE + SHIFT_STEP / 2, SHIFT_STEP), 6)
    F = family.evaluate(loss[:, None] - deltas[None, :])  # (K, m, D)
    return _Design(sizes, group, loss, family, F, deltas, int(np.argmin(np.abs(deltas))))


def _batched_profile(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """SSE of y_b = c + a·x_bk + b·x_bk² (least squares, unconstrained) for every resample b and basis row k:
    X (B, K, m), Y (B, m) -> (B, K). The square gives every shape a second degree of curvature, so the
    shared curve follows a realised curve that no single member matches (a mixture of items saturating)."""
    u = X - X.mean(axis=-1, keepdims=True)
    X2 = X * X
    v = X2 - X2.mean(axis=-1, keepdims=True)
    yc = Y - Y.mean(axis=-1, keepdims=True)
    suu = np.einsum("bkm,bkm->bk", u, u)
    svv = np.einsum("bkm,bkm->bk", v, v)
    suv = np.einsum("bkm,bkm->bk", u, v)
    suy = np.einsum("bkm,bm->bk", u, yc)
    svy = np.einsum("bkm,bm->bk", v, yc)
    syy = np.einsum("bm,bm->b", yc, yc)[:, None]
    det = suu * svv - suv * suv
    ok = det > 1e-12 * np.maximum(suu * svv, 1e-300)
    safe = np.where(ok, det, 1.0)
    explained2 = np.where(ok, (svv * suy * suy - 2 * suv * suy * svy + suu * svy * svy) / safe, 0.0)
    explained1 = np.where(suu > 1e-12, suy * suy / np.where(suu > 1e-12, suu, 1.0), 0.0)
    return np.maximum(syy - np.where(ok, explained2, explained1), 0.0)


def _fitted(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fitted values of y = c + a·x + b·x² for one basis vector x (m,)."""
    A = np.column_stack([np.ones_like(X), X, X * X])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return A @ coef


CHUNK = 64  # resamples fitted at once (bounds the (B, K, m) arrays)


def _fit_many(design: _Design, Y: np.ndarray, shifted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row of Y (B, m): SSE, shape index and shift index per size of the best fit; ``shifted``:
    per-size shifts allowed (the last size is the reference, δ = 0). Alternates the best shape given the
    shifts and the best shift of each size given the shape, ROUNDS times; the same steps for the observed
    curve and every simulated one."""
    if len(Y) > CHUNK:
        parts = [_fit_many(design, Y[i:i + CHUNK], shifted) for i in range(0, len(Y), CHUNK)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))
    B, m = Y.shape
    S = len(design.sizes)
    F = design.F
    rows = np.arange(m)
    d = np.full((B, S), design.zero)
    sse = _batched_profile(np.broadcast_to(F[:, :, design.zero], (B,) + F.shape[:2]), Y)
    k = np.argmin(sse, axis=1)
    best = sse[np.arange(B), k]
    if not shifted:
        return best, k, d
    for _ in range(ROUNDS):
        for s in range(S - 1):
            at = np.flatnonzero(design.group == s)
            base = F[k[:, None], rows[None, :], d[:, design.group]]  # (B, m)
            X = np.repeat(base[:, None, :], len(design.deltas), axis=1)  # (B, D, m)
            X[:, :, at] = np.transpose(F[k[:, None], at[None, :], :], (0, 2, 1))
            d[:, s] = np.argmin(_batched_profile(X, Y), axis=1)
        X = np.transpose(F[:, rows[None, :], d[:, design.group]], (1, 0, 2))  # (B, K, m)
        sse = _batched_profile(X, Y)
        k = np.argmin(sse, axis=1)
        best = sse[np.arange(B), k]
    return best, k, d


def _fit(design: _Design, y: np.ndarray, shifted: bool) -> tuple[float, int, np.ndarray, np.ndarray]:
    """SSE, shape index, shift index per size and fitted values of one curve (``_fit_many`` of one row)."""
    sse, k, d = _fit_many(design, y[None, :], shifted)
    k0, d0 = int(k[0]), d[0]
    X = design.F[k0, np.arange(len(y)), d0[design.group]]
    return float(sse[0]), k0, d0, _fitted(X, y)


def _simulate(points: Mapping[str, FitPoints], design: _Design, mean: np.ndarray, resamples: int,
              rng: np.random.Generator) -> np.ndarray:
    out = []
    for i, n in enumerate(design.sizes):
        out.append(simulate_curves(points[n], mean[design.group == i], resamples, rng))
    return np.concatenate(out, axis=1)


def _shift_test(points: Mapping[str, FitPoints], sizes: list[str], exact_match: bool, resamples: int, seed: int) -> dict:
    design = _design(points, sizes, exact_match)
    y = np.concatenate([points[n].y for n in sizes])
    sse0, k0, _, mean0 = _fit(design, y, shifted=False)
    sse1, _, d1, mean1 = _fit(design, y, shifted=True)
    observed = sse0 - sse1
    rng = np.random.default_rng(seed)
    samples = _simulate(points, design, mean0, resamples, rng)
    null = _fit_many(design, samples, False)[0] - _fit_many(design, samples, True)[0]
    tolerance = max(sse0, 1e-300) * 1e-9
    p_value = (1 + int((null >= observed - tolerance).sum())) / (resamples + 1)
    deltas = design.deltas[d1]
    # a size's shift is identified only where the common curve rises across its own checkpoints: by at
    # least IDENTIFIED_SE of their standard errors (a size wholly on the flat part fits any large shift)
    def rises(mean: np.ndarray, i: int) -> bool:
        n, at = sizes[i], design.group == i
        se = np.median(points[n].se) if not points[n].binomial else float(np.median(np.sqrt(
            np.clip(mean[at], 0.5 / points[n].n, 1) * (1 - np.clip(mean[at], 0, 1 - 0.5 / points[n].n)) / points[n].n)))
        return float(np.ptp(mean[at])) >= IDENTIFIED_SE * se

    identified = [rises(mean1, i) for i in range(len(sizes))]
    # a size the common curve says should rise across its checkpoints, which the shifted fit must push onto
    # the flat part to explain: it never rose where the others did (off the common curve)
    flattened = tuple(n for i, n in enumerate(sizes) if not identified[i] and rises(mean0, i))
    ident = np.flatnonzero(identified)
    ds = design.deltas[_fit_many(design, _simulate(points, design, mean1, min(resamples, INTERVAL_RESAMPLES), rng),
                                 True)[2]]  # (B, S)
    tail = (1 - INTERVAL_LEVEL) / 2
    out = {"shift": None, "low": None, "high": None, "pair": None, "shifts": {}, "clear": ()}
    if len(ident) >= 2:
        hi = int(ident[np.argmax(deltas[ident])])
        lo = int(ident[np.argmin(deltas[ident])])
        if hi == lo:
            hi, lo = int(ident[0]), int(ident[-1])
        centred = deltas - np.median(deltas[ident])
        draws = ds[:, hi] - ds[:, lo]
        cdraws = ds - np.median(ds[:, ident], axis=1, keepdims=True)
        # percentile intervals, widened by half a grid step (the shifts are searched on a SHIFT_STEP grid)
        low, high = np.quantile(draws, [tail, 1 - tail]) + np.array([-SHIFT_STEP / 2, SHIFT_STEP / 2])
        clow, chigh = np.quantile(cdraws, [tail, 1 - tail], axis=0)
        out = {"shift": float(deltas[hi] - deltas[lo]), "low": float(low), "high": float(high),
               "pair": (sizes[hi], sizes[lo]), "shifts": {sizes[i]: float(centred[i]) for i in ident},
               "clear": tuple(sizes[i] for i in ident if clow[i] > CONTRARY_MIN_SHIFT or chigh[i] < -CONTRARY_MIN_SHIFT)}
    out["unidentified"] = tuple(n for i, n in enumerate(sizes) if not identified[i] and n not in flattened)
    out["clear"] = tuple(out["clear"]) + flattened
    name0 = design.family.names[k0]  # the shared curve's shape (the shifted fit may pick another)
    return {**out, "p": p_value, "shape": name0,
            "eta": float(design.family.params[k0, 0]) if name0 == "stick" else None}


def _verdict_note(a: Agreement, significant_by: str = "p") -> str:
    if a.p_value is None:
        return a.note
    value = a.p_value if significant_by == "p" else a.q_value
    if a.shift is None:
        shift = "no two sizes sit on a rising part of the curve: shifts not estimated"
    elif a.shift < SHIFT_STEP / 2:
        shift = f"largest shift {a.shift:.2f} nats [{a.shift_low:.2f}, {a.shift_high:.2f}] (no size is shifted)"
    else:
        shift = (f"largest shift {a.shift:.2f} nats [{a.shift_low:.2f}, {a.shift_high:.2f}] "
                 f"({a.shift_pair[0]} reaches the same value at a higher loss than {a.shift_pair[1]})")
    head = ("one curve of loss shifted per size fits better" if a.agree is False else
            "one curve of loss fits as well as one shifted per size")
    text = f"{head} ({significant_by} = {value:.2g}, {len(a.models)} sizes, shared shape {a.shape}); {shift}"
    if a.contrary:
        text += f"; off the common curve: {', '.join(a.contrary)}"
    return text + a.detail


def with_q(a: Agreement, q: float | None) -> Agreement:
    """``a`` decided by its Benjamini-Hochberg q-value over the tasks of a report."""
    if q is None or a.p_value is None:
        return a
    agree = not q < AGREEMENT_ALPHA
    out = replace(a, q_value=q, agree=agree, contrary=a.contrary if not agree else ())
    return replace(out, note=_verdict_note(out, "q"))


def agreement(curves: Mapping[str, Curve], *, resamples: int = 1000, seed: int = 0,
              thresholds: Mapping[str, Threshold] | None = None, pooled: Threshold | None = None) -> Agreement:
    """Do the sizes lie on one curve of loss? ``curves`` are keyed by model name, smallest first;
    ``thresholds`` and ``pooled`` (each model's and the pooled ``emergence_threshold``) are computed
    when not given. Undetermined when fewer than two sizes overlap in loss, or when no curve rises
    (nothing to align)."""
    if thresholds is None:
        thresholds = {name: emergence_threshold(c, resamples=resamples, seed=seed) for name, c in curves.items()}
    if pooled is None:
        pooled = emergence_threshold(pool(curves), resamples=resamples, seed=seed)
    points = {name: fit_points(c) for name, c in curves.items()}
    sizes = _overlapping(points)
    left_out = [n for n in curves if n not in sizes]
    out_note = f"; {', '.join(left_out)} left out: its losses do not overlap the others'" if left_out else ""
    if len(sizes) < 2:
        return Agreement(None, None, tuple(sizes), (), f"fewer than two sizes overlap in loss{out_note}")
    rising = [t for t in (pooled, *thresholds.values()) if t.status in (EMERGED, SMOOTH_RISE)]
    if not rising:
        return Agreement(None, None, tuple(sizes), (),
                         f"no curve rises, so there is no shape to align{out_note}")
    first = next(iter(curves.values()))
    r = _shift_test(points, sizes, is_exact_match(first.metric), resamples, seed)
    agree = not r["p"] < AGREEMENT_ALPHA
    contrary = r["clear"] if (not agree and len(sizes) > 2) else ()
    a = Agreement(agree, r["p"], tuple(sizes), contrary, "", r["eta"], None, r["shift"], r["low"], r["high"],
                  r["pair"], r["shifts"], r["shape"])
    flat_note = (f"; {', '.join(r['unidentified'])}: on the flat part of the curve, shift not estimated"
                 if r["unidentified"] else "")
    a = replace(a, detail=flat_note + out_note)
    return replace(a, note=_verdict_note(a))
