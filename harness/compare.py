"""``harness compare OURS REFERENCE``: our numbers beside a reference's (typically published
lm-evaluation-harness results brought in with ``harness import-lm-eval``), cell by cell.

A cell is one (model, step, task, metric) present on both sides. Its difference is read in units of
the combined standard error, sqrt(se_ours² + se_ref²): two runs of the same evaluation differ only by
numerical noise, so |z| ≤ 2 is agreement; a different prompt, scoring or checkpoint shows up as
cells far outside it. A side without a stderr (perplexities in v0.3 files have one; some metrics do
not) counts as 0; where both are missing or 0 the values must be equal to within 1e-9 (relative).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.errors import UserError
from harness.table import markdown_table, results_table

KEYS = ["model", "step", "task", "metric"]
DEFAULT_TOLERANCE = 2.0  # combined standard errors
EXACT = 1e-9  # relative, for cells without a standard error


@dataclass(frozen=True)
class Comparison:
    cells: pd.DataFrame  # one row per shared cell (KEYS, value/stderr of both, diff, z, agree)
    only_ours: int  # cells with no reference counterpart
    only_reference: int
    tolerance: float

    @property
    def agreeing(self) -> int:
        return int(self.cells["agree"].sum())

    def summary_line(self) -> str:
        total = len(self.cells)
        if not total:
            return "no (model, step, task, metric) cell is on both sides"
        share = 100.0 * self.agreeing / total
        mean = float(self.cells["diff"].mean())
        return (
            f"{self.agreeing} of {total} cells agree within {self.tolerance:g} stderr ({share:.1f}%); "
            f"mean difference ours - reference {mean:+.4g}; "
            f"{self.only_ours} cells only in ours, {self.only_reference} only in the reference"
        )


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[(frame["status"] == "done") & frame["value"].notna()]
    return frame[[*KEYS, "size", "parent", "primary", "higher_is_better", "value", "stderr", "n"]]


def compare_frames(ours: pd.DataFrame, reference: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Cell-by-cell comparison of two results tables (``harness.table.results_table``)."""
    a, b = _done(ours), _done(reference)
    merged = a.merge(b[[*KEYS, "value", "stderr", "n"]], on=KEYS, how="outer", suffixes=("_ours", "_ref"), indicator=True)
    only_ours = int((merged["_merge"] == "left_only").sum())
    only_reference = int((merged["_merge"] == "right_only").sum())
    cells = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    cells["diff"] = cells["value_ours"] - cells["value_ref"]
    combined = np.sqrt(cells["stderr_ours"].fillna(0.0) ** 2 + cells["stderr_ref"].fillna(0.0) ** 2)
    cells["combined_stderr"] = combined
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["z"] = np.where(combined > 0, cells["diff"] / combined, np.nan)
    exact = cells["diff"].abs() <= EXACT * np.maximum(1.0, cells["value_ref"].abs())
    cells["agree"] = np.where(combined > 0, cells["diff"].abs() <= tolerance * combined, exact)
    cells = cells.sort_values(KEYS, kind="stable").reset_index(drop=True)
    return Comparison(cells, only_ours, only_reference, tolerance)


def compare(ours: Path, reference: Path, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    return compare_frames(results_table(ours), results_table(reference), tolerance)


def _figure(cells: pd.DataFrame, task: str, metric: str, stem: Path) -> list[Path]:
    """Both curves against step, one colour per model: ours solid with error bars, the reference dashed."""
    from matplotlib.figure import Figure

    from harness.figures import DPI, series_colours

    models = sorted(cells["model"].unique())
    colours = series_colours(models)
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for model in models:
        rows = cells[cells["model"] == model].sort_values("step")
        step = rows["step"].to_numpy(dtype=float)
        label = model.rsplit("/", 1)[-1]
        ax.errorbar(step, rows["value_ours"], yerr=rows["stderr_ours"].fillna(0.0), color=colours[model], marker="o",
                    markersize=3, linewidth=1.2, elinewidth=0.8, label=f"{label} (ours)")
        ax.plot(step, rows["value_ref"], color=colours[model], linestyle="--", marker="x", markersize=4,
                linewidth=1.0, label=f"{label} (reference)")
    if (cells["step"] > 0).any() and cells["step"].max() / max(cells.loc[cells["step"] > 0, "step"].min(), 1) > 100:
        ax.set_xscale("symlog", linthresh=1.0)  # Pythia's steps: 0, 1, 2, 4, ..., 143000
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: ours vs reference", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, frameon=False)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(stem.with_suffix(".png"), dpi=DPI)
    return [stem.with_suffix(".png")]


def write_comparison(comparison: Comparison, out: Path) -> list[Path]:
    """compare.csv (every cell), compare.md (summary, per-task agreement, worst cells) and one figure per
    top-level task's primary metric under figures/."""
    out.mkdir(parents=True, exist_ok=True)
    cells = comparison.cells
    written = [out / "compare.csv"]
    store.write_text_atomic(written[0], cells.to_csv(index=False))
    per_task = (
        cells.groupby(["task", "metric"], sort=True)
        .agg(cells=("agree", "size"), agree=("agree", "sum"), mean_diff=("diff", "mean"), max_abs_z=("z", lambda z: z.abs().max()))
        .reset_index()
    )
    worst = cells.assign(abs_z=cells["z"].abs()).sort_values("abs_z", ascending=False).head(20)
    lines = [
        "# Ours vs reference", "", comparison.summary_line(), "",
        f"A cell agrees when |ours - reference| <= {comparison.tolerance:g} x sqrt(se_ours^2 + se_ref^2).", "",
        "## Per task and metric", "", markdown_table(per_task), "",
        "## Largest differences (in combined stderr)", "",
        markdown_table(worst[[*KEYS, "value_ours", "value_ref", "diff", "z", "agree"]]), "",
    ]
    top = cells[cells["parent"].isna() & cells["primary"].fillna(False).astype(bool)]
    for (task, metric), rows in top.groupby(["task", "metric"], sort=True):
        stem = out / "figures" / f"{task.replace(':', '_').replace('/', '_')}__{metric}"
        written.extend(_figure(rows, task, metric, stem))
        lines.append(f"![{task} {metric}](figures/{stem.name}.png)")
    written.insert(1, out / "compare.md")
    store.write_text_atomic(written[1], "\n".join(lines) + "\n")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ours", type=Path, help="our results folder (harness eval / sweep --out)")
    parser.add_argument("reference", type=Path, help="the reference results folder, e.g. from harness import-lm-eval")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="agreement within this many combined stderr (default 2)")
    parser.add_argument("--out", type=Path, help="where compare.csv, compare.md and figures/ go (default OURS/compare)")


def run(args: argparse.Namespace) -> int:
    if args.tolerance <= 0:
        raise UserError(f"--tolerance must be a positive number of standard errors, got {args.tolerance}")
    comparison = compare(args.ours, args.reference, args.tolerance)
    if comparison.cells.empty:
        raise UserError(
            f"no (model, step, task, metric) of {args.ours} is in {args.reference}; check that both hold the same "
            "models (hub ids), steps and task names"
        )
    ours = Path(args.ours)
    out = args.out or (ours.parent if ours.is_file() else ours) / "compare"  # OURS may be one results.json
    written = write_comparison(comparison, out)
    print(comparison.summary_line())
    print(f"table: {written[0]}\nreport: {written[1]}")
    return 0
