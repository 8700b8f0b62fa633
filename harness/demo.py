"""``harness demo``: the loss threshold end to end, offline, on the CPU.

    train the tiny suite (or reuse it) ─► sweep.yaml, one model per size ─► ``harness sweep`` machinery
    ─► results table ─► ``harness report`` machinery ─► a summary: each size's threshold, do they agree

Everything runs through the code users run on real checkpoints: the suite's arithmetic tasks are
BIG-bench task.json files read by the ``bigbench:`` loader, the loss is the harness's own held-out
loss (``--loss-corpus``), and the training loss from each checkpoint's trainer_state.json is kept
beside it in ``losses.csv``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.report import Report, build_report, prediction_frame, write_report
from harness.table import markdown_table
from harness.tiny_suite import ADDITION, Log, ModelSize, SuiteConfig, train_suite

DEFAULT_OUT = Path("results/demo")
QUICK_OUT = Path("results/demo-quick")

# The full demo's tuning (2 CPU cores, under 15 minutes with the sweep and the report); why each value:
FULL = SuiteConfig(
    # Non-embedding parameters 13k, 100k, 336k. The smallest barely learns the task (a few correct
    # answers in 100), the middle one some, the largest clearly: a family, not three copies.
    sizes=(ModelSize("13k", 32, 1, 4), ModelSize("100k", 64, 2, 4), ModelSize("330k", 96, 3, 4)),
    tasks=(ADDITION,),
    # the 330k model's training is half the run; at 1500 steps it leaves zero exact match after
    # step ~600 and ends near 0.4, within the 15-minute budget
    steps=1500,
    batch_size=16,  # many small steps learn more per token than few large ones at this scale
    learning_rate=1e-2,  # tiny models take (and need) a high rate to learn carries within the budget
    arithmetic_share=0.8,  # the arithmetic must be most of what the models see to be learnt in minutes
    docstring_chars=300_000,
    first_checkpoint=30,
)
# The reduced demo (tests/test_demo.py, a few minutes): the same task and corpus recipe, smaller
# models and fewer steps, one thread (the test machine is shared). The largest is 3 layers deep: at
# 900 steps a 2-layer 100k model sits near 0.1 exact match, a 3-layer 150k one near 0.3.
QUICK = SuiteConfig(
    sizes=(ModelSize("4k", 16, 1, 2), ModelSize("13k", 32, 1, 4), ModelSize("150k", 64, 3, 4)),
    tasks=(ADDITION,),
    steps=900,
    batch_size=16,
    learning_rate=1e-2,
    arithmetic_share=0.8,
    docstring_chars=60_000,
    checkpoints=8,
    first_checkpoint=10,
    eval_items=60,
    threads=1,
)
BOOTSTRAP = 1000
SEED = 0


@dataclass(frozen=True)
class DemoResult:
    out: Path
    report: Path  # index.html
    losses: Path  # losses.csv: held-out loss beside the trainer's
    summary: tuple[str, ...]
    seconds: dict[str, float]
    predictions: str = ""  # the prediction test's table (markdown): can target_logprob foresee the jump?


def sweep_yaml(manifest: dict, suite_dir: Path, out: Path) -> dict:
    """The sweep config: one model per size, its loss computed on the suite's held-out corpus."""
    config = manifest["config"]

    def rel(path: Path) -> str:  # paths in sweep.yaml are relative to the file, so the folder can move
        return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path.resolve())

    return {
        "out": "sweep",
        "tasks": [f"bigbench:{task['name']}" for task in config["tasks"]],
        "data_dir": rel(suite_dir / "data"),
        "limit": config["eval_items"],
        "device": "cpu",
        "dtype": "float32",
        "batch_size": "auto",
        "tokens_per_step": config["batch_size"] * config["seq_len"],
        # windows as long as the training blocks; every token of the held-out corpus
        "loss": {"corpus": rel(suite_dir / "loss_corpus.jsonl"), "window": config["seq_len"], "tokens": 10_000_000},
        "models": [
            {"checkpoints": rel(suite_dir / "runs" / size["name"]), "name": f"tiny-neox-{size['name']}", "size": size["name"]}
            for size in manifest["sizes"]
        ],
    }


def losses_frame(table: pd.DataFrame, manifest: dict, suite_dir: Path) -> pd.DataFrame:
    """Per checkpoint: the held-out loss the report uses and the training loss HF Trainer logged."""
    from harness.loss_sources import trainer_state_loss

    rows = table.drop_duplicates(["size", "step"]).dropna(subset=["step"])
    out = []
    for size, step, loss in zip(rows["size"], rows["step"], rows["loss"]):
        logged = trainer_state_loss(suite_dir / "runs" / str(size) / f"checkpoint-{int(step)}", int(step))
        out.append({"size": size, "step": int(step), "heldout_loss": loss, "train_loss": logged["loss"]})
    order = {s["name"]: i for i, s in enumerate(manifest["sizes"])}
    frame = pd.DataFrame(out, columns=["size", "step", "heldout_loss", "train_loss"])
    return frame.sort_values(["size", "step"], key=lambda c: c.map(order) if c.name == "size" else c).reset_index(drop=True)


def summary_lines(report: Report) -> list[str]:
    """Per task two lines: each size's threshold on the held-out loss, then whether the sizes agree."""
    lines = []
    for analysis in report.analyses:
        sizes = "; ".join(f"{size}: {t.describe()}" for size, t in analysis.by_size.items())
        lines.append(f"{analysis.task} [{analysis.metric}] threshold per size (held-out loss, nats/token): {sizes}")
        agreement = analysis.agreement
        if agreement is None or agreement.agree is None:
            lines.append("  sizes: not testable" + (f" ({agreement.note})" if agreement else " (one size)"))
        else:
            lines.append(f"  sizes: {'agree' if agreement.agree else 'DISAGREE'} ({agreement.note})")
    return lines


def run_demo(out: Path, *, quick: bool = False, log: Log = print) -> DemoResult:
    from harness.sweep import run_sweep
    from harness.sweep_config import load_sweep_config
    from harness.table import results_table

    out = Path(out)
    config = QUICK if quick else FULL
    seconds: dict[str, float] = {}
    started = time.monotonic()
    suite_dir = out / "suite"
    manifest = train_suite(config, suite_dir, log)
    seconds["train"] = time.monotonic() - started

    started = time.monotonic()
    config_path = out / "sweep.yaml"
    config_path.write_text(
        "# written by `harness demo`: rerun with `harness sweep --config " + config_path.as_posix() + "`\n"
        + yaml.safe_dump(sweep_yaml(manifest, suite_dir, out), sort_keys=False),
        encoding="utf-8",
    )
    sweep = load_sweep_config(config_path, progress=False)
    summary = run_sweep(sweep, log=log)
    if summary.failures:
        failed = "; ".join(f"{f['checkpoint']} {f['task']}: {f['error']}" for f in summary.failures)
        log(f"demo: {len(summary.failures)} sweep units failed ({failed}); the report leaves them out")
    seconds["sweep"] = time.monotonic() - started

    started = time.monotonic()
    table = results_table(sweep.out)
    # items_root: the per-item records (target log-probabilities) feed the prediction test
    report = build_report(table, source=str(sweep.out), resamples=BOOTSTRAP, seed=SEED, items_root=sweep.out)
    write_report(report, out / "report")
    losses_path = out / "losses.csv"
    losses_frame(table, manifest, suite_dir).to_csv(losses_path, index=False)
    seconds["report"] = time.monotonic() - started
    predictions = markdown_table(prediction_frame(report)) if report.predictions else ""
    return DemoResult(out, out / "report" / "index.html", losses_path, tuple(summary_lines(report)), seconds, predictions)
