"""``harness report``: from a results table to figures, a correlation table and every task's emergence threshold.

Reads only ``harness.table.results_table`` (so imported results work too), then:
points (one row per checkpoint × task × metric) ─► per task: correlation with the loss, the
pooled threshold and one per model size, their agreement ─► report.md, index.html, CSVs, figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import figures, prediction
from harness.companions import COMPANION_METRICS
from harness.correlations import Correlation, loss_correlation
from harness.errors import UserError
from harness.table import markdown_table, results_table
from harness.thresholds import (
    Agreement,
    Curve,
    Threshold,
    agreement,
    emergence_threshold,
)

POOLED = "all sizes"
# A folder that is only a checkpoint name (HF Trainer, Pythia, DeepSpeed, Megatron), nothing else in it
CHECKPOINT_FOLDER = re.compile(r"^(?:step[-_]?|checkpoint[-_]|global_step|iter_)\d+$", re.IGNORECASE)
AXES = ("loss", "compute", "params", "step")
POINT_COLUMNS = ["task", "parent", "metric", "series", "series_label", "model", "revision", "step", "params_non_embedding",
                 "loss", "compute", "value", "stderr", "n", "random_baseline", "higher_is_better"]


@dataclass(frozen=True)
class TaskAnalysis:
    task: str
    metric: str
    correlation: Correlation
    pooled: Threshold | None  # None when the results carry no loss
    by_size: dict[str, Threshold]
    agreement: Agreement | None
    best: dict  # the best checkpoint on this metric: series, step, revision, value, loss


@dataclass(frozen=True)
class Report:
    source: str
    points: pd.DataFrame
    series_order: tuple[str, ...]  # model sizes, smallest first
    analyses: tuple[TaskAnalysis, ...]
    correlations: pd.DataFrame  # every metric of every reported task
    has_loss: bool
    has_compute: bool
    notes: tuple[str, ...]
    generative: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # task -> exact match + companions
    predictions: tuple[prediction.PredictionTest, ...] = ()
    x: str = "loss"  # axis of the companion figures
    y_scale: str = "linear"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, help="a results folder (searched recursively), e.g. results/my-sweep")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for index.html, report.md, CSVs and figures")
    parser.add_argument("--metric", help="metric for the thresholds and the main figure (default: each task's primary metric)")
    parser.add_argument("--task", dest="tasks", nargs="+", metavar="TASK",
                        help="tasks to report, e.g. mmlu gsm8k mmlu:anatomy (default: every top-level task)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the interval of η")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (the report is reproducible)")
    parser.add_argument("--x", choices=AXES, default="loss",
                        help="axis of the generative tasks' companion figures: loss, compute (log), params (log) or step")
    parser.add_argument("--y", choices=("linear", "log"), default="linear",
                        help="y scale of the companion figures (log applies to panels whose values are all positive)")
    parser.add_argument("--cut", type=float, metavar="LOSS",
                        help="loss that splits fitted from held-out checkpoints in the prediction test "
                             "(default: each task's exact-match departure loss, else the median loss)")


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap {args.bootstrap} is too few for a 90% interval; use 100 or more (default 1000)")
    report = build_report(results_table(args.results), source=str(args.results), tasks=args.tasks,
                          metric=args.metric, resamples=args.bootstrap, seed=args.seed,
                          items_root=Path(args.results), x=args.x, y_scale=args.y, cut=args.cut)
    written = write_report(report, Path(args.out))
    print(summary_markdown(report))
    if report.predictions:
        print()
        print(markdown_table(prediction_frame(report)))
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {Path(args.out) / 'index.html'} ({len(written)} files)")
    return 0


# --- from the results table to points -------------------------------------------------------------

def _short_name(model: str) -> str:
    return re.split(r"[\\/]", str(model).rstrip("/\\"))[-1] or str(model)


def series_of(model: str, revision: str | None) -> str:
    """The model a checkpoint belongs to. A local checkpoint folder named by its step
    (``runs/tiny/checkpoint-500``, no revision) belongs to its run folder (``runs/tiny``), so that a
    sweep over one run's folders draws one line, not one per checkpoint."""
    path = Path(str(model).rstrip("/\\"))
    if (revision is None or pd.isna(revision)) and CHECKPOINT_FOLDER.match(path.name) and str(path.parent) not in ("", "."):
        return str(path.parent)
    return str(model)


def _params_label(count: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:.0f}"


def prepare_points(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    """Rows of successful checkpoints with a series key (model size) and training compute.

    Returns the points, the series ordered by non-embedding parameters, and notes for the reader.
    """
    notes: list[str] = []
    frame = frame.copy()
    if "status" in frame.columns:
        failed = frame["status"].astype("string").str.lower().eq("failed").fillna(False)
        if failed.any():
            notes.append(f"{int(failed.sum())} failed evaluations (checkpoint × task) are ignored")
        frame = frame[~failed]
    for column in ("loss", "value", "stderr", "n", "random_baseline", "params_non_embedding"):
        # float64, not the table's nullable Int64: numpy turns pd.NA into nan only from a float column
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame = frame[frame["value"].notna()]
    if frame.empty:
        raise UserError("the results hold no metric values to report (every checkpoint failed?); rerun the sweep")

    # A sweep labels each checkpoint with its model size; plain `harness eval` results do not.
    sizes = frame["size"] if "size" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    from_size = sizes.notna()
    frame["series"] = [str(size) if has_size else series_of(model, revision)
                       for size, has_size, model, revision in zip(sizes, from_size, frame["model"], frame["revision"])]
    params = frame.groupby("series")["params_non_embedding"].median()
    named = set(frame.loc[from_size, "series"])
    order = tuple(sorted(params.index, key=lambda s: (np.nan_to_num(params[s], nan=np.inf), s)))
    labels = {}
    for series in order:
        if series in named or np.isnan(params[series]):
            labels[series] = series if series in named else _short_name(series)
        else:
            labels[series] = f"{_short_name(series)} ({_params_label(params[series])})"
    frame["series_label"] = frame["series"].map(labels)

    def numbers(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series(np.nan, index=frame.index)
        return pd.to_numeric(frame[column], errors="coerce").astype("float64")

    if numbers("compute").notna().any():
        frame["compute"] = numbers("compute")
    elif numbers("tokens_seen").notna().any():
        # 6·N·D with N the non-embedding parameters (Kaplan et al.'s convention) and D the tokens seen
        frame["compute"] = 6.0 * frame["params_non_embedding"] * numbers("tokens_seen")
    else:
        frame["compute"] = np.nan
        notes.append("no tokens_seen or compute in the results: the figure against training compute is skipped")

    if frame["loss"].isna().all():
        notes.append("no pre-training loss in these results (results imported with `harness import-lm-eval` have none): "
                     "figures are drawn against step and compute, and no threshold or loss correlation is computed")
    elif frame["loss"].isna().any():
        missing = frame.loc[frame["loss"].isna(), ["series", "revision", "step"]].drop_duplicates()
        notes.append(f"{len(missing)} checkpoints without a pre-training loss are left out of the loss figure, "
                     "correlations and thresholds")
    return frame[POINT_COLUMNS].reset_index(drop=True), order, tuple(notes)


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
    marked = frame.loc[(frame["task"] == task) & frame["primary"].eq(True), "metric"]  # NA on failed rows
    if marked.empty:
        return str(frame.loc[frame["task"] == task, "metric"].dropna().iloc[0])
    return str(marked.mode().iloc[0])


# --- analyses --------------------------------------------------------------------------------------

def _curve(rows: pd.DataFrame, metric: str) -> Curve:
    baseline = rows["random_baseline"].dropna()
    return Curve.of(rows["loss"], rows["value"], rows["stderr"], rows["n"], metric,
                    bool(rows["higher_is_better"].iloc[0]), float(baseline.median()) if len(baseline) else None)


def best_checkpoint(rows: pd.DataFrame) -> dict:
    higher = bool(rows["higher_is_better"].iloc[0])
    best = rows.loc[rows["value"].idxmax() if higher else rows["value"].idxmin()]
    step = best["step"]
    return {"series": best["series_label"], "revision": best["revision"], "step": None if pd.isna(step) else int(step),
            "value": float(best["value"]), "loss": None if pd.isna(best["loss"]) else float(best["loss"])}


def analyse_task(points: pd.DataFrame, task: str, metric: str, series_order: tuple[str, ...],
                 resamples: int, seed: int) -> TaskAnalysis:
    rows = points[(points["task"] == task) & (points["metric"] == metric)]
    correlation = loss_correlation(rows["loss"], rows["value"])
    with_loss = rows[rows["loss"].notna()]
    if with_loss.empty:
        return TaskAnalysis(task, metric, correlation, None, {}, None, best_checkpoint(rows))
    pooled = emergence_threshold(_curve(with_loss, metric), resamples=resamples, seed=seed)
    by_size = {}
    for series in series_order:
        size_rows = with_loss[with_loss["series"] == series]
        if not size_rows.empty:
            label = size_rows["series_label"].iloc[0]
            by_size[label] = emergence_threshold(_curve(size_rows, metric), resamples=resamples, seed=seed)
    return TaskAnalysis(task, metric, correlation, pooled, by_size,
                        agreement(by_size) if len(by_size) > 1 else None, best_checkpoint(rows))


def build_report(frame: pd.DataFrame, *, source: str = "", tasks: list[str] | None = None, metric: str | None = None,
                 resamples: int = 1000, seed: int = 0, items_root: Path | None = None, x: str = "loss",
                 y_scale: str = "linear", cut: float | None = None) -> Report:
    """The report's numbers.  ``items_root``: where the per-item records lie (the results folder), for
    the prediction test of each generative task; ``x``/``y_scale``: the companion figures' axes."""
    if x not in AXES:
        raise UserError(f"unknown --x {x!r}; use one of {', '.join(AXES)}")
    points, order, notes = prepare_points(frame)
    notes_list = list(notes)
    analyses = []
    for task in select_tasks(points, tasks):
        chosen = metric or primary_metric(frame, task)
        if not ((points["task"] == task) & (points["metric"] == chosen)).any():
            notes_list.append(f"{task} has no metric {chosen}: left out")
            continue
        analyses.append(analyse_task(points, task, chosen, order, resamples, seed))
    if not analyses:
        raise UserError(f"no task has metric {metric!r}; pick one the results hold, e.g. acc or exact_match")
    reported = {a.task for a in analyses}
    correlations = [
        {"task": task, "metric": m, **vars(loss_correlation(rows["loss"], rows["value"]))}
        for (task, m), rows in points[points["task"].isin(reported)].groupby(["task", "metric"], sort=False)
    ]
    has_loss = bool(points["loss"].notna().any())
    generative = generative_tasks(points, frame, [a.task for a in analyses])
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
            predictions.append(prediction.prediction_test(found, task, names[0], cut=cut, resamples=resamples, seed=seed))
    return Report(source, points, order, tuple(analyses), pd.DataFrame(correlations), has_loss,
                  bool(points["compute"].notna().any()), tuple(notes_list), generative, tuple(predictions), x, y_scale)


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


# --- tables ----------------------------------------------------------------------------------------

def _num(value, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _threshold_text(t: Threshold | None) -> str:
    return "needs a pre-training loss" if t is None else t.describe()


def _agreement_text(a: TaskAnalysis) -> str:
    if a.agreement is None:
        return "one size" if a.pooled is not None else ""
    verdict = {True: "agree", False: "disagree", None: "not testable"}[a.agreement.agree]
    return f"{verdict}: {a.agreement.note}"


def _best_text(best: dict) -> str:
    where = best["series"] + (f" @ step {best['step']}" if best["step"] is not None else f" @ {best['revision']}")
    loss = f", loss {best['loss']:.3f}" if best["loss"] is not None else ""
    return f"{where}: {best['value']:.3f}{loss}"


def summary_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": a.task,
        "metric": a.metric,
        "threshold η [90% interval]": _threshold_text(a.pooled),
        "departure loss": _num(a.pooled.departure_loss) if a.pooled else "",
        "sizes": _agreement_text(a),
        "Spearman (n)": f"{_num(a.correlation.spearman) or 'n/a'} ({a.correlation.n})" if a.correlation.n else "",
        "best checkpoint": _best_text(a.best),
    } for a in report.analyses])


def thresholds_frame(report: Report) -> pd.DataFrame:
    """Every threshold, pooled and per size, as numbers (thresholds.csv)."""
    rows = []
    for a in report.analyses:
        scopes = ([(POOLED, a.pooled)] if a.pooled else []) + list(a.by_size.items())
        for scope, t in scopes:
            rows.append({
                "task": a.task, "metric": a.metric, "scope": scope, "checkpoints": t.checkpoints,
                "reference": t.reference.value, "reference_kind": t.reference.kind, "emerged": t.emerged,
                "departure_loss": t.departure_loss, "eta": t.eta, "eta_low": t.low, "eta_high": t.high,
                "slope": t.slope, "note": t.note,
                "sizes_agree": (a.agreement.agree if a.agreement else None) if scope == POOLED else None,
            })
    return pd.DataFrame(rows, columns=["task", "metric", "scope", "checkpoints", "reference", "reference_kind", "emerged",
                                       "departure_loss", "eta", "eta_low", "eta_high", "slope", "note", "sizes_agree"])


def _per_size_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": a.task, "size": size, "checkpoints": t.checkpoints,
        "reference": f"{_num(t.reference.value)} ({t.reference.kind})",
        "departure loss": _num(t.departure_loss), "threshold η [90% interval]": t.describe(),
    } for a in report.analyses for size, t in a.by_size.items()])


def _correlation_display(report: Report) -> pd.DataFrame:
    main = {(a.task, a.metric) for a in report.analyses}
    table = report.correlations[[(t, m) in main for t, m in zip(report.correlations["task"], report.correlations["metric"])]]
    return pd.DataFrame({
        "task": table["task"], "metric": table["metric"], "n": table["n"],
        "Spearman": table["spearman"].map(_num), "Pearson": table["pearson"].map(_num),
        "Spearman p": table["spearman_p"].map(lambda p: "" if np.isnan(p) else _num(p, 2) if p >= 0.01 else f"{p:.1e}"),
    })


def summary_markdown(report: Report) -> str:
    return markdown_table(summary_frame(report))


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def prediction_frame(report: Report) -> pd.DataFrame:
    """The prediction test, two rows per task: the surrogate's link and the naive baseline."""
    rows = []
    for t in report.predictions:
        common = {"task": t.task, "metric": t.metric, "cut (source)": f"{_num(t.cut)} ({t.cut_source})" if t.cut is not None else "",
                  "fitted / held out": f"{t.fitted} / {t.held_out}",
                  "measured departure [90% interval]": f"{_num(t.measured_departure) or 'none'} {_interval(t.departure_low, t.departure_high)}".strip()}
        for method, mae, departure, inside in (
            ("mean exp(target_logprob)", t.surrogate_mae, t.surrogate_departure, t.surrogate_inside),
            (f"naive: {t.metric} linear in loss", t.baseline_mae, t.baseline_departure, t.baseline_inside),
        ):
            rows.append({**common, "prediction": method, "MAE held out": _num(mae),
                         "predicted departure": _num(departure) if departure is not None else ("none" if mae is not None else ""),
                         "inside": "" if inside is None else ("yes" if inside else "no"), "verdict": t.note if method.startswith("mean") else ""})
    return pd.DataFrame(rows)


def predictions_csv(report: Report) -> pd.DataFrame:
    """Every checkpoint of every prediction test: loss, role, measured, predicted and baseline values."""
    frames = [t.points.assign(task=t.task, metric=t.metric, cut=t.cut) for t in report.predictions]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "metric", "cut", "checkpoint", "loss", "role", "measured", "surrogate", "baseline", "per_token", "n"])


# --- writing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    title: str
    text: tuple[str, ...] = ()
    table: pd.DataFrame | None = None
    images: tuple[str, ...] = ()  # paths relative to the report folder


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")  # no ".": the figure name gets its suffix


def _write_figures(report: Report, out: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """Writes every figure; returns the files and, per section key, the PNGs to show."""
    fig_dir, written, shown = out / "figures", [], {}
    panels = [(a.task, a.metric) for a in report.analyses]
    pooled = {a.task: a.pooled for a in report.analyses if a.pooled is not None}
    axes = (["loss"] if report.has_loss else []) + (["compute"] if report.has_compute else [])
    axes += ["step"] if report.points["step"].notna().any() else []
    for x in axes:
        paths = figures.performance_grid(report.points, panels, x, fig_dir / f"performance_vs_{x}",
                                         report.series_order, pooled if x == "loss" else None)
        written += paths
        shown[x] = [paths[0].relative_to(out).as_posix()]
    x = report.x if report.x != "loss" or report.has_loss else "step"
    drawn = report.points.assign(params=report.points["params_non_embedding"])
    for task, names in report.generative.items():
        paths = figures.companions_figure(drawn, task, names, x, fig_dir / f"companions_{_slug(task)}",
                                          report.series_order, report.y_scale)
        written += paths
        shown.setdefault("companions", []).append(paths[0].relative_to(out).as_posix())
    for t in report.predictions:
        paths = figures.prediction_figure(t.points, t.task, t.metric, t.cut, (t.departure_low, t.departure_high),
                                          fig_dir / f"prediction_{_slug(t.task)}")
        written += paths
        shown.setdefault("prediction", []).append(paths[0].relative_to(out).as_posix())
    mc_x = "loss" if report.has_loss else "step"
    for a in report.analyses:
        metrics = set(report.points.loc[report.points["task"] == a.task, "metric"])
        if set(figures.MULTIPLE_CHOICE_METRICS) <= metrics and mc_x in axes:
            paths = figures.multiple_choice_figure(report.points, a.task, mc_x, fig_dir / f"multiple_choice_{_slug(a.task)}",
                                                   report.series_order)
            written += paths
            shown.setdefault("mc", []).append(paths[0].relative_to(out).as_posix())
    return written, shown


def _sections(report: Report, shown: dict[str, list[str]]) -> list[Section]:
    sizes = ", ".join(report.points.drop_duplicates("series").set_index("series").loc[list(report.series_order), "series_label"])
    checkpoints = len(report.points[["series", "revision", "step"]].drop_duplicates())
    intro = (f"{checkpoints} checkpoints of {len(report.series_order)} model sizes ({sizes}) from `{report.source}`. "
             "Thresholds are on each task's primary metric (or `--metric`), in the metric's better direction; "
             "η is where a broken stick (flat at the reference, then linear as the loss falls) bends, "
             "with a bootstrap 90% interval over checkpoints; the departure loss is the highest loss below which "
             "every checkpoint beats the reference by more than its one-sided 95% bound.")
    sections = [Section("Summary", (intro, *[f"Note: {n}" for n in report.notes]), summary_frame(report))]
    if "loss" in shown:
        sections.append(Section("Performance against pre-training loss", (
            ("The loss axis runs from high to low, so training goes left to right; one colour per model size; "
            "error bars are ±1 standard error; dashed: random baseline; red: the pooled threshold η and its interval."),
        ), images=tuple(shown["loss"])))
    if report.has_loss:
        sections.append(Section("Correlation with the pre-training loss", (
            ("Over all checkpoints of all sizes (Du et al.'s Table 2). Negative for a higher-is-better metric that "
            "improves as the loss falls. `correlations.csv` has every metric of these tasks."),
        ), _correlation_display(report)))
        sections.append(Section("Thresholds per model size", (
            "Each size fitted on its own checkpoints; the summary says whether their intervals share a loss.",
        ), _per_size_frame(report)))
    if "companions" in shown:
        sections.append(Section("Generative tasks: exact match and its continuous companions", (
            ("target_logprob is the log-probability of the gold continuation given the prompt (per token: divided by "
             "its token count; final_answer_logprob: of GSM8K's final answer, \"The answer is N.\" or \"#### N\", given the gold reasoning); "
             "token_edit_distance and char_edit_distance separate the extracted answer from the nearest target. "
             "Smooth companions that move while exact match sits at zero are what the prediction test below uses."),
        ), images=tuple(shown["companions"])))
    if report.predictions:
        sections.append(Section("Can a smooth metric predict emergence? The prediction test", (
            ("The loss axis is cut (by default at exact match's departure loss, else at the median loss). On the "
             "checkpoints above the cut only (high loss, before the jump) the mean per-token target log-probability is "
             "fitted linearly in the loss. Each item keeps its offset from that trend at the fitted checkpoint of lowest "
             "loss (one slope for all items; a per-item fit on a few noisy points extrapolates worse), so its "
             "predicted log-probability at a lower loss is its token count × min(trend + offset, 0). The prediction of "
             "exact match is the mean over items of exp(predicted log-probability), the probability of producing the "
             "gold answer: a fixed link with no fitted parameter."),
            ("It is compared with the measured exact match at the held-out checkpoints (mean absolute error), and its "
             "departure loss (same significance rule and reference as the threshold analysis) with the measured "
             "departure's 90% interval over item resamples (reaching the next checkpoint up, the resolution of the "
             "checkpoints). The naive baseline extrapolates exact match itself linearly in the loss from the same "
             "checkpoints. Filled points: fitted; hollow: held out. predictions.csv has every checkpoint."),
        ), prediction_frame(report), images=tuple(shown["prediction"])))
    for key, title, text in (
        ("mc", "Multiple-choice tasks: accuracy, correct-choice probability, Brier score",
         "Du et al.'s Figure 4: the continuous metrics move before accuracy does. Dashed: each metric's random baseline."),
        ("compute", "Performance against training compute (6·N·D)",
         "At equal compute the sizes sit at different losses, so their curves do not line up as they do against loss."),
        ("step", "Performance against training step", "Each size on its own schedule."),
    ):
        if key in shown:
            sections.append(Section(title, (text,), images=tuple(shown[key])))
    return sections


def _markdown(sections: list[Section]) -> str:
    parts = ["# Emergence report", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        parts += [p + "\n" for p in s.text]
        if s.table is not None and not s.table.empty:
            parts.append(markdown_table(s.table))
        parts += [f"![{s.title}]({image})\n" for image in s.images]
    return "\n".join(parts)


def _html(sections: list[Section]) -> str:
    body = []
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in s.text]
        if s.table is not None and not s.table.empty:
            body.append(s.table.to_html(index=False, na_rep="", border=0))
        body += [f'<img src="{html.escape(image)}" alt="{html.escape(s.title)}">' for image in s.images]
    style = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "img{max-width:100%;display:block;margin:1em 0}")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Emergence report</title>"
            f"<style>{style}</style></head><body>\n<h1>Emergence report</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(report: Report, out: Path) -> list[Path]:
    """Writes index.html, report.md, the CSVs and the figures under ``out``; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    written, shown = _write_figures(report, out)
    tables = {"thresholds.csv": thresholds_frame(report), "correlations.csv": report.correlations,
              "points.csv": report.points}
    if report.predictions:
        tables["predictions.csv"] = predictions_csv(report)
    for name, frame in tables.items():
        frame.to_csv(out / name, index=False)
        written.append(out / name)
    sections = _sections(report, shown)
    (out / "report.md").write_text(_markdown(sections), encoding="utf-8")
    (out / "index.html").write_text(_html(sections), encoding="utf-8")
    return written + [out / "report.md", out / "index.html"]
