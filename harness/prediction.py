"""The prediction test: can a smooth surrogate, measured before exact match jumps, predict the jump?

One generative task, many checkpoints, per-item records (``items.jsonl``: each item's exact match
and ``target_logprob``, the log-probability of its gold continuation).  The test:

1. cut the loss axis (default: the departure loss of exact match from ``harness.thresholds``, else
   the median checkpoint loss); checkpoints above the cut are *fitted* (high loss, before the
   jump), the others *held out*;
2. fit the surrogate's trend on the fitted checkpoints only: the mean per-token target
   log-probability, linear in the loss, m(L) = a + b·L;
3. extrapolate per item by a shift: item i keeps its offset from the trend at the *anchor*, the
   fitted checkpoint of lowest loss (the latest look at the items before the cut):
   o_i = t_i(anchor) − m(L_anchor), where t_i is its per-token log-prob; at loss L its predicted
   log-prob is n_i · min(m(L) + o_i, 0), with n_i its gold continuation's token count.  One slope
   for every item (a per-item fit from a handful of noisy points extrapolates worse), items keep
   their spread of difficulty;
4. map to exact match through a fixed link with no parameter: predicted exact match at L = mean
   over items of exp(predicted log-prob), the probability of producing the gold answer;
5. compare with the measured exact match on the held-out checkpoints (mean absolute error), and the
   departure loss of the predicted curve (``thresholds.departure_loss``'s rule, the measured
   curve's reference, the same item counts) with the measured departure's 90% interval (a
   bootstrap over items, reaching up to the next checkpoint: checkpoints resolve a departure no
   finer than their spacing), beside a naive baseline that extrapolates exact match itself
   linearly in the loss from the same fitted checkpoints.

When exp(target_logprob) is each item's success probability the surrogate recovers the jump the
baseline cannot see coming; when it is not, the error and the departure say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scipy import stats

from harness import store
from harness.thresholds import ONE_SIDED_ALPHA, Curve, departure_loss, is_proportion, reference_level

INTERVAL_LEVEL = 0.90
MIN_FITTED = 2  # checkpoints at distinct losses needed for a line
ITEM_COLUMNS = ["checkpoint", "loss", "task", "doc_id", "exact", "target_logprob", "target_num_tokens"]
# the exact-match metric a task's prediction is about, when its primary metric is not one (BLEU)
EXACT_MATCH_FALLBACKS = ("exact_match", "exact_match_strict", "exact_match_flexible")


@dataclass(frozen=True)
class PredictionTest:
    task: str
    metric: str  # the exact-match metric predicted
    cut: float | None
    cut_source: str  # "departure of <metric>", "median loss" or "given"
    fitted: int  # checkpoints above the cut
    held_out: int
    slope: float | None  # of the mean per-token target log-prob against loss
    intercept: float | None
    surrogate_mae: float | None
    baseline_mae: float | None
    measured_departure: float | None
    departure_low: float | None  # the measured departure's bootstrap interval
    departure_high: float | None
    surrogate_departure: float | None
    baseline_departure: float | None
    surrogate_inside: bool | None  # None when there is no measured interval to compare with
    baseline_inside: bool | None
    note: str
    points: pd.DataFrame  # per checkpoint: checkpoint, loss, role, measured, surrogate, baseline, per_token, n


def exact_match_metric(primary: str, available: set[str]) -> str | None:
    """The task's primary metric when it is an exact match (a 0/1 per item), else the first fallback it has."""
    if is_proportion(primary) and primary in available:
        return primary
    return next((m for m in EXACT_MATCH_FALLBACKS if m in available), None)


def read_item_records(root: Path, tasks: set[str], metric: str) -> pd.DataFrame:
    """Every generative item record of ``tasks`` (table rows) under ``root`` with its checkpoint's
    loss: one row per (checkpoint folder, item).  Only records with ``target_logprobs`` are read."""
    rows = []
    for folder in store.find_checkpoint_dirs(Path(root)):
        results = store.merged_results(folder)
        if results is None:
            path = folder / store.RESULTS_NAME
            results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        loss = (results.get("loss") or {}).get("loss")
        if loss is None:
            continue
        # a sweep folder: only the item logs of the units its merged view keeps (a rerun with other
        # settings supersedes older units, whose records must not mix in); an eval folder: items.jsonl
        units = results.get("units") or {}
        paths = [folder / store.ITEMS_NAME] + [folder / unit["items"] for unit in units.values() if "items" in unit]
        for path in paths:
            if not path.exists():
                continue
            for record in store.read_partial_jsonl(path):
                if record.get("task") not in tasks or "target_logprobs" not in record:
                    continue
                best = int(np.argmax(record["target_logprobs"]))
                rows.append({
                    "checkpoint": str(folder), "loss": float(loss), "task": record["task"], "doc_id": record["doc_id"],
                    "exact": record["metrics"].get(metric), "target_logprob": record["metrics"]["target_logprob"],
                    "target_num_tokens": record["target_num_tokens"][best],
                })
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    # a checkpoint evaluated twice (a sweep unit and an eval file) keeps one record per item
    return frame.dropna(subset=["exact"]).drop_duplicates(["checkpoint", "task", "doc_id"], keep="last")


def _per_checkpoint(items: pd.DataFrame) -> pd.DataFrame:
    items = items.assign(per_token=items["target_logprob"] / items["target_num_tokens"].clip(lower=1))
    grouped = items.groupby("checkpoint", sort=False)
    out = pd.DataFrame({
        "loss": grouped["loss"].first(), "measured": grouped["exact"].mean(),
        "per_token": grouped["per_token"].mean(), "n": grouped["exact"].size(),
    }).reset_index()
    return out.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares intercept and slope of y against x."""
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def significant(values: np.ndarray, n: np.ndarray, reference: float) -> np.ndarray:
    """``thresholds.exceeds`` for a higher-is-better proportion, vectorised over checkpoints (the
    bootstrap below calls it thousands of times): round(value·n) successes in n items beat
    p = reference by an exact one-sided binomial test."""
    n = np.asarray(n, dtype=float)
    successes = np.round(np.asarray(values, dtype=float) * n)
    p_values = stats.binom.sf(successes - 1, n, min(max(reference, 0.0), 1.0))
    return (np.asarray(values, dtype=float) > reference) & (p_values < ONE_SIDED_ALPHA) & (n > 0)


def _departure(values: np.ndarray, loss: np.ndarray, n: np.ndarray, reference: float) -> float | None:
    """``thresholds.departure_loss`` with ``significant``: the highest loss below which every checkpoint beats the reference."""
    above = significant(values, n, reference)
    departure = None
    for level in np.unique(loss):
        if not above[loss == level].all():
            break
        departure = float(level)
    return departure


def _departure_interval(
    items: pd.DataFrame, checkpoints: pd.DataFrame, reference: float, resamples: int, seed: int
) -> tuple[float | None, float | None]:
    """90% interval of the measured departure loss over item resamples (the same items at every
    checkpoint, so a resample is a different test set, not different noise per checkpoint)."""
    table = items.assign(key=items["task"].astype(str) + "\x1f" + items["doc_id"].astype(str)).pivot_table(
        index="checkpoint", columns="key", values="exact", aggfunc="mean"
    ).reindex(checkpoints["checkpoint"])
    values = table.to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    departures = []
    for _ in range(resamples):
        sample = values[:, rng.integers(0, values.shape[1], values.shape[1])]
        present = np.isfinite(sample)
        counts = present.sum(axis=1)
        means = np.where(counts > 0, np.nansum(sample, axis=1) / np.maximum(counts, 1), np.nan)
        ok = counts > 0
        found = _departure(means[ok], checkpoints["loss"].to_numpy()[ok], counts[ok], reference)
        if found is not None:
            departures.append(found)
    if len(departures) < resamples / 2:  # most resamples show no departure: no interval to speak of
        return None, None
    tail = (1 - INTERVAL_LEVEL) / 2 * 100
    low, high = np.percentile(departures, [tail, 100 - tail])
    # Checkpoints resolve a departure no finer than their spacing: it lies between the first checkpoint
    # that beats the reference and the next one up, so the interval reaches that next checkpoint.
    above = checkpoints["loss"].to_numpy(dtype=float)
    above = above[above > high]
    return float(low), float(above.min()) if len(above) else float(high)


def prediction_test(
    items: pd.DataFrame,
    task: str,
    metric: str,
    *,
    cut: float | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> PredictionTest:
    """Run the test on ``items`` (``ITEM_COLUMNS``: one row per checkpoint × item, ``exact`` 0/1)."""
    items = items.dropna(subset=["loss", "exact", "target_logprob"])
    checkpoints = _per_checkpoint(items)
    loss, measured, n = (checkpoints[c].to_numpy(dtype=float) for c in ("loss", "measured", "n"))
    empty = dict(task=task, metric=metric, slope=None, intercept=None, surrogate_mae=None, baseline_mae=None,
                 surrogate_departure=None, baseline_departure=None, surrogate_inside=None, baseline_inside=None)
    if len(checkpoints) == 0:
        return PredictionTest(**empty, cut=cut, cut_source="given" if cut is not None else "", fitted=0, held_out=0,
                              measured_departure=None, departure_low=None, departure_high=None,
                              note="no checkpoint has item records with a loss", points=checkpoints)
    measured_curve = Curve.of(loss, measured, np.full(len(loss), np.nan), n, metric, True)
    reference = reference_level(measured_curve).value
    measured_departure = departure_loss(measured_curve, reference)
    if cut is not None:
        cut_source = "given"
    elif measured_departure is not None and measured_departure < loss.max():
        cut, cut_source = measured_departure, f"departure of {metric}"
    else:
        cut, cut_source = float(np.median(loss)), "median loss"
    fitted = loss > cut
    checkpoints["role"] = np.where(fitted, "fitted", "held out")
    low, high = _departure_interval(items, checkpoints, reference, resamples, seed)
    base = dict(cut=cut, cut_source=cut_source, fitted=int(fitted.sum()), held_out=int((~fitted).sum()),
                measured_departure=measured_departure, departure_low=low, departure_high=high)
    if len(np.unique(loss[fitted])) < MIN_FITTED or fitted.all():
        note = (f"not testable: {int(fitted.sum())} checkpoints above the cut {cut:.3f} and "
                f"{int((~fitted).sum())} below; the fit needs {MIN_FITTED} losses above and one below")
        return PredictionTest(**empty, **base, note=note, points=checkpoints)

    intercept, slope = _line(loss[fitted], checkpoints.loc[fitted, "per_token"].to_numpy())
    anchor = checkpoints.loc[fitted, "checkpoint"].iloc[int(np.argmin(loss[fitted]))]
    at_anchor = items[items["checkpoint"] == anchor]
    tokens = at_anchor["target_num_tokens"].clip(lower=1).to_numpy(dtype=float)
    offsets = at_anchor["target_logprob"].to_numpy(dtype=float) / tokens - (intercept + slope * float(at_anchor["loss"].iloc[0]))
    per_token = np.minimum(intercept + slope * loss[:, None] + offsets[None, :], 0.0)  # [checkpoints, items]
    surrogate = np.exp(per_token * tokens[None, :]).mean(axis=1)
    b_intercept, b_slope = _line(loss[fitted], measured[fitted])
    baseline = np.clip(b_intercept + b_slope * loss, 0.0, 1.0)
    checkpoints["surrogate"], checkpoints["baseline"] = surrogate, baseline
    held = ~fitted
    surrogate_departure = _departure(surrogate, loss, n, reference)
    baseline_departure = _departure(baseline, loss, n, reference)

    def inside(value: float | None) -> bool | None:
        if low is None:
            return None
        return value is not None and low <= value <= high

    s_mae = float(np.abs(surrogate[held] - measured[held]).mean())
    b_mae = float(np.abs(baseline[held] - measured[held]).mean())
    s_inside, b_inside = inside(surrogate_departure), inside(baseline_departure)
    if low is None:
        note = "exact match shows no departure within the observed losses: only the errors can be compared"
    elif s_inside and s_mae <= b_mae:
        note = "the surrogate predicts the jump: its departure lies in the measured interval and it beats the baseline"
    elif s_inside:
        note = "the surrogate's departure lies in the measured interval, but the naive baseline is closer"
    else:
        note = "the surrogate does not predict the jump: its departure lies outside the measured interval"
    return PredictionTest(
        task=task, metric=metric, **base, slope=slope, intercept=intercept, surrogate_mae=s_mae, baseline_mae=b_mae,
        surrogate_departure=surrogate_departure, baseline_departure=baseline_departure,
        surrogate_inside=s_inside, baseline_inside=b_inside, note=note, points=checkpoints,
    )
