"""What a run will do, decided before any model is loaded: every task's items (built once), the
checkpoints, and the units of work (checkpoint × task, and the loss) that this shard owns.

    plan_sweep:      items built once ─► each model's checkpoints discovered ─► units this shard owns
    plan_checkpoint: the same for one checkpoint named on the command line (``harness eval``) or
                     held in memory (``harness.evaluate_model``): eval is a sweep of one checkpoint

Where a checkpoint's results go, for a sweep, ``harness eval`` and ``EvalCallback`` alike:
``<out>/<model name>/<revision, or the checkpoint folder's name>`` (``checkpoint_dir``), fixed before
anything is loaded, so shards agree on it and each command finds the others' finished units.  A local
checkpoint is its resolved path (``checkpoints.canonical_location``): spelling it another way changes
neither its folder nor its name.  The folder is a place, not an identity: different weights that
land in one folder (a checkpoint overwritten, two runs given one name) keep their own units, since
every key holds the weights' identity, and a view or a table row never joins units of two identities.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path

from harness import store
from harness.checkpoints import Checkpoint, canonical_location
from harness.errors import UserError
from harness.items import registry
from harness.items.rows import TaskRows, build_task_rows
from harness.runs.sweep_config import ModelSweep, SweepConfig
from harness.runs.units import LOSS_UNIT, CheckpointIdentity, items_sha256, plan_id
from harness.spec import BuildOptions


@dataclass(frozen=True)
class PlannedCheckpoint:
    model: ModelSweep
    checkpoint: Checkpoint
    out_dir: Path  # checkpoint_dir(out, model name, checkpoint)
    units: tuple[str, ...]  # the task labels (and "loss") this shard owns for this checkpoint
    identity: CheckpointIdentity | None = None  # when known before preparing (one named checkpoint)
    labels: tuple[str, ...] = ()  # every label of the run at this checkpoint, other shards' too (its view's request)


@dataclass
class SweepPlan:
    checkpoints: list[PlannedCheckpoint]  # only those with units owned by this shard, in step order
    task_rows: dict[str, TaskRows]  # label -> items, built once for the whole run
    items_sha256: dict[str, str]  # label -> digest of its items
    notes: list[str]
    units_in_sweep: int  # over all shards


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", text.replace("/", "__")).strip("_.") or "model"


def checkpoint_dir(out: Path, model_name: str, checkpoint: Checkpoint) -> Path:
    """One checkpoint's folder, the same for sweep, eval and the callback:
    ``<out>/<model name>/<revision, or the checkpoint folder's name>``."""
    name = checkpoint.revision or Path(checkpoint.model.rstrip("/\\")).name or "checkpoint"
    return Path(out) / _slug(model_name) / _slug(name)


def canonical(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with a local path resolved (``checkpoints.canonical_location``)."""
    return replace(checkpoint, model=canonical_location(checkpoint.model)) if checkpoint.revision is None else checkpoint


class FolderTaken(UserError):
    """Another checkpoint's units are in the folder this one would use (two runs given one name)."""


def check_folder_owner(out_dir: Path, checkpoint: Checkpoint, identity: CheckpointIdentity) -> None:
    """Refuse a folder holding another checkpoint's units (a different path with different weights),
    which would become one series in the report; the same path with new weights (an overwritten
    checkpoint) and the same weights at a new path (a moved run) are the same checkpoint."""
    other = store.other_checkpoint(out_dir, {"model": checkpoint.model, "revision": checkpoint.revision},
                                   dataclasses.asdict(identity))
    if other is not None:
        raise FolderTaken(
            f"{out_dir} holds the results of {other}, other weights than {checkpoint.label}; "
            "give this run its own model name (--name, name: in a sweep config, EvalCallback(name=...)) or another --out"
        )


# label -> the task's items, and label -> the digest of its items (what the unit keys hash)
BuiltTasks = tuple[dict[str, TaskRows], dict[str, str]]


def build_tasks(tasks: tuple[str, ...], opts: BuildOptions) -> BuiltTasks:
    """Every selected task's items (a task named twice is built once) and their digests; ``lm_eval:<name>``
    tasks are built by lm-eval (``harness.interop.lm_eval_tasks``), after ours."""
    ours = [t for t in tasks if not t.startswith("lm_eval:")]
    theirs = list(dict.fromkeys(t for t in tasks if t.startswith("lm_eval:")))
    selections = list({s.label: s for s in registry.resolve(ours)}.values()) if ours else []
    built = {b.selection.label: b for b in build_task_rows(selections, opts)}
    if theirs:
        from harness.interop.lm_eval_tasks import build_task_rows as build_lm_eval_rows

        built.update({b.selection.label: b for b in build_lm_eval_rows(theirs, opts)})
    return built, {label: items_sha256(b.rows) for label, b in built.items()}


def _labels(built: dict[str, TaskRows], model: ModelSweep) -> list[str]:
    return list(built) + ([LOSS_UNIT] if model.loss is not None else [])


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Build every task's items (data errors surface before any model loads), find every model's
    checkpoints, and keep the units this shard owns."""
    built, digests = build_tasks(config.tasks, config.build_options())
    planned: list[PlannedCheckpoint] = []
    notes: list[str] = []
    total = 0
    owners: dict[Path, str] = {}
    for model in config.models:
        discovery = model.discover()
        notes.extend(discovery.notes)
        labels = _labels(built, model)
        for checkpoint in map(canonical, discovery.checkpoints):
            out_dir = checkpoint_dir(config.out, model.name, checkpoint)
            if owners.setdefault(out_dir, checkpoint.label) != checkpoint.label:
                raise UserError(
                    f"{owners[out_dir]} and {checkpoint.label} would share the results folder {out_dir}; "
                    "give the models distinct names (name: in the config, --name)"
                )
            total += len(labels)
            owned = tuple(label for label in labels if config.shard.owns(plan_id(model.name, checkpoint, label)))
            if owned:
                planned.append(PlannedCheckpoint(model, checkpoint, out_dir, owned, labels=tuple(labels)))
    return SweepPlan(planned, built, digests, notes, total)


def plan_checkpoint(
    config: SweepConfig, checkpoint: Checkpoint, identity: CheckpointIdentity, out_dir: Path,
    built: BuiltTasks | None = None,
) -> SweepPlan:
    """The plan of one checkpoint of ``config.models[0]`` whose identity is known, into ``out_dir``
    (``checkpoint_dir``): the units this shard owns (``--shard`` splits the tasks of one checkpoint as
    it splits a sweep's; processes of one launch split each unit's items instead).  ``built``: task
    items built earlier (a training run evaluates the same items at every step)."""
    (model,) = config.models
    built_rows, digests = built if built is not None else build_tasks(config.tasks, config.build_options())
    labels = _labels(built_rows, model)
    owned = tuple(label for label in labels if config.shard.owns(plan_id(model.name, checkpoint, label)))
    planned = [PlannedCheckpoint(model, checkpoint, out_dir, owned, identity, tuple(labels))] if owned else []
    return SweepPlan(planned, built_rows, digests, [], len(labels))
