"""The harness's numbers in the user's own dashboards: ``harness/<task>/<metric>`` series against the
training step, from a results file (``harness_scalars``), written by ``--log-to`` (TensorBoard, W&B
offline) or handed to a Trainer's ``log`` by ``harness.EvalCallback``, so a finished sweep and an
in-training run show the same series.

Series per checkpoint: each top-level task row's primary metric and its continuous companions
(``correct_choice_prob``, ``brier_score``, ``target_logprob``... : the ones that move before the
primary does), and ``harness/loss`` (with ``harness/loss_bits_per_byte`` for a corpus loss).

One tag per series in every dashboard: ``train/harness/<task>/<metric>``.  The callback hands
``harness/...`` to ``Trainer.log``, and transformers' integrations (TensorBoard, W&B, Trackio, Comet,
Neptune, SwanLab: ``integration_utils.rewrite_logs``) file every key that does not start with
``eval_``/``test_`` under ``train/``.  Those names are the integrations' to choose, for every
``report_to`` at once, so ``--log-to`` (ours) follows them (``dashboard_tag``): a sweep drawn after
training lands on the same curves as the run's own events.  (MLflow's integration keeps the keys as
they are; there the callback's series are ``harness/...``.)
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import pandas as pd

from harness.errors import UserError
from harness.scoring.companions import COMPANION_METRICS

CONTINUOUS_METRICS = COMPANION_METRICS | {"correct_choice_prob", "brier_score"}
PREFIX = "harness"
# what transformers' report_to integrations put before a key handed to Trainer.log (rewrite_logs)
TRAINER_TAG_PREFIX = "train/"


def series_name(task: str, metric: str) -> str:
    """``harness/<task>/<metric>``; a task's ``:`` (``bigbench:arithmetic``) stays, other characters
    dashboards reject become ``_``."""
    return f"{PREFIX}/{re.sub(r'[^A-Za-z0-9_.:/-]+', '_', task)}/{metric}"


def dashboard_tag(series: str) -> str:
    """The tag a series gets in TensorBoard or W&B: ``train/harness/...``, as the Trainer's integrations
    show the callback's ``harness/...`` logs (see the module docstring)."""
    return TRAINER_TAG_PREFIX + series


def harness_scalars(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The series of one checkpoint from its tidy rows (``harness.table.checkpoint_rows`` of a
    results file, or ``harness.evaluate_model``'s frame): top-level rows only (a group's aggregate,
    not each subtask), their primary metric and continuous companions, and the loss."""
    scalars: dict[str, float] = {}
    for row in rows:
        if row.get("status") != "done" or _missing(row.get("value")):
            continue
        if _missing(row.get("parent")) and (row.get("primary") is True or row.get("metric") in CONTINUOUS_METRICS):
            scalars[series_name(row["task"], row["metric"])] = float(row["value"])
        for column, name in (("loss", "loss"), ("loss_bits_per_byte", "loss_bits_per_byte")):
            if not _missing(row.get(column)):
                scalars[f"{PREFIX}/{name}"] = float(row[column])
    return scalars


def results_scalars(results: dict[str, Any]) -> dict[str, float]:
    """``harness_scalars`` of a results file (``harness eval``'s, or a sweep checkpoint's merged view)."""
    from harness.table import checkpoint_rows

    return harness_scalars(checkpoint_rows(results))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


class MetricLogger(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LogTarget:
    """``--log-to`` parsed: ``tensorboard:DIR`` or ``wandb[:PROJECT]``."""

    kind: str  # "tensorboard" | "wandb"
    where: str | None  # the event folder, or the W&B project


def parse_log_to(text: str) -> LogTarget:
    kind, _, where = text.partition(":")
    kind = kind.strip().lower()
    if kind == "tensorboard":
        if not where.strip():
            raise UserError(f"--log-to {text!r}: name the event folder, e.g. tensorboard:runs/tb")
        if importlib.util.find_spec("tensorboard") is None:
            raise UserError("--log-to tensorboard needs the tensorboard package: pip install tensorboard")
        return LogTarget("tensorboard", where.strip())
    if kind == "wandb":
        if importlib.util.find_spec("wandb") is None:
            raise UserError("--log-to wandb needs the wandb package: pip install wandb")
        return LogTarget("wandb", where.strip() or None)
    raise UserError(f"--log-to {text!r}: use tensorboard:DIR or wandb[:PROJECT]")


class TensorBoardLogger:
    """Scalars into ``DIR/<run>/`` event files (one folder per model, so their curves overlay), tagged
    ``train/harness/...`` as the Trainer's TensorBoard callback tags the callback's."""

    def __init__(self, folder: Path, run: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / _slug(run)))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(dashboard_tag(name), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """One W&B run per model, keys ``train/harness/...`` as the Trainer's W&B callback names the
    callback's; offline unless WANDB_MODE says otherwise (no network needed: ``wandb sync`` uploads it later)."""

    def __init__(self, project: str | None, run: str, folder: Path) -> None:
        import os

        import wandb

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project or "harness", name=run, dir=str(folder), mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="create_new",
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        # train/global_step too: the Trainer's W&B callback draws every series against it
        self.run.log({**{dashboard_tag(name): value for name, value in scalars.items()}, "train/global_step": step}, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """The ``--log-to`` targets of one command, one logger per (target, model), opened on first use."""

    def __init__(self, targets: list[LogTarget], out: Path) -> None:
        self.targets = targets
        self.out = Path(out)
        self._open: dict[tuple[int, str], MetricLogger] = {}

    def log_results(self, run: str, results: dict[str, Any], step: int | None) -> None:
        scalars = results_scalars(results)
        if not scalars:
            return
        for index, target in enumerate(self.targets):
            key = (index, run)
            if key not in self._open:
                self._open[key] = (
                    TensorBoardLogger(Path(target.where), run) if target.kind == "tensorboard"
                    else WandbLogger(target.where, run, self.out / "logs")
                )
            # a checkpoint without a step (a hub model's main branch) is drawn at step 0
            self._open[key].log(scalars, step if step is not None else 0)

    def close(self) -> None:
        for logger in self._open.values():
            logger.close()
        self._open.clear()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", text.replace("/", "__")).strip("_.") or "model"
