"""How closely a task's metric follows the pre-training loss: Spearman and Pearson, with n (Du et al.'s Table 2),
over every model's checkpoints and over each model's own."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.analysis.points import POOLED


@dataclass(frozen=True)
class Correlation:
    n: int  # checkpoints with both a loss and a value
    spearman: float  # nan when undefined (fewer than 3 points, or a constant input)
    spearman_p: float
    pearson: float
    pearson_p: float


def loss_correlation(loss, value) -> Correlation:
    """Correlation of ``value`` with ``loss`` over the checkpoints where both are known.

    The sign is kept: for a higher-is-better metric that improves as the loss falls it is negative.
    """
    x, y = np.asarray(loss, dtype=float), np.asarray(value, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    nan = float("nan")
    # scipy warns and returns nan on a constant input; below 3 points a correlation says nothing.
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(n, nan, nan, nan, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho, rho_p = stats.spearmanr(x, y)
        r, r_p = stats.pearsonr(x, y)
    return Correlation(n, float(rho), float(rho_p), float(r), float(r_p))



def correlation_table(points: pd.DataFrame, tasks: list[str], max_loss: float | None = None) -> pd.DataFrame:
    """Per (task, metric): the correlation over every model's checkpoints (``scope`` POOLED) and over
    each model's own (``scope`` its label), each row saying which points it used.

    ``max_loss`` leaves out checkpoints above that loss: a step-0 model sits at about ln(vocabulary)
    nats (10.8 for Pythia), far from every trained checkpoint, and alone makes |r| large.
    """
    rows = []
    chosen = points[points["task"].isin(tasks) & points["loss"].notna()]
    for (task, metric), group in chosen.groupby(["task", "metric"], sort=False):
        scopes = [(POOLED, group)] + [(label, g) for label, g in group.groupby("series_label", sort=False)]
        for scope, g in scopes:
            kept = g if max_loss is None else g[g["loss"] <= max_loss]
            c = loss_correlation(kept["loss"], kept["value"])
            rows.append({"task": task, "metric": metric, "scope": scope, **vars(c),
                         "left_out": len(g) - len(kept), "max_loss": max_loss,
                         "loss_min": float(kept["loss"].min()) if len(kept) else np.nan,
                         "loss_max": float(kept["loss"].max()) if len(kept) else np.nan})
    return pd.DataFrame(rows, columns=["task", "metric", "scope", "n", "spearman", "spearman_p", "pearson", "pearson_p",
                                       "left_out", "max_loss", "loss_min", "loss_max"])
