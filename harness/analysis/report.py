"""``harness report``: from results to figures, correlations and every task's emergence verdict.

    results folder or table file ─► points (one row per checkpoint × task × metric, one series per model)
    ─► per task: correlations with the loss (pooled and per model), the pooled curve's and each
       model's threshold with its status, the test of one shared threshold across models
    ─► per generative task: the prediction test (from the per-item records of a results folder)
    ─► report.md, index.html, CSVs, figures (``report_pages``)

Reads only the store or a table (``harness table``'s columns), so imported and hand-made results work too.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import agreement as agreement_module
from harness.analysis import prediction
from harness.analysis.agreement import Agreement, agreement
from harness.analysis.arguments import AXES, check_report_arguments
from harness.analysis.correlations import Correlation, correlation_table, loss_correlation
from harness.analysis.curves import Curve
from harness.analysis.known_tasks import fill_known
from harness.analysis.points import prepare_points, read_results
from harness.analysis.report_pages import prediction_frame, summary_markdown, write_report
from harness.analysis.shapes import benjamini_hochberg
from harness.analysis.thresholds import Threshold, emergence_threshold, with_q
from harness.errors import UserError
from harness.scoring.companions import COMPANION_METRICS
from harness.table import markdown_table, with_task_loss

# bias benchmarks (stereotype preference): no "better" direction an ability rises in; left out by default
BIAS_TASK_PREFIXES = ("crows_pairs",)


@dataclass(frozen=True)
class TaskAnalysis:
    task: str
    metric: str
    correlation: Correlation  # pooled, over the points ``--max-loss`` keeps
    pooled: Threshold | None  # None when the results carry no loss
    by_model: dict[str, Threshold]  # keyed by series label, smallest model first
    agreement: Agreement | None  # None with fewer than two models
    best: dict  # the best checkpoint on this metric: series, step, revision, value, loss
    signal_noise: dict = dataclasses.field(default_factory=dict)  # signal, noise, ratio (Heineman et al. 2025)
    companion: Threshold | None = None  # the pooled verdict of the continuous companion (exact-match tasks)
    companion_metric: str | None = None


@dataclass(frozen=True)
class Report:
    source: str
    points: pd.DataFrame
    series_order: tuple[str, ...]  # one series per model, smallest size first
    analyses: tuple[TaskAnalysis, ...]
    correlations: pd.DataFrame  # every metric of every reported task, pooled and per model
    has_loss: bool
    has_compute: bool
    notes: tuple[str, ...]
    generative: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # task -> exact match + companions
    predictions: tuple[prediction.PredictionTest, ...] = ()
    x: str = "loss"  # axis of the companion figures
    y_scale: str = "linear"
    max_loss: float | None = None


def run(args: argparse.Namespace) -> int:
    check_report_arguments(args)
    source = Path(args.results)
    frame = read_results(source)
    if args.loss_from_task:
        frame = with_task_loss(frame, args.loss_from_task)
    report = build_report(frame, source=str(source), tasks=args.tasks, metric=args.metric,
                          resamples=args.bootstrap, seed=args.seed, items_root=source if source.is_dir() else None,
                          x=args.x, y_scale=args.y, cut=args.cut, predict=args.predict,
                          cut_quantile=args.cut_quantile, max_loss=args.max_loss)
    written = write_report(report, Path(args.out), with_figures=not args.no_figures)
    print(summary_markdown(report))
    if report.predictions:
        print()
        print(markdown_table(prediction_frame(report)))
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {Path(args.out) / 'index.html'} ({len(written)} files)")
    return 0


def select_tasks(points: pd.DataFrame, tasks: list[str] | None) -> list[str]:
    available = list(dict.fromkeys(points["task"]))
    if not tasks:
        top = set(points.loc[points["parent"].isna(), "task"])
        return [t for t in available if t in top] or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
        raise UserError(f"no results for task {', '.join(unknown)}; the results hold: {shown}")
    return list(dict.fromkeys(tasks))


def primary_metric(frame: pd.DataFrame, task: str) -> str:
    """The task's primary metric as the results mark it (the most frequent, should checkpoints differ)."""
    primary = frame["primary"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0")) if "primary" in frame else None
    marked = frame.loc[(frame["task"] == task) & primary, "metric"] if primary is not None else pd.Series(dtype=object)
    if marked.empty:
        return str(frame.loc[frame["task"] == task, "metric"].dropna().iloc[0])
    return str(marked.mode().iloc[0])


def _curve(rows: pd.DataFrame, metric: str) -> Curve:
    baseline = rows["random_baseline"].dropna()
    return Curve.of(rows["loss"], rows["value"], rows["stderr"], rows["n"], metric,
                    bool(rows["higher_is_better"].iloc[0]), float(baseline.median()) if len(baseline) else None)


LAST_CHECKPOINTS = 3  # the noise of a model: the relative spread of its last checkpoints


def signal_noise(rows: pd.DataFrame) -> dict:
    """Heineman et al. (2025): signal = spread of the final values across models relative to their mean,
    (max − min) / mean; noise = the relative spread of each model's last LAST_CHECKPOINTS checkpoints,
    std / mean, averaged over models; ratio = signal / noise. Empty with fewer than two models or
    checkpoints too few: a task whose final values differ less between models than one model's do
    between its last checkpoints cannot show a threshold at all."""
    finals, noises = [], []
    for _, model in rows.dropna(subset=["value"]).groupby("series"):
        order = model.sort_values("step") if model["step"].notna().all() else model.sort_values("loss", ascending=False)
        last = order["value"].to_numpy(float)[-LAST_CHECKPOINTS:]
        if len(last) < LAST_CHECKPOINTS:
            continue
        finals.append(last[-1])
        if abs(last.mean()) > 0:
            noises.append(last.std(ddof=1) / abs(last.mean()))
    if len(finals) < 2 or not noises:
        return {}
    mean = float(np.mean(finals))
    signal = float((max(finals) - min(finals)) / abs(mean)) if mean else float("nan")
    noise = float(np.mean(noises))
    return {"signal": signal, "noise": noise, "ratio": signal / noise if noise > 0 else float("inf")}


def best_checkpoint(rows: pd.DataFrame) -> dict:
    higher = bool(rows["higher_is_better"].iloc[0])
    best = rows.loc[rows["value"].idxmax() if higher else rows["value"].idxmin()]
    step = best["step"]
    return {"series": best["series_label"], "revision": best["revision"], "step": None if pd.isna(step) else int(step),
            "value": float(best["value"]), "loss": None if pd.isna(best["loss"]) else float(best["loss"])}


def analyse_task(points: pd.DataFrame, task: str, metric: str, series_order: tuple[str, ...],
                 resamples: int, seed: int, max_loss: float | None = None) -> TaskAnalysis:
    rows = points[(points["task"] == task) & (points["metric"] == metric)]
    kept = rows if max_loss is None else rows[rows["loss"] <= max_loss]
    correlation = loss_correlation(kept["loss"], kept["value"])
    with_loss = rows[rows["loss"].notna()]
    if with_loss.empty:
        return TaskAnalysis(task, metric, correlation, None, {}, None, best_checkpoint(rows), signal_noise(rows))
    pooled = emergence_threshold(_curve(with_loss, metric), resamples=resamples, seed=seed)
    curves = {}
    for series in series_order:
        model_rows = with_loss[with_loss["series"] == series]
        if not model_rows.empty:
            curves[model_rows["series_label"].iloc[0]] = _curve(model_rows, metric)
    by_model = {label: emergence_threshold(curve, resamples=resamples, seed=seed) for label, curve in curves.items()}
    agreed = (agreement(curves, resamples=resamples, seed=seed, thresholds=by_model, pooled=pooled)
              if len(curves) > 1 else None)
    return TaskAnalysis(task, metric, correlation, pooled, by_model, agreed, best_checkpoint(rows), signal_noise(rows))


def with_q_values(analyses: list[TaskAnalysis]) -> list[TaskAnalysis]:
    """Benjamini-Hochberg q-values over the tasks of one report: for the shape test of the pooled curves
    (and, separately, of each model's curves) and for the agreement test. "emerged" and "disagree" are then
    decided by q < 0.05 (with one task, q = p)."""
    def qs(values: list[float | None]) -> list[float | None]:
        arr = np.array([np.nan if v is None else v for v in values], float)
        return [None if np.isnan(q) else float(q) for q in benjamini_hochberg(arr)]

    pooled_q = qs([a.pooled.shape_p if a.pooled else None for a in analyses])
    labels = list(dict.fromkeys(label for a in analyses for label in a.by_model))
    model_q = {label: dict(zip(
        [i for i, a in enumerate(analyses) if label in a.by_model],
        qs([a.by_model[label].shape_p for a in analyses if label in a.by_model]))) for label in labels}
    agree_q = qs([a.agreement.p_value if a.agreement else None for a in analyses])
    out = []
    for i, a in enumerate(analyses):
        pooled = with_q(a.pooled, pooled_q[i]) if a.pooled is not None else None
        by_model = {label: with_q(t, model_q[label].get(i)) for label, t in a.by_model.items()}
        agreed = agreement_module.with_q(a.agreement, agree_q[i]) if a.agreement is not None else None
        out.append(dataclasses.replace(a, pooled=pooled, by_model=by_model, agreement=agreed))
    return out


COMPANION = "target_logprob_per_token"  # the continuous companion of exact match (Schaeffer et al.'s per-token metric)


def with_companion(a: TaskAnalysis, points: pd.DataFrame, generative: dict, resamples: int, seed: int) -> TaskAnalysis:
    """The mirage column: for an exact-match task with per-token log-probabilities, the companion's own
    pooled shape verdict beside the metric's. "Exact match emerged, the companion is a smooth rise" is
    Schaeffer et al.'s pattern: the jump is made by the metric."""
    names = generative.get(a.task, ())
    if a.pooled is None or COMPANION not in names or a.metric == COMPANION:
        return a
    rows = points[(points["task"] == a.task) & (points["metric"] == COMPANION) & points["loss"].notna()]
    if rows.empty:
        return a
    companion = emergence_threshold(_curve(rows, COMPANION), resamples=resamples, seed=seed)
    return dataclasses.replace(a, companion=companion, companion_metric=COMPANION)


def generative_tasks(points: pd.DataFrame, frame: pd.DataFrame, tasks: list[str]) -> dict[str, tuple[str, ...]]:
    """Reported tasks with continuous companions: their exact-match metric first, then the companions
    they hold, then BIG-bench's own secondary metrics (bleu, rouge)."""
    out = {}
    for task in tasks:
        held = list(dict.fromkeys(points.loc[points["task"] == task, "metric"]))
        if "target_logprob" not in held:
            continue
        exact = prediction.exact_match_metric(primary_metric(frame, task), set(held))
        if exact is None:
            continue
        rest = [m for m in held if m in COMPANION_METRICS] + [m for m in held if m in ("bleu", "rouge1", "rouge2", "rougeLsum")]
        out[task] = (exact, *rest)
    return out


def build_report(frame: pd.DataFrame, *, source: str = "", tasks: list[str] | None = None, metric: str | None = None,
                 resamples: int = 1000, seed: int = 0, items_root: Path | None = None, x: str = "loss",
                 y_scale: str = "linear", cut: float | None = None, predict: str | None = None,
                 cut_quantile: float = 0.5, max_loss: float | None = None) -> Report:
    """The report's numbers.  ``items_root``: where the per-item records lie (a results folder), for the
    prediction test of each generative task; ``x``/``y_scale``: the companion figures' axes;
    ``predict``/``cut_quantile``/``cut``: the prediction test's split (see ``prediction``);
    ``max_loss``: the correlations' upper loss."""
    if x not in AXES:
        raise UserError(f"unknown --x {x!r}; use one of {', '.join(AXES)}")
    prepared = prepare_points(frame)
    points, order, notes_list = prepared.frame, prepared.order, list(prepared.notes)
    points, filled = fill_known(points)
    analyses = []
    chosen_tasks = select_tasks(points, tasks)
    proxies = {str(v).removeprefix("task:").rsplit(":", 1)[0] for v in points["loss_source"].dropna()
               if str(v).startswith("task:")}
    if not tasks:
        bias = [t for t in chosen_tasks if t.startswith(BIAS_TASK_PREFIXES)]
        if bias:
            many = len(bias) > 1
            notes_list.append(f"{len(bias)} bias task{'s' if many else ''} ({', '.join(bias[:3])}"
                              f"{', ...' if len(bias) > 3 else ''}) left out: {'their metrics have' if many else 'its metric has'} "
                              f"no clear better direction for an ability (name {'them' if many else 'it'} with --task to see "
                              f"{'them' if many else 'it'})")
        chosen_tasks = [t for t in chosen_tasks if t not in bias]
    if [t for t in chosen_tasks if t not in proxies]:  # (asked for alone, the proxy task is still analysed)
        for task in [t for t in chosen_tasks if t in proxies]:
            notes_list.append(f"{task} is the loss proxy: it is not analysed against its own perplexity")
        chosen_tasks = [t for t in chosen_tasks if t not in proxies]
    for task in chosen_tasks:
        chosen = metric or primary_metric(frame, task)
        if not ((points["task"] == task) & (points["metric"] == chosen)).any():
            notes_list.append(f"{task} has no metric {chosen}: left out")
            continue
        analyses.append(analyse_task(points, task, chosen, order, resamples, seed, max_loss))
    if not analyses:
        raise UserError(f"no task has metric {metric!r}; pick one the results hold, e.g. acc or exact_match")
    analyses = with_q_values(analyses)
    reported = {a.task for a in analyses}
    filled = [f for f in filled if any(f.startswith(task + ": ") for task in reported)]
    if filled:
        notes_list.append("item counts or chance levels the results did not hold, from the task registry: "
                          + "; ".join(filled[:4]) + ("; ..." if len(filled) > 4 else ""))
    # most informative first: tasks that can show a threshold at all (signal-to-noise, Heineman et al. 2025)
    analyses.sort(key=lambda a: -a.signal_noise.get("ratio", -np.inf) if a.signal_noise else np.inf)
    correlations = correlation_table(points, [a.task for a in analyses], max_loss)
    has_loss = bool(points["loss"].notna().any())
    generative = generative_tasks(points, frame, [a.task for a in analyses])
    analyses = [with_companion(a, points, generative, resamples, seed) for a in analyses]
    if x == "loss" and not has_loss:
        x = "step"  # the default axis, on results without a loss (a plain eval, imported results)
    x_column = "params_non_embedding" if x == "params" else x
    if generative and not points[x_column].notna().any():
        raise UserError(f"the results have no {x} for the --x axis; pick one they hold (loss, step, compute or params)")
    predictions = []
    if items_root is not None and has_loss:
        for task, names in generative.items():
            children = set(points.loc[points["parent"] == task, "task"]) | {task}
            found = prediction.read_item_records(items_root, children, names[0])
            if found.empty:
                notes_list.append(f"{task}: no per-item records with target log-probabilities under {items_root}: "
                                  "no prediction test")
                continue
            predictions.append(prediction.prediction_test(found, task, names[0], mode=predict, cut=cut,
                                                          cut_quantile=cut_quantile, resamples=resamples, seed=seed))
    elif generative and has_loss:
        notes_list.append("the prediction test needs the per-item records of a results folder; a table has none")
    return Report(source, points, order, tuple(analyses), correlations, has_loss,
                  bool(points["compute"].notna().any()), tuple(notes_list), generative, tuple(predictions), x, y_scale,
                  max_loss)
