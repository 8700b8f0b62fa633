"""``harness compare OURS REFERENCE``: our numbers beside a reference's (typically published
lm-evaluation-harness results brought in with ``harness import-lm-eval``), cell by cell.

A cell is one (model, step, task, metric) present on both sides. Two questions, two rules:

- **A reproduction** (the default): the same model scored on the same items. Any difference beyond
  float noise means a different prompt, tokenization, dtype or checkpoint, so sampling error does
  not excuse it. A proportion (accuracy, exact match) agrees when |Δ| ≤ ``tolerance_items`` items
  (default the larger of 1 item and 0.5% of n); a continuous metric (perplexity, probabilities)
  when |Δ| ≤ ``float_tolerance`` relative. Both sides must have the same n (else ``different n``);
  a side without n takes the other's; a proportion with n on neither side must be equal.
- **Independent samples** (``independent=True``): two estimates of one quantity from different
  items; |Δ| ≤ ``tolerance`` × sqrt(se_ours² + se_ref²) agrees (a z test). A side without a stderr
  counts as 0; where both are missing the values must be equal.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.analysis.arguments import DEFAULT_FLOAT_TOLERANCE, DEFAULT_TOLERANCE
from harness.analysis.curves import is_proportion
from harness.errors import UserError
from harness.table import markdown_table, one_configuration, results_table

KEYS = ["model", "step", "task", "metric"]
DEFAULT_ITEM_SHARE = 0.005  # a reproduction may differ by this share of n items (at least one item)
EXACT = 1e-9  # relative: "equal" for stored means


@dataclass(frozen=True)
class Comparison:
    cells: pd.DataFrame  # one row per shared cell: KEYS, both values, diff, diff_points, diff_items, verdict, agree
    only_ours: int  # cells with no reference counterpart
    only_reference: int
    rule: str  # the agreement rule in words

    @property
    def agreeing(self) -> int:
        return int(self.cells["agree"].sum())

    def summary_line(self) -> str:
        total = len(self.cells)
        if not total:
            return "no (model, step, task, metric) cell is on both sides"
        share = 100.0 * self.agreeing / total
        different_n = int((self.cells["verdict"] == "different n").sum())
        mean = float(self.cells["diff"].mean())
        return (
            f"{self.agreeing} of {total} cells agree ({share:.1f}%; {self.rule})"
            + (f"; {different_n} cells have a different n" if different_n else "")
            + f"; mean difference ours - reference {mean:+.4g}; "
            f"{self.only_ours} cells only in ours, {self.only_reference} only in the reference"
        )


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    frame = one_configuration(frame[(frame["status"] == "done") & frame["value"].notna()], KEYS)
    return frame[[*KEYS, "size", "parent", "primary", "higher_is_better", "value", "stderr", "n"]]


def other_configurations(frame: pd.DataFrame) -> int:
    """Rows of cells measured under more than one configuration that a comparison leaves out."""
    done = frame[(frame["status"] == "done") & frame["value"].notna()]
    return int(done.duplicated(KEYS).sum())


def _reproduction(cells: pd.DataFrame, tolerance_items: float | None, float_tolerance: float) -> None:
    n_ours = pd.to_numeric(cells["n_ours"], errors="coerce").astype(float)
    n_ref = pd.to_numeric(cells["n_ref"], errors="coerce").astype(float)
    n = n_ours.fillna(n_ref)
    proportion = cells["metric"].map(is_proportion).to_numpy(dtype=bool)
    diff = cells["diff"].to_numpy(dtype=float)
    items = diff * n.to_numpy()
    allowed = (np.full(len(cells), float(tolerance_items)) if tolerance_items is not None
               else np.maximum(1.0, DEFAULT_ITEM_SHARE * n.to_numpy()))
    equal = np.abs(diff) <= EXACT * np.maximum(1.0, cells["value_ref"].abs().to_numpy())
    # a stored mean of k/n is exact to ~1e-12; the 1e-6 item slack absorbs that, nothing more
    by_items = np.where(np.isfinite(items), np.abs(items) <= allowed + 1e-6, equal)
    by_float = np.abs(diff) <= float_tolerance * np.maximum(1.0, cells["value_ref"].abs().to_numpy())
    agree = np.where(proportion, by_items, by_float)
    different_n = (n_ours.notna() & n_ref.notna() & (n_ours != n_ref)).to_numpy()
    cells["n"] = n
    cells["diff_items"] = np.where(proportion, items, np.nan)
    cells["allowed"] = np.where(proportion, np.where(np.isfinite(items), allowed, 0.0), float_tolerance)
    cells["rule"] = np.where(proportion, np.where(np.isfinite(items), "items", "equal (no n)"), "relative")
    cells["agree"] = agree & ~different_n
    cells["verdict"] = np.where(different_n, "different n", np.where(agree, "agree", "disagree"))


def _independent(cells: pd.DataFrame, tolerance: float) -> None:
    combined = np.sqrt(cells["stderr_ours"].fillna(0.0) ** 2 + cells["stderr_ref"].fillna(0.0) ** 2)
    cells["combined_stderr"] = combined
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["z"] = np.where(combined > 0, cells["diff"] / combined, np.nan)
    exact = cells["diff"].abs() <= EXACT * np.maximum(1.0, cells["value_ref"].abs())
    cells["agree"] = np.where(combined > 0, cells["diff"].abs() <= tolerance * combined, exact)
    cells["rule"] = np.where(combined > 0, "z", "equal (no stderr)")
    cells["verdict"] = np.where(cells["agree"], "agree", "disagree")


def compare_frames(ours: pd.DataFrame, reference: pd.DataFrame, *, independent: bool = False,
                   tolerance: float = DEFAULT_TOLERANCE, tolerance_items: float | None = None,
                   float_tolerance: float = DEFAULT_FLOAT_TOLERANCE) -> Comparison:
    """Cell-by-cell comparison of two results tables (``harness.table.results_table``): a
    reproduction by default, independent samples with ``independent``. Cells outside the rule first."""
    a, b = _done(ours), _done(reference)
    merged = a.merge(b[[*KEYS, "value", "stderr", "n"]], on=KEYS, how="outer", suffixes=("_ours", "_ref"), indicator=True)
    only_ours = int((merged["_merge"] == "left_only").sum())
    only_reference = int((merged["_merge"] == "right_only").sum())
    cells = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    cells["diff"] = cells["value_ours"] - cells["value_ref"]
    cells["diff_points"] = 100.0 * cells["diff"]
    if independent:
        _independent(cells, tolerance)
        rule = f"independent samples: |Δ| ≤ {tolerance:g} combined stderr"
    else:
        _reproduction(cells, tolerance_items, float_tolerance)
        items = f"{tolerance_items:g} items" if tolerance_items is not None else "max(1 item, 0.5% of n)"
        rule = f"reproduction: |Δ| ≤ {items}, continuous metrics within {float_tolerance:g} relative"
    cells["agree"] = cells["agree"].astype(bool)
    cells = cells.sort_values(["agree", *KEYS], kind="stable").reset_index(drop=True)
    return Comparison(cells, only_ours, only_reference, rule)


def compare(ours: Path, reference: Path, **rules) -> Comparison:
    return compare_frames(results_table(ours), results_table(reference), **rules)


def _figure(cells: pd.DataFrame, task: str, metric: str, stem: Path) -> list[Path]:
    """Both curves against step, one colour per model: ours solid with error bars, the reference dashed."""
    from matplotlib.figure import Figure

    from harness.analysis.figures import DPI, series_colours

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
    """compare.csv (every cell, those outside the rule first), compare.md (summary, per-task
    agreement, the cells outside the rule) and one figure per top-level task's primary metric."""
    out.mkdir(parents=True, exist_ok=True)
    cells = comparison.cells
    written = [out / "compare.csv"]
    store.write_text_atomic(written[0], cells.to_csv(index=False))
    per_task = (
        cells.groupby(["task", "metric"], sort=True)
        .agg(cells=("agree", "size"), agree=("agree", "sum"), mean_diff=("diff", "mean"),
             max_abs_diff_points=("diff_points", lambda d: d.abs().max()))
        .reset_index()
    )
    shown = [*KEYS, "value_ours", "value_ref", "diff_points"] + (["n", "diff_items"] if "diff_items" in cells else ["z"])
    outside = cells[~cells["agree"]].head(40)
    lines = [
        "# Ours vs reference", "", comparison.summary_line(), "",
        "## Per task and metric", "", markdown_table(per_task), "",
        f"## Cells outside the rule ({int((~cells['agree']).sum())}; the first 40)", "",
        markdown_table(outside[shown + ["verdict"]]) if len(outside) else "none", "",
    ]
    top = cells[cells["parent"].isna() & cells["primary"].fillna(False).astype(bool)]
    for (task, metric), rows in top.groupby(["task", "metric"], sort=True):
        stem = out / "figures" / f"{task.replace(':', '_').replace('/', '_')}__{metric}"
        written.extend(_figure(rows, task, metric, stem))
        lines.append(f"![{task} {metric}](figures/{stem.name}.png)")
    written.insert(1, out / "compare.md")
    store.write_text_atomic(written[1], "\n".join(lines) + "\n")
    return written


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise UserError(f"--tolerance must be a positive number of standard errors, got {args.tolerance}")
    for flag, value in (("--float-tolerance", args.float_tolerance), ("--tolerance-items", args.tolerance_items)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a number ≥ 0, got {value}")
    ours_table = results_table(args.ours)
    comparison = compare_frames(ours_table, results_table(args.reference), independent=args.independent,
                                tolerance=args.tolerance, tolerance_items=args.tolerance_items,
                                float_tolerance=args.float_tolerance)
    if comparison.cells.empty:
        raise UserError(
            f"no (model, step, task, metric) of {args.ours} is in {args.reference}; check that both hold the same "
            "models (hub ids), steps and task names"
        )
    ours = Path(args.ours)
    out = args.out or (ours.parent if ours.is_file() else ours) / "compare"  # OURS may be one results.json
    written = write_comparison(comparison, out)
    print(comparison.summary_line())
    others = other_configurations(ours_table)
    if others:
        print(f"{others} rows of ours are other configurations of a compared cell (other shots, limit, task data or "
              "weights in one folder): each cell uses the latest run's; `harness table` lists them all")
    print(f"table: {written[0]}\nreport: {written[1]}")
    return 1 if args.fail_on_disagree and comparison.agreeing < len(comparison.cells) else 0
