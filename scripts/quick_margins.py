"""How far above the quick-demo test's bars does the quick suite's largest size end, per seed and thread count?

    python scripts/quick_margins.py                              # seeds 0-4, one and two threads
    python scripts/quick_margins.py --seeds 0 1 --threads 1 --set steps=1200 --set docstring_chars=300000

Trains only the largest size of ``harness.demo.pipeline.QUICK`` (each size is trained on its own, from the
seed, so its weights are those of the full quick suite with the same seed and thread count), sweeps
its first and last checkpoints with the demo's own sweep config, and prints one row per
(seed, threads): the quantities ``tests/demo/test_demo.py::test_quick_demo_end_to_end`` asserts on the
largest size. ``--set field=value`` tries another SuiteConfig value (numbers only) before changing QUICK.
Suites are kept under ``--out`` (default results/quick-margins), so a rerun only re-reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from harness.demo.corpus import ModelSize
from harness.demo.pipeline import QUICK, sweep_yaml
from harness.demo.tiny_suite import train_suite
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import load_sweep_config
from harness.table import markdown_table, results_table

TASK = "bigbench:two_digit_addition"


def parse_set(items: list[str]) -> dict:
    changes = {}
    for item in items:
        field, _, value = item.partition("=")
        if field == "largest":  # hidden,layers,heads
            hidden, layers, heads = map(int, value.split(","))
            changes["largest"] = ModelSize(f"{hidden}x{layers}", hidden, layers, heads)
        else:
            changes[field] = float(value) if "." in value or "e" in value else int(value)
    return changes


def measure(config, folder: Path, log) -> dict:
    manifest = train_suite(config, folder / "suite", log)
    size = manifest["sizes"][0]
    steps = size["checkpoint_steps"]
    spec = sweep_yaml(manifest, folder / "suite", folder)
    spec["models"][0]["checkpoints"] = [f"suite/runs/{size['name']}/checkpoint-{s}" for s in (steps[0], steps[-1])]
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    run_sweep(load_sweep_config(folder / "sweep.yaml", progress=False), log=lambda message: None)
    table = results_table(folder / "sweep")
    rows = table[table["task"] == TASK]

    def first_last(metric: str) -> tuple[float, float]:
        values = rows[rows["metric"] == metric].sort_values("step")["value"]
        return float(values.iloc[0]), float(values.iloc[-1])

    em0, em1 = first_last("exact_match")
    lp0, lp1 = first_last("target_logprob_per_token")
    loss = rows.drop_duplicates("step").sort_values("step")["loss"]
    return {"final_exact_match": em1, "exact_match_gain": em1 - em0, "loss_drop": float(loss.iloc[0] - loss.iloc[-1]),
            "logprob_per_token_rise": lp1 - lp0, "train_seconds": size["train_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=[], help="field=value: a SuiteConfig change to try")
    parser.add_argument("--out", type=Path, default=Path("results/quick-margins"))
    args = parser.parse_args()
    changes = parse_set(args.set)
    largest = changes.pop("largest", QUICK.sizes[-1])
    base = dataclasses.replace(QUICK, sizes=(largest,), **changes)
    label = "-".join(f"{k}{v}" for k, v in sorted(changes.items())) + ("" if largest == QUICK.sizes[-1] else f"-{largest.name}")
    label = label.strip("-")
    records = []
    for seed in args.seeds:
        for threads in args.threads:
            config = dataclasses.replace(base, seed=seed, threads=threads)
            folder = args.out / (label or "quick") / f"seed{seed}-threads{threads}"
            record = {"seed": seed, "threads": threads, **measure(config, folder, lambda m: print(m, file=sys.stderr))}
            print(record, file=sys.stderr, flush=True)
            records.append(record)
    import pandas as pd

    frame = pd.DataFrame(records)
    print(f"largest size {largest.name} ({largest.hidden_size} hidden, {largest.layers} layers), "
          f"{base.steps} steps{', ' + label if label else ''}")
    print(markdown_table(frame.round(3)))
    stats = frame.drop(columns=["seed", "threads"]).agg(["min", "max"]).round(3)
    print(markdown_table(stats.reset_index().rename(columns={"index": "range"})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
