"""The demo's verdicts across seeds: the numbers the README quotes, as ranges.

    python scripts/demo_seeds.py --threads 1 2          # seeds 0-4 of the full demo, one and two training threads
    python scripts/demo_seeds.py --quick --threads 1 2  # the same for --quick

Runs ``harness demo`` for each seed (a seed already trained and swept is reused, so after a change to
the statistics a rerun costs only the reports: about a minute per seed), then prints, per loss source
(the training mixture's held-out loss, the held-out docstrings'), one markdown table: each size's
status and η [90% interval], the pooled verdict, whether the sizes agree, the continuous companion's
pooled status, the pooled verdict of the quick demo's sizes alone and the final exact matches, per run
and across runs; then the counts the demo's acceptance asks for, and each run's seconds. A single run's digits do not reproduce on another machine
(CPU kernels differ, and a tiny model's training amplifies the difference), so quote the ranges.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from harness.analysis.thresholds import AT_EDGE, carries_verdict
from harness.demo.pipeline import LOSS_SOURCES, REPORT_DIRS, default_out, run_demo, suite_config
from harness.table import markdown_table

TASK = "bigbench:two_digit_addition"
METRIC = "exact_match"
PREFIX = "tiny-neox-"


def _num(value) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.2f}"


def verdict(row) -> str:
    """One curve's verdict as the README quotes it: status, and η [interval] when it emerged; "(edge)"
    when the rise begins at the edge of the checkpoints (the data carry no verdict on its shape)."""
    status = row.get("status")
    status = "" if status is None or pd.isna(status) else str(status)
    note = row.get("note")
    edge = " (edge)" if isinstance(note, str) and AT_EDGE in note else ""
    if pd.isna(row.get("eta")):
        return (status or "no threshold") + edge
    text = f"η = {_num(row['eta'])} [{_num(row.get('eta_low'))}, {_num(row.get('eta_high'))}]"
    return f"{status}: {text}" if status and status != "emerged" else text


def pooled_kind(text: str) -> str:
    """The pooled verdict without its numbers: what the acceptance compares across runs."""
    return "emerged" if text.startswith("η") else text.split(":")[0]


def agreement(row) -> str:
    agree = row.get("sizes_agree")
    if agree is None or pd.isna(agree) or agree == "":
        return "undetermined"
    text = "agree" if str(agree).lower() in ("true", "1") else "disagree"
    p_value = row.get("agreement_p")
    if p_value is not None and not pd.isna(p_value):
        text += f" (p = {float(p_value):.2g})"
    against = row.get("against_agreement")
    if isinstance(against, str) and against:
        text += f"; against: {against.replace(PREFIX, '')}"
    return text


def subset_pooled(out: Path, source: str, sizes: list[str]) -> str:
    """The pooled verdict of the table restricted to ``sizes`` (the quick demo's): the same report code on
    the same checkpoints, one size fewer. The quick demo trains exactly these weights when its thread
    count is the full run's (a size's weights depend on the seed and threads, not on the other sizes)."""
    from harness.analysis.report import build_report
    from harness.demo.pipeline import BOOTSTRAP, EVAL_DIRS, SEED

    table = pd.read_csv(out / f"table-{source}.csv")
    table = table[table["size"].astype(str).isin(sizes)]
    report = build_report(table, resamples=BOOTSTRAP, seed=SEED, items_root=out / EVAL_DIRS[LOSS_SOURCES[0]])
    analysis = next(a for a in report.analyses if a.task == TASK and a.metric == METRIC)
    pooled = analysis.pooled
    if pooled is None:
        return "no pooled curve"
    if pooled.status == "emerged":
        return f"η = {pooled.eta:.2f} [{pooled.low:.2f}, {pooled.high:.2f}]"
    return pooled.status


def seed_column(out: Path, source: str, quick_sizes: list[str] | None = None) -> dict[str, str]:
    """The quantities of one run and loss source, from the files the demo wrote."""
    thresholds = pd.read_csv(out / REPORT_DIRS[source] / "thresholds.csv")
    thresholds = thresholds[(thresholds["task"] == TASK) & (thresholds["metric"] == METRIC)]
    column: dict[str, str] = {}
    pooled, carried = None, []
    for _, row in thresholds.iterrows():
        scope = str(row["scope"])
        if scope.startswith(PREFIX):
            column[f"{scope.removeprefix(PREFIX)}"] = verdict(row)
            carried.append(carries_verdict(str(row["status"]), row.get("note")))
        else:
            pooled = row
    column["sizes with a verdict"] = f"{sum(carried)} of {len(carried)}"
    if pooled is not None:
        column["pooled"] = verdict(pooled)
        column["sizes"] = agreement(pooled)
        companion = pooled.get("companion_status")
        column["companion (pooled)"] = "" if companion is None or pd.isna(companion) else str(companion)
    if quick_sizes:
        column[f"pooled, {' + '.join(quick_sizes)} only (--quick)"] = subset_pooled(out, source, quick_sizes)
    table = pd.read_csv(out / f"table-{source}.csv")
    em = table[(table["task"] == TASK) & (table["metric"] == METRIC)]
    finals = em.sort_values("step").groupby("size", sort=False).tail(1)
    column["final exact match"] = ", ".join(f"{row['size']} {row['value']:.2f}" for _, row in finals.iterrows())
    return column


def across(values: list[str]) -> str:
    """Across seeds: the range of η, intervals and exact matches; counts of statuses and verdicts."""
    import re

    numbers = [re.findall(r"-?\d+\.\d+", v) for v in values]
    if all(numbers) and len({len(n) for n in numbers}) == 1 and len({re.sub(r"-?\d+\.\d+", "#", v) for v in values}) == 1:
        template = re.sub(r"-?\d+\.\d+", "{}", values[0])
        cols = list(zip(*[[float(x) for x in n] for n in numbers]))
        def fmt(x: float) -> str:  # p-values keep their digits (0.001), η and rates two decimals
            return f"{x:.2g}" if 0 < abs(x) < 0.01 else f"{x:.2f}"

        return template.format(*[fmt(min(c)) if min(c) == max(c) else f"{fmt(min(c))}–{fmt(max(c))}" for c in cols])
    leading = [re.match(r"-?\d+\.\d+", v) for v in values]
    if all(leading):  # e.g. "0.75 (330k)", "0.14 (100k)": the range of the numbers, then what follows them
        numbers = [float(m.group(0)) for m in leading]
        rest = sorted({v[m.end():].strip().strip("()") for v, m in zip(values, leading)} - {""})
        return f"{min(numbers):.2f}–{max(numbers):.2f}" + (f" ({', '.join(rest)})" if rest else "")
    kinds = [re.sub(r" \(p = .*|: η.*|η = .*", lambda m: "emerged" if m.group(0).startswith("η") else "", v) for v in values]
    parts = []
    for name, count in pd.Series(kinds).value_counts().items():
        same = [v for v, k in zip(values, kinds) if k == name and re.search(r"\d\.\d", v)]
        detail = f" ({across(same)})" if same and name != "agree" and name != "disagree" else ""
        parts.append(f"{name or '?'} {count}/{len(values)}{detail}")
    return ", ".join(parts)


def main() -> int:
    import platform

    import torch

    from harness.demo.pipeline import FULL, QUICK

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", help="training threads, each a run per seed (default the demo's)")
    parser.add_argument("--quick", action="store_true", help="the reduced demo (tests/demo/test_demo.py's)")
    parser.add_argument("--root", type=Path, default=Path("results"), help="where the runs' folders go (default results/)")
    args = parser.parse_args()
    outs, seconds = {}, {}
    for threads in args.threads or [None]:
        for seed in args.seeds:
            settings = {"quick": args.quick, "seed": seed, "threads": threads}
            name = f"seed {seed}, {suite_config(**settings).threads} thr"
            outs[name] = args.root / default_out(**settings).name
            result = run_demo(outs[name], **settings, log=lambda message: print(message, file=sys.stderr))
            seconds[name] = result.seconds
            print(f"{name}: {result.out} ({', '.join(f'{k} {v:.0f}s' for k, v in result.seconds.items())})", file=sys.stderr)
    quick_sizes = None if args.quick else [size.name for size in FULL.sizes if size in QUICK.sizes]
    print(f"{'quick' if args.quick else 'full'} demo, seeds {', '.join(map(str, args.seeds))}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, torch {torch.__version__}, Python {platform.python_version()}; "
          f"folders under {args.root}\n")
    for source in LOSS_SOURCES:
        columns = {name: seed_column(out, source, quick_sizes) for name, out in outs.items()}
        frame = pd.DataFrame(columns).fillna("")
        frame[f"across {len(outs)} runs"] = [across(list(row)) for row in frame.itertuples(index=False)]
        print(f"### {source} held-out loss: {TASK} [{METRIC}]\n")
        print(markdown_table(frame.reset_index().rename(columns={"index": ""})))
        pooled = [pooled_kind(c["pooled"]) for c in columns.values()]
        mode = max(set(pooled), key=pooled.count)
        with_verdict = sum(int(c["sizes with a verdict"].split()[0]) >= 2 for c in columns.values())
        decided = sum(not c["sizes"].startswith("undetermined") for c in columns.values())
        line = (f"\npooled `{mode}` in {pooled.count(mode)} of {len(pooled)} runs; at least 2 sizes with a verdict in "
                f"{with_verdict} of {len(columns)}; whether the sizes agree decided in {decided} of {len(columns)}")
        if quick_sizes:
            key = f"pooled, {' + '.join(quick_sizes)} only (--quick)"
            same = sum(pooled_kind(c[key]) == pooled_kind(c["pooled"]) for c in columns.values())
            line += f"; the quick demo's sizes alone reach the same pooled verdict in {same} of {len(columns)}"
        print(line + "\n")
    print("| run | " + " | ".join(next(iter(seconds.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(seconds.values()))))
    for name, parts in seconds.items():
        print(f"| {name} | " + " | ".join(f"{v:.0f} s" for v in parts.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
