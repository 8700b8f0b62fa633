"""The prediction test: can a smooth surrogate, measured where exact match has not jumped, predict the jump?

One generative task, many checkpoints, per-item records (each unit's item log: each item's exact match
and ``target_logprob``, the log-probability of its gold continuation).  The test is outcome-blind:
nothing measured at a held-out checkpoint enters the fit or the choice of the split.

1. split the checkpoints, in one of two ways fixed before exact match is looked at:
   - ``largest`` (the default with two or more models): *fit* every checkpoint of the smaller
     models, *hold out* the largest model's curve (Wei's question: can smaller models tell where a
     larger one jumps?);
   - ``quantile``: cut the loss axis at a fixed quantile of the checkpoints' losses (default the
     median; ``cut`` gives the loss itself); checkpoints above the cut are fitted;
2. fit the surrogate's trend on the fitted checkpoints only: the mean per-token target
   log-probability, linear in the loss, m(L) = a + b·L;
3. extrapolate per item by a shift: item i keeps its offset from the trend at the *anchor*, the
   fitted checkpoint of lowest loss: o_i = t_i(anchor) − m(L_anchor), t_i its per-token log-prob; at
   loss L its predicted log-prob is n_i · min(m(L) + o_i, 0), n_i its gold's token count.  One slope
   for every item (a per-item fit from a handful of noisy points extrapolates worse);
4. map to exact match through a fixed link with no parameter: predicted exact match at L = mean
   over items of exp(predicted log-prob), the probability of producing the gold answer;
5. compare on the held-out checkpoints: mean absolute error against the measured exact match, and
   the departure loss of the predicted curve (``thresholds``' rule, applied to the predicted values
   alone) with the measured departure's 90% interval (a bootstrap over items, reaching up to the next
   checkpoint: checkpoints resolve a departure no finer than their spacing), beside a naive
   baseline that extrapolates exact match itself linearly in the loss from the same fitted checkpoints.

When exp(target_logprob) is each item's success probability the surrogate recovers the jump the
baseline cannot see coming; when it is not, the error and the departure say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.analysis.curves import Curve, is_proportion
from harness.analysis.departure import departure_loss, reference_level
from harness.analysis.points import series_of

INTERVAL_LEVEL = 0.90
MIN_FITTED = 2  # checkpoints at distinct losses needed for a line
ITEM_COLUMNS = ["checkpoint", "series", "params", "loss", "task", "doc_id", "exact", "target_logprob", "target_num_tokens"]
# the exact-match metric a task's prediction is about, when its primary metric is not one (BLEU)
EXACT_MATCH_FALLBACKS = ("exact_match", "exact_match_strict", "exact_match_flexible")
MODES = ("largest", "quantile")
MAX_ERROR_SHARE = 0.25  # "predicts the jump" needs a held-out mean error under this share of the measured rise


@dataclass(frozen=True)
class PredictionTest:
    task: str
    metric: str  # the exact-match metric predicted
    mode: str  # "largest" or "quantile"
    split: str  # what was fitted and what was predicted, in words
    cut: float | None  # quantile mode: the loss that splits fitted from held-out checkpoints
    cut_source: str  # "quantile 0.5 of the losses", "given" or ""
    fitted: int  # checkpoints fitted
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
    points: pd.DataFrame  # per checkpoint: checkpoint, series, loss, role, measured, surrogate, baseline, per_token, n


def exact_match_metric(primary: str, available: set[str]) -> str | None:
    """The task's primary metric when it is an exact match (a 0/1 per item), else the first fallback it has."""
    if is_proportion(primary) and primary in available:
        return primary
    return next((m for m in EXACT_MATCH_FALLBACKS if m in available), None)


def read_item_records(root: Path, tasks: set[str], metric: str) -> pd.DataFrame:
    """Every generative item record of ``tasks`` (table rows) under ``root`` with its checkpoint's
    loss and model: one row per (checkpoint folder, item).  Only records with ``target_logprobs`` are read."""
    rows = []
    for folder in store.find_checkpoint_dirs(Path(root)):
        results = store.merged_results(folder)
        if results is None:
            path = folder / store.RESULTS_NAME
            results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        loss = (results.get("loss") or {}).get("loss")
        if loss is None:
            continue
        model = results.get("model") or {}
        # the report's series key, from the same fields `table.checkpoint_rows` reads
        name = results.get("name") or model.get("model") or (results.get("checkpoint") or {}).get("model")
        series = series_of(name, model.get("revision"))
        params = model.get("params_non_embedding")
        # only the item logs of the units the merged view keeps (a rerun with other settings
        # supersedes older units, whose records must not mix in)
        units = results.get("units") or {}
        for path in [folder / unit["items"] for unit in units.values() if "items" in unit]:
            for record in store.read_partial_jsonl(path):
                if record.get("task") not in tasks or "target_logprobs" not in record:
                    continue
                best = int(np.argmax(record["target_logprobs"]))
                rows.append({
                    "checkpoint": str(folder), "series": series, "params": np.nan if params is None else float(params),
                    "loss": float(loss), "task": record["task"], "doc_id": record["doc_id"],
                    "exact": record["metrics"].get(metric), "target_logprob": record["metrics"]["target_logprob"],
                    "target_num_tokens": record["target_num_tokens"][best],
                })
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    # a task listed under two units (a group and one of its subtasks run apart) keeps one record per item
    return frame.dropna(subset=["exact"]).drop_duplicates(["checkpoint", "task", "doc_id"], keep="last")


def _per_checkpoint(items: pd.DataFrame) -> pd.DataFrame:
    items = items.assign(per_token=items["target_logprob"] / items["target_num_tokens"].clip(lower=1))
    grouped = items.groupby("checkpoint", sort=False)
    out = pd.DataFrame({
        "series": grouped["series"].first(), "params": grouped["params"].first(),
        "loss": grouped["loss"].first(), "measured": grouped["exact"].mean(),
        "per_token": grouped["per_token"].mean(), "n": grouped["exact"].size(),
    }).reset_index()
    return out.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares intercept and slope of y against x."""
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def departure_of(values: np.ndarray, loss: np.ndarray, n: np.ndarray, metric: str) -> float | None:
    """The departure loss of one curve by ``thresholds``' rule, its reference estimated from the curve itself."""
    curve = Curve.of(loss, values, np.full(len(loss), np.nan), n, metric, True)
    return departure_loss(curve, reference_level(curve))


def _departure_interval(items: pd.DataFrame, checkpoints: pd.DataFrame, metric: str, resamples: int,
                        seed: int) -> tuple[float | None, float | None]:
    """90% interval of the measured departure loss over item resamples (the same items at every
    checkpoint, so a resample is a different test set, not different noise per checkpoint)."""
    table = items.assign(key=items["task"].astype(str) + "\x1f" + items["doc_id"].astype(str)).pivot_table(
        index="checkpoint", columns="key", values="exact", aggfunc="mean"
    ).reindex(checkpoints["checkpoint"])
    values = table.to_numpy(dtype=float)
    loss = checkpoints["loss"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    departures = []
    for _ in range(resamples):
        sample = values[:, rng.integers(0, values.shape[1], values.shape[1])]
        counts = np.isfinite(sample).sum(axis=1)
        ok = counts > 0
        means = np.nansum(sample, axis=1)[ok] / counts[ok]
        found = departure_of(means, loss[ok], counts[ok], metric)
        if found is not None:
            departures.append(found)
    if len(departures) < resamples / 2:  # most resamples show no departure: no interval to speak of
        return None, None
    tail = (1 - INTERVAL_LEVEL) / 2 * 100
    low, high = np.percentile(departures, [tail, 100 - tail])
    # Checkpoints resolve a departure no finer than their spacing: it lies between the first checkpoint
    # that beats the reference and the next one up, so the interval reaches that next checkpoint.
    above = loss[loss > high]
    return float(low), float(above.min()) if len(above) else float(high)


def split_checkpoints(checkpoints: pd.DataFrame, mode: str | None, cut: float | None,
                      cut_quantile: float) -> tuple[np.ndarray, str, float | None, str, str]:
    """Which checkpoints are fitted, decided from the models' sizes and the losses alone (never from
    exact match or any held-out value). Returns (fitted mask, mode, cut, cut source, split in words)."""
    series = checkpoints["series"].astype(str)
    if cut is not None:
        mode = "quantile"
    elif mode is None:
        mode = "largest" if series.nunique() > 1 else "quantile"
    if mode not in MODES:
        raise ValueError(f"unknown prediction mode {mode!r}; use one of {MODES}")
    if mode == "largest":
        params = checkpoints.groupby("series")["params"].first()
        ranked = sorted(params.index, key=lambda s: (np.nan_to_num(params[s], nan=-np.inf), s))
        largest = ranked[-1]
        fitted = (series != largest).to_numpy()
        smaller = ", ".join(ranked[:-1])
        return fitted, mode, None, "", f"fit every checkpoint of {smaller}; predict {largest}"
    loss = checkpoints["loss"].to_numpy(dtype=float)
    source = "given"
    if cut is None:
        cut, source = float(np.quantile(loss, cut_quantile)), f"quantile {cut_quantile:g} of the losses"
    return loss > cut, mode, float(cut), source, f"fit the checkpoints above loss {cut:.3f}; predict the rest"


def prediction_test(
    items: pd.DataFrame,
    task: str,
    metric: str,
    *,
    mode: str | None = None,
    cut: float | None = None,
    cut_quantile: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> PredictionTest:
    """Run the test on ``items`` (``ITEM_COLUMNS``: one row per checkpoint × item, ``exact`` 0/1).

    ``mode``: "largest" or "quantile" (default: "largest" when the items come from two or more
    models); ``cut`` a loss (implies "quantile"), else ``cut_quantile`` of the checkpoints' losses."""
    items = items.dropna(subset=["loss", "exact", "target_logprob"])
    if "series" not in items.columns:
        items = items.assign(series="", params=np.nan)
    checkpoints = _per_checkpoint(items)
    empty = dict(task=task, metric=metric, slope=None, intercept=None, surrogate_mae=None, baseline_mae=None,
                 surrogate_departure=None, baseline_departure=None, surrogate_inside=None, baseline_inside=None)
    if len(checkpoints) == 0:
        return PredictionTest(**empty, mode=mode or "", split="", cut=cut, cut_source="given" if cut is not None else "",
                              fitted=0, held_out=0, measured_departure=None, departure_low=None, departure_high=None,
                              note="no checkpoint has item records with a loss", points=checkpoints)
    fitted, mode, cut, cut_source, split = split_checkpoints(checkpoints, mode, cut, cut_quantile)
    held = ~fitted
    checkpoints["role"] = np.where(fitted, "fitted", "held out")
    loss, measured, n = (checkpoints[c].to_numpy(dtype=float) for c in ("loss", "measured", "n"))
    # The truth to compare with: the curve that is predicted (the largest model's, or every checkpoint's
    # when the loss axis is cut), its departure and that departure's interval.
    evaluated = held if mode == "largest" else np.ones(len(checkpoints), dtype=bool)
    measured_departure = departure_of(measured[evaluated], loss[evaluated], n[evaluated], metric) if evaluated.any() else None
    low, high = (_departure_interval(items[items["checkpoint"].isin(checkpoints.loc[evaluated, "checkpoint"])],
                                     checkpoints[evaluated], metric, resamples, seed) if evaluated.any() else (None, None))
    base = dict(mode=mode, split=split, cut=cut, cut_source=cut_source, fitted=int(fitted.sum()), held_out=int(held.sum()),
                measured_departure=measured_departure, departure_low=low, departure_high=high)
    if len(np.unique(loss[fitted])) < MIN_FITTED or not held.any():
        note = (f"not testable: {int(fitted.sum())} checkpoints fitted and {int(held.sum())} held out; "
                f"the fit needs {MIN_FITTED} losses and one checkpoint to predict")
        return PredictionTest(**empty, **base, note=note, points=checkpoints)

    # Everything from here to the predictions reads fitted checkpoints only.
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
    surrogate_departure = departure_of(surrogate[evaluated], loss[evaluated], n[evaluated], metric)
    baseline_departure = departure_of(baseline[evaluated], loss[evaluated], n[evaluated], metric)

    def inside(value: float | None) -> bool | None:
        if low is None:
            return None
        return value is not None and low <= value <= high

    s_mae = float(np.abs(surrogate[held] - measured[held]).mean())
    b_mae = float(np.abs(baseline[held] - measured[held]).mean())
    s_inside, b_inside = inside(surrogate_departure), inside(baseline_departure)
    # A departure in the right place is not enough: the predicted curve must also follow the jump's
    # size, its typical error under a quarter of the rise measured over the held-out checkpoints.
    rise = float(measured[held].max() - measured[held].min())
    close = s_mae <= MAX_ERROR_SHARE * rise
    if low is None:
        note = "exact match shows no departure within the observed losses: only the errors can be compared"
    elif s_inside and close and s_mae <= b_mae:
        note = "the surrogate predicts the jump: its departure lies in the measured interval and it beats the baseline"
    elif s_inside and not close:
        note = (f"the surrogate's departure lies in the measured interval, but it misses the jump's size "
                f"(mean error {s_mae:.3f} against a rise of {rise:.3f})")
    elif s_inside:
        note = "the surrogate's departure lies in the measured interval, but the naive baseline is closer"
    else:
        note = "the surrogate does not predict the jump: its departure lies outside the measured interval"
    return PredictionTest(
        task=task, metric=metric, **base, slope=slope, intercept=intercept, surrogate_mae=s_mae, baseline_mae=b_mae,
        surrogate_departure=surrogate_departure, baseline_departure=baseline_departure,
        surrogate_inside=s_inside, baseline_inside=b_inside, note=note, points=checkpoints,
    )
