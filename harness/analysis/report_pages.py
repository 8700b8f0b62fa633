"""The report's pages: its tables (summary, thresholds, correlations, prediction test), its sections
and their Markdown and HTML, and the files written under ``--out``. Reads a built ``report.Report``."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harness.analysis import figures
from harness.analysis.points import POOLED
from harness.table import markdown_table

if TYPE_CHECKING:
    from harness.analysis.report import Report, TaskAnalysis
    from harness.analysis.thresholds import Threshold

THRESHOLD_COLUMNS = ["task", "metric", "scope", "size", "checkpoints", "reference", "reference_kind", "status",
                     "departure_loss", "departure_low", "departure_high", "eta", "eta_low", "eta_high", "slope",
                     "shape_p", "shape_q", "smooth_fit", "smooth_slope", "note", "sizes_agree", "agreement_p",
                     "agreement_q", "largest_shift", "shift_low", "shift_high", "against_agreement",
                     "signal", "noise", "signal_to_noise", "companion_metric", "companion_status", "companion_shape_p"]


def _num(value, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None or np.isnan(value):
        return ""
    return _num(value, 2) if value >= 0.01 else f"{value:.1e}"


def _threshold_text(t: Threshold | None) -> str:
    return "needs a pre-training loss" if t is None else t.describe()


def _agreement_text(a: TaskAnalysis) -> str:
    if a.agreement is None:
        return "one model" if a.pooled is not None else ""
    verdict = {True: "agree", False: "disagree", None: "undetermined"}[a.agreement.agree]
    p = ""
    if a.agreement.p_value is not None:
        q = f", q = {_p(a.agreement.q_value)}" if a.agreement.q_value is not None else ""
        p = f" (p = {_p(a.agreement.p_value)}{q})"
    return f"{verdict}{p}: {a.agreement.note}"


def _companion_text(a) -> str:
    """The mirage column: the continuous companion's status beside the metric's, and what the pair means."""
    c = getattr(a, "companion", None)
    if c is None or a.pooled is None:
        return ""
    if a.pooled.status == "emerged" and c.status == "smooth rise":
        return "smooth rise: exact match jumps, the companion rises smoothly (Schaeffer et al.'s pattern)"
    if a.pooled.status == "emerged" and c.status == "emerged":
        return "emerged: the companion shows a threshold too"
    return c.status


def _shape_text(t: Threshold | None) -> str:
    if t is None or t.shape_p is None:
        return ""
    return f"{_p(t.shape_p)} / {_p(t.shape_q)}" if t.shape_q is not None else _p(t.shape_p)


def _best_text(best: dict) -> str:
    where = best["series"] + (f" @ step {best['step']}" if best["step"] is not None else f" @ {best['revision']}")
    loss = f", loss {best['loss']:.3f}" if best["loss"] is not None else ""
    return f"{where}: {best['value']:.3f}{loss}"


def summary_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": a.task,
        "metric": a.metric,
        "status": a.pooled.status if a.pooled else "",
        "threshold η [90% interval]": _threshold_text(a.pooled),
        "departure loss": _num(a.pooled.departure_loss) if a.pooled else "",
        "shape p / q": _shape_text(a.pooled),
        "signal / noise": _num(a.signal_noise.get("ratio"), 1) if a.signal_noise else "",
        "companion (per-token log-prob)": _companion_text(a),
        "models": _agreement_text(a),
        "Spearman (n)": f"{_num(a.correlation.spearman) or 'n/a'} ({a.correlation.n})" if a.correlation.n else "",
        "best checkpoint": _best_text(a.best),
    } for a in report.analyses])


def summary_markdown(report: Report) -> str:
    return markdown_table(summary_frame(report))


def thresholds_frame(report: Report) -> pd.DataFrame:
    """Every curve's verdict, pooled and per model, as numbers (thresholds.csv)."""
    sizes = report.points.drop_duplicates("series_label").set_index("series_label")["size_group"]
    rows = []
    for a in report.analyses:
        scopes = ([(POOLED, a.pooled)] if a.pooled else []) + list(a.by_model.items())
        for scope, t in scopes:
            pooled = scope == POOLED and a.agreement is not None
            rows.append({
                "task": a.task, "metric": a.metric, "scope": scope, "size": None if scope == POOLED else sizes.get(scope),
                "checkpoints": t.checkpoints, "reference": t.reference.value if t.reference else None,
                "reference_kind": t.reference.kind if t.reference else None,
                "status": t.status, "departure_loss": t.departure_loss, "departure_low": t.departure_low,
                "departure_high": t.departure_high, "eta": t.eta, "eta_low": t.low, "eta_high": t.high,
                "slope": t.slope, "shape_p": t.shape_p, "shape_q": t.shape_q, "smooth_fit": t.smooth,
                "smooth_slope": t.smooth_slope, "note": t.note,
                "sizes_agree": a.agreement.agree if pooled else None,
                "agreement_p": a.agreement.p_value if pooled else None,
                "agreement_q": a.agreement.q_value if pooled else None,
                "largest_shift": a.agreement.shift if pooled else None,
                "shift_low": a.agreement.shift_low if pooled else None,
                "shift_high": a.agreement.shift_high if pooled else None,
                "signal": a.signal_noise.get("signal") if scope == POOLED else None,
                "noise": a.signal_noise.get("noise") if scope == POOLED else None,
                "signal_to_noise": a.signal_noise.get("ratio") if scope == POOLED else None,
                "companion_metric": a.companion_metric if scope == POOLED else None,
                "companion_status": a.companion.status if scope == POOLED and a.companion is not None else None,
                "companion_shape_p": a.companion.shape_p if scope == POOLED and a.companion is not None else None,
                "against_agreement": ", ".join(a.agreement.contrary) if pooled else None,
            })
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)


def _per_model_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": a.task, "model": label, "checkpoints": t.checkpoints, "status": t.status,
        "reference": f"{_num(t.reference.value)} ({t.reference.kind})" if t.reference else "",
        "departure loss": _num(t.departure_loss), "threshold η [90% interval]": t.describe(),
    } for a in report.analyses for label, t in a.by_model.items()])


def _points_used(row) -> str:
    if row.n == 0:
        return "none"
    text = f"{row.n}, loss {row.loss_min:.2f}–{row.loss_max:.2f}"
    return text + (f" ({row.left_out} above {row.max_loss:g} left out)" if row.left_out else "")


def _correlation_display(report: Report) -> pd.DataFrame:
    main = {(a.task, a.metric) for a in report.analyses}
    table = report.correlations[[(t, m) in main for t, m in zip(report.correlations["task"], report.correlations["metric"])]]
    return pd.DataFrame({
        "task": table["task"], "metric": table["metric"], "scope": table["scope"],
        "points used": [_points_used(row) for row in table.itertuples()],
        "Spearman": table["spearman"].map(_num), "Pearson": table["pearson"].map(_num),
        "Spearman p": table["spearman_p"].map(_p),
    })


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def prediction_frame(report: Report) -> pd.DataFrame:
    """The prediction test, two rows per task: the surrogate's link and the naive baseline."""
    rows = []
    for t in report.predictions:
        common = {"task": t.task, "metric": t.metric, "split": t.split + (f" ({t.cut_source})" if t.cut_source else ""),
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
    frames = [t.points.assign(task=t.task, metric=t.metric, mode=t.mode, cut=t.cut) for t in report.predictions]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "metric", "mode", "cut", "checkpoint", "series", "loss", "role", "measured", "surrogate", "baseline",
                 "per_token", "n"])


# --- sections and files ----------------------------------------------------------------------------

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

    def add(key: str, paths: list[Path]) -> None:
        written.extend(paths)
        shown.setdefault(key, []).append(paths[0].relative_to(out).as_posix())

    for x in axes:
        add(x, figures.performance_grid(report.points, panels, x, fig_dir / f"performance_vs_{x}",
                                        report.series_order, pooled if x == "loss" else None))
    table = thresholds_frame(report)
    if not table.empty:
        add("thresholds", figures.thresholds_figure(table, fig_dir / "thresholds", POOLED,
                                                    figures.x_label(report.points, "loss")))
    x = report.x if report.x != "loss" or report.has_loss else "step"
    drawn = report.points.assign(params=report.points["params_non_embedding"])
    for task, names in report.generative.items():
        add("companions", figures.companions_figure(drawn, task, names, x, fig_dir / f"companions_{_slug(task)}",
                                                    report.series_order, report.y_scale))
    for t in report.predictions:
        add("prediction", figures.prediction_figure(t.points, t.task, t.metric, t.cut, (t.departure_low, t.departure_high),
                                                    fig_dir / f"prediction_{_slug(t.task)}"))
    mc_x = "loss" if report.has_loss else "step"
    for a in report.analyses:
        metrics = set(report.points.loc[report.points["task"] == a.task, "metric"])
        if set(figures.MULTIPLE_CHOICE_METRICS) <= metrics and mc_x in axes:
            add("mc", figures.multiple_choice_figure(report.points, a.task, mc_x, fig_dir / f"multiple_choice_{_slug(a.task)}",
                                                     report.series_order))
    return written, shown


def _loss_name(report: Report) -> str:
    """What the loss axis is: the pre-training loss, or the proxy it was taken from (``--loss-from-task``)."""
    label = figures.x_label(report.points, "loss")
    return "pre-training loss" if label == figures.X_LABELS["loss"] else label


def _sections(report: Report, shown: dict[str, list[str]]) -> list[Section]:
    labels = report.points.drop_duplicates("series").set_index("series").loc[list(report.series_order), "series_label"]
    checkpoints = len(report.points[["series", "revision", "step"]].drop_duplicates())
    intro = (f"{checkpoints} checkpoints of {len(report.series_order)} models ({', '.join(labels)}) from `{report.source}`. "
             "Verdicts are on each task's primary metric (or `--metric`), in the metric's better direction. Each curve "
             "(all models pooled, and each model alone) gets a status: emerged (a threshold: flat, then rising below η, "
             "supported over every smooth alternative), smooth rise (it departs from its reference, but a smooth curve of "
             "the loss fits as well: its departure loss and best smooth fit instead of η), no emergence, above reference "
             "from the start, or insufficient data. The reference is estimated from the highest-loss checkpoints with its "
             "own noise (for multiple-choice accuracy, the larger of chance and that plateau); a checkpoint departs "
             "when it beats the reference by a two-sample test and a minimum effect size. The shape test compares a "
             "broken stick with linear, logistic and exponential (mirage) rises by a parametric bootstrap; η comes with "
             "a 90% parametric-bootstrap interval. Whether the sizes lie on one curve of the loss is a test of one shared "
             "curve against the same curve shifted along the loss per size, with the largest shift and its interval. "
             "p-values are corrected across the tasks of the report (Benjamini-Hochberg q); the statuses and the "
             "agreement use q. docs/statistics.md explains every method and its calibration on simulated sweeps.")
    sections = [Section("Summary", (intro, *[f"Note: {n}" for n in report.notes]), summary_frame(report))]
    if "loss" in shown:
        sections.append(Section(f"Performance against {_loss_name(report)}", (
            ("The loss axis runs from high to low, so training goes left to right; one colour per model size, one line "
             "style per variant of a size (e.g. deduplicated); error bars are ±1 standard error; dashed: random "
             "baseline; red: the pooled threshold η and its interval, where the pooled curve emerged."),
        ), images=tuple(shown["loss"])))
    if report.has_loss:
        sections.append(Section("Verdicts per model", (
            "Each model fitted on its own checkpoints; η only where the status is emerged.",
        ), _per_model_frame(report), images=tuple(shown.get("thresholds", ()))))
        limit = f" at loss ≤ {report.max_loss:g}" if report.max_loss is not None else ""
        sections.append(Section(f"Correlation with the {_loss_name(report)}", (
            (f"Over the checkpoints of all models together, then of each model{limit} (Du et al.'s Table 2); "
             "\"points used\" says which. Negative for a higher-is-better metric that improves as the loss falls. "
             "`--max-loss` leaves out untrained checkpoints (step 0 sits at about ln(vocabulary) nats and inflates |r|). "
             "`correlations.csv` has every metric of these tasks."),
        ), _correlation_display(report)))
    if "companions" in shown:
        sections.append(Section("Generative tasks: exact match and its continuous companions", (
            ("target_logprob is the log-probability of the gold continuation given the prompt (per token: divided by "
             "its token count; final_answer_logprob: of GSM8K's final answer, \"The answer is N.\" or \"#### N\", given the gold reasoning); "
             "token_edit_distance and char_edit_distance separate the extracted answer from the nearest target. "
             "Smooth companions that move while exact match sits at zero are what the prediction test below uses."),
        ), images=tuple(shown["companions"])))
    if report.predictions:
        sections.append(Section("Can a smooth metric predict emergence? The prediction test", (
            ("The split is fixed before exact match is looked at: by default every checkpoint of the smaller models is "
             "fitted and the largest model's curve is predicted; with `--predict quantile` the checkpoints above a "
             "quantile of the losses are fitted (`--cut` gives the loss). Nothing measured at a held-out checkpoint "
             "enters the fit. On the fitted checkpoints the mean per-token target log-probability is fitted linearly "
             "in the loss; each item keeps its offset from that trend at the fitted checkpoint of lowest loss, so its "
             "predicted log-probability at a lower loss is its token count × min(trend + offset, 0). The prediction of "
             "exact match is the mean over items of exp(predicted log-probability): a fixed link with no fitted parameter."),
            ("It is compared with the measured exact match at the held-out checkpoints (mean absolute error), and its "
             "departure loss (the threshold analysis's rule, applied to the predicted values alone) with the measured "
             "departure's 90% interval over item resamples. The naive baseline extrapolates exact match itself linearly "
             "in the loss from the same checkpoints. Filled points: fitted; hollow: held out. predictions.csv has every checkpoint."),
        ), prediction_frame(report), images=tuple(shown.get("prediction", ()))))
    for key, title, text in (
        ("mc", "Multiple-choice tasks: accuracy, correct-choice probability, Brier score",
         "Du et al.'s Figure 4: the continuous metrics move before accuracy does. Dashed: each metric's random baseline."),
        ("compute", "Performance against training compute (6·N·D)",
         "At equal compute the sizes sit at different losses, so their curves do not line up as they do against loss."),
        ("step", "Performance against training step", "Each model on its own schedule."),
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


def write_report(report: Report, out: Path, *, with_figures: bool = True) -> list[Path]:
    """Writes index.html, report.md, the CSVs and (unless ``with_figures`` is False) the figures under
    ``out``; returns every file written."""
    out.mkdir(parents=True, exist_ok=True)
    written, shown = _write_figures(report, out) if with_figures else ([], {})
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
