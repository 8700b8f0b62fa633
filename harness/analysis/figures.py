"""The report's figures: performance against loss, compute or step, one colour per model size (Du et al.'s style).

Every function takes the report's points table (one row per checkpoint × task × metric, columns
``task, metric, series, series_label, step, loss, compute, value, stderr, random_baseline,
higher_is_better``) and writes a PNG and an SVG. Figures have a fixed size in inches (no tight
bounding box), so a PNG's pixel size is known in advance: ``figure_inches(...)`` × ``DPI``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.analysis.thresholds import Threshold

DPI = 100
PANEL_INCHES = (4.2, 3.2)
HEADER_INCHES = 1.0  # room for the title above the panels and the legend below them
GRID_COLUMNS = 3
MULTIPLE_CHOICE_METRICS = ("acc", "correct_choice_prob", "brier_score")

X_LABELS = {
    "loss": "pre-training loss (nats/token)",
    "compute": "training compute 6·N·D (FLOPs)",
    "params": "non-embedding parameters",
    "step": "training step",
}
LOG_X = ("compute", "params")  # axes drawn on a log scale whenever every value is positive
BASELINE_STYLE = {"color": "0.35", "linestyle": "--", "linewidth": 1.2}
PLATEAU_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.2}


def grid_shape(panels: int) -> tuple[int, int]:
    cols = min(panels, GRID_COLUMNS)
    return math.ceil(panels / cols), cols


def figure_inches(rows: int, cols: int) -> tuple[float, float]:
    return PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows + HEADER_INCHES


LINE_STYLES = ("-", "--", ":", "-.")  # variants of one size (standard, deduplicated, ...), in name order


def series_colours(series: Sequence[str]) -> dict[str, tuple]:
    # Ordered small → large; viridis stops before its pale yellow end so every line reads on white.
    cmap = matplotlib.colormaps["viridis"]
    steps = np.linspace(0.0, 0.85, len(series)) if len(series) > 1 else [0.0]
    return {s: cmap(x) for s, x in zip(series, steps)}


def series_styles(points: pd.DataFrame, series: Sequence[str]) -> dict[str, dict]:
    """Colour by size group (``series_colours`` over the groups), line style by variant within a group."""
    groups = points.drop_duplicates("series").set_index("series")["size_group"] if "size_group" in points.columns else None
    group_of = {s: (groups.get(s, s) if groups is not None else s) for s in series}
    colour = series_colours(list(dict.fromkeys(group_of[s] for s in series)))
    styles, seen = {}, {}
    for s in series:
        g = group_of[s]
        variant = seen.setdefault(g, 0)
        seen[g] += 1
        styles[s] = {"color": colour[g], "linestyle": LINE_STYLES[variant % len(LINE_STYLES)]}
    return styles


def _scale_x(ax, x: str, values: np.ndarray) -> None:
    if x == "loss":
        ax.invert_xaxis()  # training runs left to right: high loss on the left
        return
    if x in LOG_X and len(values) and (values > 0).all():
        ax.set_xscale("log")
        return
    positive = values[values > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        # Pythia-style steps (0, 1, 2, 4, ..., 143000) and compute span decades and include 0.
        if (values > 0).all():
            ax.set_xscale("log")
        else:
            ax.set_xscale("symlog", linthresh=float(positive.min()))


def x_label(points: pd.DataFrame, x: str) -> str:
    """The axis label; a loss taken from a task's perplexity (``--loss-from-task``) is named as the proxy it is."""
    sources = points["loss_source"].dropna().astype(str) if x == "loss" and "loss_source" in points else pd.Series(dtype=str)
    proxy = next((s for s in sources if s.startswith("task:")), None)
    if proxy is not None:
        task, metric = proxy.removeprefix("task:").rsplit(":", 1)
        return f"ln({task} {metric}) (a loss proxy)"
    return X_LABELS[x]


def _metric_label(metric: str, higher_is_better: bool) -> str:
    return metric if higher_is_better else f"{metric} (lower is better)"


def _draw_panel(ax, panel: pd.DataFrame, x: str, styles: Mapping[str, dict], labels: dict[str, str]) -> None:
    for series, rows in panel.groupby("series", sort=False):
        rows = rows.dropna(subset=[x, "value"]).sort_values(x)
        if rows.empty:
            continue
        yerr = rows["stderr"].to_numpy(dtype=float)
        ax.errorbar(
            rows[x].to_numpy(dtype=float), rows["value"].to_numpy(dtype=float),
            yerr=np.where(np.isfinite(yerr), yerr, 0.0),
            **styles[series], marker="o", markersize=3, linewidth=1.2, elinewidth=0.8, capsize=0,
        )
        labels[series] = rows["series_label"].iloc[0]
    baseline = pd.to_numeric(panel["random_baseline"], errors="coerce").dropna()
    if len(baseline):
        ax.axhline(float(baseline.median()), **BASELINE_STYLE)
    _scale_x(ax, x, pd.to_numeric(panel[x], errors="coerce").dropna().to_numpy(dtype=float))
    ax.set_xlabel(x_label(panel, x))
    ax.grid(alpha=0.25)


def _mark_threshold(ax, threshold: Threshold | None) -> list[str]:
    """η and its interval on a loss panel; a plateau reference as a dotted line. Returns legend keys used."""
    used = []
    if threshold is None:
        return used
    if threshold.reference is not None and threshold.reference.kind == "plateau":
        ax.axhline(threshold.reference.value, **PLATEAU_STYLE)
        used.append("plateau")
    if threshold.eta is not None:
        ax.axvspan(threshold.low, threshold.high, color="tab:red", alpha=0.12, linewidth=0)
        ax.axvline(threshold.eta, color="tab:red", linewidth=1.0)
        used.append("eta")
    return used


def _legend(fig, order: Sequence[str], styles, labels: dict[str, str], extras: set[str], baseline: bool) -> None:
    handles = [Line2D([], [], **styles[s], marker="o", markersize=4, label=labels[s]) for s in order if s in labels]
    if baseline:
        handles.append(Line2D([], [], label="random baseline", **BASELINE_STYLE))
    if "plateau" in extras:
        handles.append(Line2D([], [], label="plateau reference", **PLATEAU_STYLE))
    if "eta" in extras:
        handles.append(Patch(facecolor="tab:red", alpha=0.3, edgecolor="tab:red", label="threshold η, 90% interval"))
    # an entry is about 0.075 inch a character at 9 pt plus its handle: as many as fit the width
    longest = max((len(h.get_label()) for h in handles), default=10)
    per_row = max(1, int(fig.get_figwidth() * 0.95 // (0.075 * longest + 0.6)))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), per_row), frameon=False, fontsize=9)


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


def performance_grid(
    points: pd.DataFrame,
    panels: Sequence[tuple[str, str]],
    x: str,
    stem: Path,
    series_order: Sequence[str],
    thresholds: Mapping[str, Threshold] | None = None,
) -> list[Path]:
    """One panel per (task, metric), every size in its colour, against ``x`` in {loss, compute, step}.

    Error bars are ±1 stored standard error; the random baseline is dashed; on the loss axis the
    pooled threshold η of each task is drawn with its bootstrap interval.
    """
    rows, cols = grid_shape(len(panels))
    fig = Figure(figsize=figure_inches(rows, cols), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    styles, labels, extras, baseline = series_styles(points, series_order), {}, set(), False
    for ax, (task, metric) in zip(axes.flat, panels):
        panel = points[(points["task"] == task) & (points["metric"] == metric)]
        _draw_panel(ax, panel, x, styles, labels)
        baseline |= bool(pd.to_numeric(panel["random_baseline"], errors="coerce").notna().any())
        threshold = thresholds.get(task) if x == "loss" and thresholds is not None else None
        extras.update(_mark_threshold(ax, threshold))
        higher = bool(panel["higher_is_better"].iloc[0]) if len(panel) else True
        ax.set_ylabel(_metric_label(metric, higher))
        ax.set_title(task if threshold is None else f"{task}: {threshold.status}", fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    what = {"loss": "pre-training loss", "compute": "training compute", "step": "training step"}[x]
    if x_label(points, x) != X_LABELS[x]:
        what = x_label(points, x)
    fig.suptitle(f"Performance against {what}", fontsize=12)
    _legend(fig, series_order, styles, labels, extras, baseline)
    return _save(fig, stem)


def multiple_choice_figure(points: pd.DataFrame, task: str, x: str, stem: Path, series_order: Sequence[str]) -> list[Path]:
    """Accuracy, probability of the correct choice and Brier score side by side (Du et al.'s Figure 4).

    Each panel's dashed line is that metric's own random baseline: 1/C for the first two and
    (C − 1)/C for the Brier score of a uniform guess.
    """
    fig = Figure(figsize=figure_inches(1, 3), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3, squeeze=False)
    styles, labels, baseline = series_styles(points, series_order), {}, False
    for ax, metric in zip(axes.flat, MULTIPLE_CHOICE_METRICS):
        panel = points[(points["task"] == task) & (points["metric"] == metric)]
        _draw_panel(ax, panel, x, styles, labels)
        baseline |= bool(pd.to_numeric(panel["random_baseline"], errors="coerce").notna().any())
        higher = bool(panel["higher_is_better"].iloc[0]) if len(panel) else metric != "brier_score"
        ax.set_ylabel(_metric_label(metric, higher))
        ax.set_title(metric, fontsize=10)
    fig.suptitle(f"{task}: accuracy and its continuous companions against {X_LABELS[x].split(' (')[0]}", fontsize=12)
    _legend(fig, series_order, styles, labels, set(), baseline)
    return _save(fig, stem)


def companions_figure(
    points: pd.DataFrame, task: str, metrics: Sequence[str], x: str, stem: Path, series_order: Sequence[str],
    y_scale: str = "linear",
) -> list[Path]:
    """A generative task's exact match and its continuous companions side by side, against ``x``.

    ``y_scale`` "log" draws a panel on a log scale when all its values are positive (edit
    distances); log-probabilities are negative and stay linear.
    """
    rows, cols = grid_shape(len(metrics))
    fig = Figure(figsize=figure_inches(rows, cols), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    styles, labels, baseline = series_styles(points, series_order), {}, False
    for ax, metric in zip(axes.flat, metrics):
        panel = points[(points["task"] == task) & (points["metric"] == metric)]
        _draw_panel(ax, panel, x, styles, labels)
        baseline |= bool(pd.to_numeric(panel["random_baseline"], errors="coerce").notna().any())
        values = pd.to_numeric(panel["value"], errors="coerce").dropna()
        if y_scale == "log" and len(values) and (values > 0).all():
            ax.set_yscale("log")
        higher = bool(panel["higher_is_better"].iloc[0]) if len(panel) else True
        ax.set_ylabel(_metric_label(metric, higher))
        ax.set_title(metric, fontsize=10)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{task}: exact match and its continuous companions against {X_LABELS[x].split(' (')[0]}", fontsize=12)
    _legend(fig, series_order, styles, labels, set(), baseline)
    return _save(fig, stem)


FITTED_STYLE = {"marker": "o", "color": "tab:blue", "linestyle": "none", "markersize": 5}
HELD_OUT_STYLE = {"marker": "o", "markerfacecolor": "white", "color": "tab:blue", "linestyle": "none", "markersize": 5}


def prediction_figure(points: pd.DataFrame, task: str, metric: str, cut: float | None,
                      departure_interval: tuple[float | None, float | None], stem: Path) -> list[Path]:
    """The prediction test of one task against loss: measured exact match at the fitted (filled) and
    held-out (hollow) checkpoints, the surrogate's prediction and the naive baseline, the cut, and
    the measured departure's interval."""
    fig = Figure(figsize=figure_inches(1, 2), dpi=DPI, layout="constrained")  # wide: room for a 6-entry legend
    ax = fig.subplots()
    points = points.sort_values("loss")
    fitted = points[points["role"] == "fitted"]
    held = points[points["role"] != "fitted"]
    ax.plot(fitted["loss"], fitted["measured"], label="measured, fitted", **FITTED_STYLE)
    ax.plot(held["loss"], held["measured"], label="measured, held out", **HELD_OUT_STYLE)
    if "surrogate" in points.columns:
        ax.plot(points["loss"], points["surrogate"], color="tab:orange", linewidth=1.5, label="predicted: mean exp(target_logprob)")
        ax.plot(points["loss"], points["baseline"], color="0.35", linestyle="--", linewidth=1.2,
                label="naive: exact match linear in loss")
    if cut is not None:
        ax.axvline(cut, color="tab:red", linewidth=1.0, label="cut")
    low, high = departure_interval
    if low is not None and high is not None:
        ax.axvspan(low, high, color="tab:red", alpha=0.12, linewidth=0, label="measured departure, 90% interval")
    ax.invert_xaxis()
    ax.set_xlabel(X_LABELS["loss"])
    ax.set_ylabel(metric)
    ax.set_title(task, fontsize=10)
    ax.grid(alpha=0.25)
    fig.suptitle("Prediction test", fontsize=12)
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=7)
    return _save(fig, stem)


STATUS_COLOURS = {"emerged": "tab:red"}


def thresholds_figure(thresholds: pd.DataFrame, stem: Path, pooled_scope: str, loss_label: str | None = None) -> list[Path]:
    """One panel per task: every curve's status, and η with its 90% interval where it emerged.

    ``thresholds`` is the report's thresholds.csv (task, scope, status, eta, eta_low, eta_high); the
    pooled curve is the top row of each panel. A curve without η shows its status in words, so
    "no emergence" is never drawn as a number.
    """
    tasks = list(dict.fromkeys(thresholds["task"]))
    rows, cols = grid_shape(len(tasks))
    scopes = max(int((thresholds["task"] == t).sum()) for t in tasks)
    height = max(PANEL_INCHES[1], 0.32 * scopes + 1.2)
    fig = Figure(figsize=(PANEL_INCHES[0] * cols, height * rows + HEADER_INCHES), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        panel = thresholds[thresholds["task"] == task].reset_index(drop=True)
        panel = pd.concat([panel[panel["scope"] == pooled_scope], panel[panel["scope"] != pooled_scope]], ignore_index=True)
        y = np.arange(len(panel))[::-1]
        finite = pd.to_numeric(panel[["eta_low", "eta_high"]].stack(), errors="coerce").dropna()
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        text_at = hi + 0.05 * max(hi - lo, 0.1)
        for yi, row in zip(y, panel.itertuples()):
            eta = pd.to_numeric(pd.Series([row.eta]), errors="coerce").iloc[0]
            if np.isfinite(eta):
                ax.errorbar([eta], [yi], xerr=[[eta - float(row.eta_low)], [float(row.eta_high) - eta]],
                            color="tab:red", marker="o", markersize=4, capsize=3,
                            linewidth=2.0 if row.scope == pooled_scope else 1.2)
            else:
                ax.text(text_at, yi, str(row.status), va="center", ha="left", fontsize=8, color="0.3")
        ax.set_yticks(y, [str(s) for s in panel["scope"]], fontsize=8)
        ax.set_ylim(-0.7, len(panel) - 0.3)
        ax.set_xlim(hi + 0.6 * max(hi - lo, 0.2), lo - 0.1 * max(hi - lo, 0.2))  # high loss on the left
        ax.set_xlabel(loss_label or X_LABELS["loss"])
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.25, axis="x")
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    against = "" if not loss_label or loss_label == X_LABELS["loss"] else f" on {loss_label}"
    fig.suptitle(f"Emergence threshold η per curve (90% interval){against}; status where none", fontsize=12)
    return _save(fig, stem)
