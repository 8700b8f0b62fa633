"""The flags of ``harness report`` and ``harness compare``, apart from their analysis: ``harness --help``
builds every subcommand's parser, and should not import pandas, scipy and matplotlib to do it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.errors import UserError

AXES = ("loss", "compute", "params", "step")
PREDICTION_MODES = ("largest", "quantile")
DEFAULT_TOLERANCE = 2.0  # combined standard errors, for independent samples
DEFAULT_FLOAT_TOLERANCE = 1e-4  # relative, for continuous metrics: fp32 log-probs agree to ~1e-4


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path,
                        help="a results folder (searched recursively), or a table written by `harness table` (.csv / .parquet)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for index.html, report.md, CSVs and figures")
    parser.add_argument("--metric", help="metric for the thresholds and the main figure (default: each task's primary metric)")
    parser.add_argument("--task", dest="tasks", nargs="+", metavar="TASK",
                        help="tasks to report, e.g. mmlu gsm8k mmlu:anatomy (default: every top-level task)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the interval of η and the agreement test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstraps (the report is reproducible)")
    parser.add_argument("--max-loss", type=float, metavar="LOSS",
                        help="leave checkpoints above this loss out of the correlations (e.g. step 0, at ln(vocabulary) nats)")
    parser.add_argument("--loss-from-task", metavar="TASK:METRIC",
                        help="the loss axis = ln(that perplexity) at the same checkpoint, labelled as a proxy; for results "
                             "without a loss, e.g. published Pythia evals: lambada_openai:perplexity")
    parser.add_argument("--no-figures", action="store_true", help="write the numbers only (CSVs, report.md, index.html): fast")
    parser.add_argument("--x", choices=AXES, default="loss",
                        help="axis of the generative tasks' companion figures: loss, compute (log), params (log) or step")
    parser.add_argument("--y", choices=("linear", "log"), default="linear",
                        help="y scale of the companion figures (log applies to panels whose values are all positive)")
    parser.add_argument("--predict", choices=PREDICTION_MODES,
                        help="prediction test: fit the smaller models and predict the largest (default with two or more "
                             "models), or fit the checkpoints above a loss quantile (--cut-quantile) and predict the rest")
    parser.add_argument("--cut-quantile", type=float, default=0.5, metavar="Q",
                        help="with --predict quantile: the cut is this quantile of the checkpoints' losses (default 0.5)")
    parser.add_argument("--cut", type=float, metavar="LOSS", help="the prediction test's cut as a loss (implies --predict quantile)")


def check_report_arguments(args: argparse.Namespace) -> None:
    if not 100 <= args.bootstrap <= 100_000:
        raise UserError(f"--bootstrap {args.bootstrap} is out of range; use 100 to 100000 (default 1000)")
    if args.max_loss is not None and not (math.isfinite(args.max_loss) and args.max_loss > 0):
        raise UserError(f"--max-loss {args.max_loss} must be a positive loss in nats/token, e.g. 8")
    if not (math.isfinite(args.cut_quantile) and 0 < args.cut_quantile < 1):
        raise UserError(f"--cut-quantile {args.cut_quantile} must lie strictly between 0 and 1, e.g. 0.5")
    if args.cut is not None and not math.isfinite(args.cut):
        raise UserError(f"--cut {args.cut} must be a finite loss")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ours", type=Path, help="our results folder (harness eval / sweep --out)")
    parser.add_argument("reference", type=Path, help="the reference results folder, e.g. from harness import-lm-eval")
    parser.add_argument("--independent", action="store_true",
                        help="the two sides scored different items: a z test in combined stderr instead of a reproduction")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="with --independent: agreement within this many combined stderr (default 2)")
    parser.add_argument("--tolerance-items", type=float, metavar="K",
                        help="a reproduction's proportions agree within K items (default: the larger of 1 and 0.5%% of n)")
    parser.add_argument("--float-tolerance", type=float, default=DEFAULT_FLOAT_TOLERANCE, metavar="R",
                        help="a reproduction's continuous metrics agree within this relative difference (default 1e-4)")
    parser.add_argument("--fail-on-disagree", action="store_true", help="exit 1 when any shared cell is outside the rule")
    parser.add_argument("--out", type=Path, help="where compare.csv, compare.md and figures/ go (default OURS/compare)")
