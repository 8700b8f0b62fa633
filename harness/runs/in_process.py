"""Evaluate a model already in memory — a training run's, between two steps — as ``harness eval``
evaluates a saved one: the same items, engine, scoring, unit keys and results files.

    evaluate_model: training state saved ─► identity ─► plan of one checkpoint ─► the runner
                    (runs/sweep.py, as harness eval) ─► results view ─► tidy rows ─► training state restored

The model is scored where it lies (no reload, no copy of its weights).  Task items are built and
prompts tokenized once per process, so a training run that evaluates a hundred times pays for them
once.  Afterwards the model's train/eval mode of every module, its ``requires_grad`` flags and the
python, numpy, torch CPU and CUDA random states are as they were, so training continues bit for bit
as it would have without the evaluation.

Identity: with ``checkpoint_dir`` (the folder these exact weights were just saved to, as at a
Trainer save), the identity is that folder's content hash and the results go to the folder
``harness eval --model checkpoint_dir`` uses, so a later ``harness eval`` of it finds every unit
done (or adds the tasks it lacks).  Without one, it is ``units.loaded_model_identity``: a hash of
the state dict, config and tokenizer.
"""

from __future__ import annotations

import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from harness import store
from harness.checkpoints import Checkpoint, canonical_location, default_model_name
from harness.errors import UserError
from harness.items.registry import task_list
from harness.runs import distributed, units
from harness.runs.loss_sources import LossSettings, loss_settings
from harness.runs.plan import BuiltTasks, build_tasks, check_folder_owner, plan_checkpoint
from harness.runs.plan import checkpoint_dir as checkpoint_dir_of
from harness.runs.prepare import InMemory, model_device
from harness.runs.sweep import run_sweep
from harness.runs.sweep_config import ModelSweep, SweepConfig, check_api_arguments, validated
from harness.spec import BuildOptions

# built once per process: (task list, build options) -> rendered items and their digests;
# tokenizer fingerprint -> encodings
_TASKS: dict[tuple[tuple[str, ...], BuildOptions], BuiltTasks] = {}
# items scored between two looks at the clock under a time budget: a budget overshoots by at most one
# such chunk (a few generations)
_BUDGET_CHUNK = 4
_ENCODINGS: dict[str, dict[str, tuple[int, ...]]] = {}


def tasks_once(tasks: tuple[str, ...], opts: BuildOptions) -> BuiltTasks:
    """Every selected task's items and their digests, built on the first call and reused by later
    ones (the same items, and with ``limit`` the same first N of each (sub)task, at every step of a run)."""
    key = (tasks, opts)
    if key not in _TASKS:
        _TASKS[key] = build_tasks(tasks, opts)
    return _TASKS[key]


def evaluate_model(
    model: Any,
    tokenizer: Any,
    tasks: str | Sequence[str],
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    loss_corpus: str | Path | None = None,
    loss_window: int = 2048,
    loss_tokens: int = 1_000_000,
    limit: int | None = None,
    batch_size: int | str = "auto",
    step: int | None = None,
    name: str | None = None,
    size: str | None = None,
    checkpoint_dir: str | Path | None = None,
    train_loss: float | None = None,
    train_loss_step: int | None = None,
    tokens_per_step: int | None = None,
    num_fewshot: int | None = None,
    prompt_type: str | None = None,
    bigbench_mode: str = "auto",
    add_bos_token: bool | None = None,
    prefix_cache: bool = True,
    max_new_tokens: int | str | None = None,
    time_budget: float | None = None,
    include_path: str | Path | None = None,
    allow_task_code: bool = False,
    progress: bool = False,
    log=None,
) -> pd.DataFrame:
    """Score ``model`` (an HF causal LM on its device) on ``tasks``; the tidy rows of
    ``harness.table.results_table``, one per (task, metric).

    ``out``: also write the results there as ``harness eval`` would (else a temporary folder is
    used and removed).  ``loss_corpus``: the held-out loss (``loss_source`` corpus); else
    ``train_loss`` (logged at ``train_loss_step``) is recorded with ``loss_source`` trainer.
    ``step``, ``name``, ``size``, ``tokens_per_step``: the table's step, model, size and
    tokens_seen = step x tokens_per_step.  ``checkpoint_dir``: see the module docstring.  Under a multi-process launch
    every process scores its share and the main process writes; other processes get no rows.

    Budgets, for evaluation inside a training loop: ``max_new_tokens`` caps the tokens generated per
    item (a count, or ``"auto"``: from each item's targets, for tasks that read the answer at the start
    of the generation, a cap a model that answers never reaches: ``items.rows.capped``); the cap is part
    of the items, so of the unit keys.  ``time_budget``: seconds this evaluation may spend scoring
    items; past it, each unfinished task unit is written ``partial`` (the metrics of the items scored,
    rows with status ``partial``), never as finished, and a later evaluation of the same weights
    resumes it.  The loss is measured whatever the budget.  Neither set: results as without them.

    ``lm_eval:<name>`` tasks are lm-eval's (``harness.interop.lm_eval_tasks``); ``include_path``: a
    folder of one's own lm-eval YAMLs, ``allow_task_code``: their ``!function`` code may run.
    """
    check_api_arguments("evaluate_model", {k: v for k, v in locals().items() if k not in ("model", "tokenizer", "log")})
    log = log or (lambda message: None)
    if time_budget is not None and not time_budget >= 0:  # its type: check_api_arguments, above
        raise UserError(f"evaluate_model: time_budget={time_budget!r}: pass seconds >= 0, or None for no budget")
    deadline = time.monotonic() + time_budget if time_budget is not None else None
    tasks = task_list(tasks)
    device = model_device(model)
    ranks, _ = distributed.join(device)
    with training_state_kept(model):
        if checkpoint_dir is not None:
            from harness.engine.models import folder_content_hash, weights_dtype

            if ranks.world > 1:
                _barrier()  # the main process has written the folder before any process hashes it
            identity = units.CheckpointIdentity(None, None, folder_content_hash(Path(checkpoint_dir)), weights_dtype(model))
            # the saved folder as `harness eval --model <folder>` names it: resolved, and its run's name
            model_name = canonical_location(str(checkpoint_dir))
            default_name = default_model_name(model_name)
        else:
            identity = units.loaded_model_identity(model, tokenizer)
            model_name = name or getattr(model.config, "_name_or_path", None) or "model"
            default_name = model_name
        loss: LossSettings | None = loss_settings(
            corpus=Path(loss_corpus) if loss_corpus is not None else None, window=loss_window, tokens=loss_tokens,
        )
        if loss is None and train_loss is not None:
            loss = LossSettings("trainer", value=float(train_loss), logged_step=train_loss_step)
        with _results_root(out) as root:
            model_label = name or default_name
            config = validated(SweepConfig(
                models=(ModelSweep(name=model_label, size=size, loss=loss, tokens_per_step=tokens_per_step),),
                tasks=tasks, out=root, data_dir=Path(data_dir) if data_dir is not None else None, limit=limit,
                num_fewshot=num_fewshot, prompt_type=prompt_type, bigbench_mode=bigbench_mode, dtype=identity.dtype,
                device=device, batch_size=batch_size, add_bos_token=add_bos_token, prefix_cache=prefix_cache,
                prefetch=False, progress=progress, max_new_tokens=max_new_tokens,
                include_path=Path(include_path) if include_path is not None else None, allow_task_code=allow_task_code,
                # under a time budget, items are saved (and the clock checked) in small chunks
                **({"save_every": _BUDGET_CHUNK} if deadline is not None else {}),
            ))
            # a saved folder's results go where `harness eval --model <folder>` (and a sweep) look:
            # <out>/<run>/checkpoint-N; a state held only in memory is named by its step,
            # <out>/<name>/step-N (its identity, a hash of the state dict, keys its units)
            where = model_name if checkpoint_dir is not None else (f"step-{step}" if step is not None else "model")
            checkpoint = Checkpoint(model_name, None, step)
            out_dir = checkpoint_dir_of(root, model_label, Checkpoint(where, None, step))
            check_folder_owner(out_dir, checkpoint, identity)
            plan = plan_checkpoint(config, checkpoint, identity, out_dir, tasks_once(tasks, config.build_options()))
            info = _model_info(model, tokenizer, model_name, identity)
            summary = run_sweep(config, log=log, plan=plan, memory=InMemory((model, tokenizer, info), _ENCODINGS),
                                deadline=deadline)
            if summary.interrupted:
                raise KeyboardInterrupt
            from harness.table import COLUMNS, view_table

            if not ranks.is_main:
                return pd.DataFrame(columns=COLUMNS)
            # the rows of this evaluation's units only (the folder may hold other settings' units)
            return view_table(out_dir / store.RESULTS_NAME)


@contextmanager
def _results_root(out: str | Path | None) -> Iterator[Path]:
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="harness-") as folder:
        yield Path(folder)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _model_info(model: Any, tokenizer: Any, model_name: str, identity: units.CheckpointIdentity) -> Any:
    """What ``load_model`` records for a loaded checkpoint, for a model given in memory."""
    from harness.engine.models import model_info

    return model_info(
        model, tokenizer, model=model_name, revision=None, resolved_revision=None, content_hash=identity.content_hash,
        source="memory" if identity.content_hash.startswith("state-dict:") else "local",
    )


@contextmanager
def training_state_kept(model: Any) -> Iterator[None]:
    """Run the body without gradients and put back what evaluation may change: each module's
    train/eval mode (the engine calls ``model.eval()``), each parameter's ``requires_grad``, and the
    python, numpy, torch CPU and CUDA random states (dropout and the data order of the next epoch
    draw from them)."""
    import numpy as np
    import torch

    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    # only when CUDA is already in use: asking for its states would initialise it
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
