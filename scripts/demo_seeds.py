"""The demo's verdicts across seeds: the numbers the README quotes, as ranges.

    python scripts/demo_seeds.py                      # seeds 0, 1, 2 of the full demo (results/demo, results/demo-seed1, ...)
    python scripts/demo_seeds.py --quick --seeds 0 1 2 3 4

Runs ``harness demo`` for each seed (a seed already trained and swept is reused, so after a change to
the statistics a rerun costs only the reports: about a minute per seed), then prints, per loss source
(the training mixture's held-out loss, the held-out docstrings'), one markdown table: each size's
status and η [90% interval], the pooled verdict, whether the sizes agree, and the largest size's final
exact match, per seed and across seeds. A single run's digits do not reproduce on another machine
(CPU kernels differ, and a tiny model's training amplifies the difference), so quote the ranges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.demo.pipeline import LOSS_SOURCES, REPORT_DIRS, default_out, run_demo, suite_config
from harness.table import markdown_table

TASK = "bigbench:two_digit_addition"
METRIC = "exact_match"
PREFIX = "tiny-neox-"


def _num(value) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.2f}"


def verdict(row) -> str:
    """One curve's verdict as the README quotes it: status, and η [interval] when it emerged."""
    status = row.get("status")
    status = "" if status is None or pd.isna(status) else str(status)
    if pd.isna(row.get("eta")):
        return status or "no threshold"
    text = f"η = {_num(row['eta'])} [{_num(row.get('eta_low'))}, {_num(row.get('eta_high'))}]"
    return f"{status}: {text}" if status and status != "emerged" else text


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


def seed_column(out: Path, source: str) -> dict[str, str]:
    """The quantities of one seed and loss source, from the files the demo wrote."""
    thresholds = pd.read_csv(out / REPORT_DIRS[source] / "thresholds.csv")
    thresholds = thresholds[(thresholds["task"] == TASK) & (thresholds["metric"] == METRIC)]
    column: dict[str, str] = {}
    pooled = None
    for _, row in thresholds.iterrows():
        scope = str(row["scope"])
        if scope.startswith(PREFIX):
            column[f"{scope.removeprefix(PREFIX)}"] = verdict(row)
        else:
            pooled = row
    if pooled is not None:
        column["pooled"] = verdict(pooled)
        column["sizes"] = agreement(pooled)
    table = pd.read_csv(out / f"table-{source}.csv")
    em = table[(table["task"] == TASK) & (table["metric"] == METRIC)]
    largest = em[em["size"] == em.loc[em["params_non_embedding"].idxmax(), "size"]].sort_values("step")
    last = largest.iloc[-1]
    column[f"largest ({last['size']}) final exact match"] = f"{last['value']:.2f} (loss {last['loss']:.2f})"
    finals = em.sort_values("step").groupby("size", sort=False).tail(1)
    best = finals.loc[finals["value"].idxmax()]
    column["best final exact match"] = f"{best['value']:.2f} ({best['size']})"
    return column


def across(values: list[str]) -> str:
    """Across seeds: the range of η, intervals and exact matches; counts of statuses and verdicts."""
    import re

    numbers = [re.findall(r"-?\d+\.\d+", v) for v in values]
    if all(numbers) and len({len(n) for n in numbers}) == 1 and len({re.sub(r"-?\d+\.\d+", "#", v) for v in values}) == 1:
        template = re.sub(r"-?\d+\.\d+", "{}", values[0])
        cols = list(zip(*[[float(x) for x in n] for n in numbers]))
        return template.format(*[f"{min(c):.2f}" if min(c) == max(c) else f"{min(c):.2f}–{max(c):.2f}" for c in cols])
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="the reduced demo (tests/test_demo.py's)")
    parser.add_argument("--threads", type=int, help="training threads (default the demo's)")
    args = parser.parse_args()
    outs = {}
    for seed in args.seeds:
        settings = {"quick": args.quick, "seed": seed, "threads": args.threads}
        outs[seed] = default_out(**settings)
        result = run_demo(outs[seed], **settings, log=lambda message: print(message, file=sys.stderr))
        print(f"seed {seed}: {result.out} ({', '.join(f'{k} {v:.0f}s' for k, v in result.seconds.items())})", file=sys.stderr)
    config = suite_config(quick=args.quick, threads=args.threads)
    print(f"{'quick' if args.quick else 'full'} demo, seeds {', '.join(map(str, args.seeds))}, {config.threads} training "
          f"thread(s); folders {', '.join(str(o) for o in outs.values())}\n")
    for source in LOSS_SOURCES:
        columns = {f"seed {seed}": seed_column(out, source) for seed, out in outs.items()}
        frame = pd.DataFrame(columns).fillna("")
        frame[f"across {len(outs)} seeds"] = [across(list(row)) for row in frame.itertuples(index=False)]
        print(f"### {source} held-out loss: {TASK} [{METRIC}]\n")
        print(markdown_table(frame.reset_index().rename(columns={"index": ""})))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
