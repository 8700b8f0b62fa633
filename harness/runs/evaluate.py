"""``harness eval``: the sweep of one checkpoint.

The same runner, units, keys, per-item resume, failure records, stats and store layout as
``harness sweep`` (``harness.runs.sweep``), and the same folder (``plan.checkpoint_dir``:
``<out>/<model name>/<checkpoint>``); the only difference is that the checkpoint is named rather
than discovered.  A local path is resolved first, and the model name of ``runs/my-run/checkpoint-20``
is ``my-run`` (``checkpoints.default_model_name``), so an eval finds what a sweep or the training
callback already did in the same ``--out``.  A second identical eval finds every unit finished and
loads no model; an interrupted one resumes after the last item scored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.checkpoints import Checkpoint, default_model_name, parse_step
from harness.errors import check_run_values, check_whole_number
from harness.items.registry import task_list
from harness.runs.loss_sources import loss_settings
from harness.runs.plan import canonical, check_folder_owner, checkpoint_dir, plan_checkpoint
from harness.runs.sweep import SweepSummary, run_sweep
from harness.runs.sweep_config import ModelSweep, SweepConfig, validated
from harness.runs.units import checkpoint_identity


@dataclass(frozen=True)
class EvalSpec:
    """One checkpoint and the run settings: what ``harness eval`` runs."""

    config: SweepConfig  # its one model is this checkpoint's
    checkpoint: Checkpoint


@dataclass
class EvalOutcome:
    results: Path | None  # the checkpoint's results.json view (None in a launch's other processes)
    summary: SweepSummary


def eval_spec(
    model: str, tasks: tuple[str, ...] | list[str] | str, *, revision: str | None = None,
    loss_corpus: Path | None = None, loss_window: int = 2048, loss_tokens: int = 1_000_000,
    name: str | None = None, size: str | None = None, tokens_per_step: int | None = None, **settings: Any,
) -> EvalSpec:
    """The spec of ``harness eval --model MODEL [--revision R] --tasks ...``; ``settings`` are
    ``SweepConfig`` fields (out, limit, batch_size, dtype, device...), range-checked here before any
    model is loaded."""
    # the flags' own names in the messages (validated() names the config file's keys too)
    check_run_values(limit=settings.get("limit"), num_fewshot=settings.get("num_fewshot"),
                     batch_size=settings.get("batch_size", "auto"), loss_window=loss_window, loss_tokens=loss_tokens)
    check_whole_number("--save-every", settings.get("save_every", 256), 1, "items scored between two saves, e.g. 256")
    loss = loss_settings(corpus=Path(loss_corpus) if loss_corpus is not None else None, window=loss_window, tokens=loss_tokens)
    the_model = ModelSweep(name=name or default_model_name(model), size=size, loss=loss, tokens_per_step=tokens_per_step)
    config = validated(SweepConfig(models=(the_model,), tasks=task_list(tasks), **settings))
    checkpoint = canonical(Checkpoint(model, revision, None))
    step = parse_step(revision) if revision else parse_step(checkpoint.model)
    return EvalSpec(config, replace(checkpoint, step=step))


def evaluate(spec: EvalSpec, log=print, loggers: Any = None) -> EvalOutcome:
    """Run the units of one checkpoint that are not finished in its folder yet.  A checkpoint that
    cannot be found is a one-line ``UserError`` here, before anything is built or loaded."""
    from harness import store
    from harness.engine.models import dtype_name
    from harness.runs.distributed import launched_ranks

    identity = checkpoint_identity(spec.checkpoint, dtype_name(spec.config.dtype, spec.config.device))
    folder = checkpoint_dir(spec.config.out, spec.config.models[0].name, spec.checkpoint)
    check_folder_owner(folder, spec.checkpoint, identity)  # a one-line error before any model loads
    summary = run_sweep(spec.config, log=log, loggers=loggers, plan=plan_checkpoint(spec.config, spec.checkpoint, identity, folder))
    results = folder / store.RESULTS_NAME if launched_ranks().is_main else None
    return EvalOutcome(results, summary)



def measure_loss(model: str, *, out: Path | None, log=print, **spec_args: Any) -> tuple[EvalOutcome, dict[str, Any] | None]:
    """``harness loss``: the loss unit alone, through the same runner and store as ``harness eval``
    (into ``out``, or a temporary folder when none is given), and the loss it recorded (None when it
    failed: the outcome's summary says why)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="harness-loss-") as folder:
        outcome = evaluate(eval_spec(model, (), out=Path(out) if out is not None else Path(folder), **spec_args), log=log)
        view = outcome.results
        loss = json.loads(view.read_text(encoding="utf-8")).get("loss") if view is not None and view.exists() else None
        if out is None:
            outcome.results = None  # removed with the folder
    return outcome, loss
