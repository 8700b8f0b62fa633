"""Sweep many checkpoints: plan the units of work, then run the ones this shard owns that are not
finished yet, checkpoint by checkpoint in step order.

    plan_sweep: tasks' items built once ─► checkpoints discovered ─► units (checkpoint × task, loss)
    run_sweep:  for each checkpoint: identity ─► keys ─► skip finished ─► load (next one prefetched)
                ─► each pending unit: score items (appended to its item log) ─► unit file ─► view

Nothing finished is ever redone or lost: a unit's file appears (atomically) only when it is complete,
its item log is flushed as it grows, and a failure in one checkpoint or unit is recorded and passed
over.  See ``harness.store`` for the files and ``harness.runs.units`` for the keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import __version__, store
from harness.items import registry
from harness.runs.checkpoints import Checkpoint
from harness.errors import UserError
from harness.runs.evaluate import TaskRows, build_task_rows, score_items, split_by_row, task_entries
from harness.runs.loss_sources import (
    TRAINER_STATE_NAME,
    LossLog,
    LossSettings,
    logged_loss,
    read_loss_log,
    trainer_state_loss,
)
from harness.runs.prefetch import BackgroundCall
from harness.runs.sweep_config import ModelSweep, SweepConfig
from harness.runs.units import (
    LOSS_UNIT,
    CheckpointIdentity,
    LossUnitRecord,
    checkpoint_identity,
    items_sha256,
    plan_id,
    record_json,
    task_unit_record,
    unit_key,
)

Log = Callable[[str], None]


# ---------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedCheckpoint:
    model: ModelSweep
    checkpoint: Checkpoint
    out_dir: Path
    units: tuple[str, ...]  # the task labels (and "loss") this shard owns for this checkpoint


@dataclass
class SweepPlan:
    checkpoints: list[PlannedCheckpoint]  # only those with units owned by this shard, in step order
    task_rows: dict[str, TaskRows]  # label -> items, built once for the whole sweep
    items_sha256: dict[str, str]  # label -> digest of its items
    notes: list[str]
    units_in_sweep: int  # over all shards


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", text.replace("/", "__")).strip("_.") or "model"


def checkpoint_out_dir(out: Path, model: ModelSweep, checkpoint: Checkpoint) -> Path:
    """``<out>/<model name>/<revision or checkpoint folder name>``."""
    name = checkpoint.revision or Path(checkpoint.model.rstrip("/\\")).name
    if checkpoint.revision is None and checkpoint.model.rstrip("/\\") == model.name.rstrip("/\\"):
        name = "checkpoint"  # the model's folder is itself its only checkpoint
    return Path(out) / _slug(model.name) / _slug(name)


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Build every task's items (data errors surface before any model loads), find every model's
    checkpoints, and keep the units this shard owns."""
    selections = list({s.label: s for s in registry.resolve(list(config.tasks))}.values()) if config.tasks else []
    built = {b.selection.label: b for b in build_task_rows(selections, config.build_options())}
    digests = {label: items_sha256(b.rows) for label, b in built.items()}
    planned: list[PlannedCheckpoint] = []
    notes: list[str] = []
    total = 0
    owners: dict[Path, str] = {}
    for model in config.models:
        discovery = model.discover()
        notes.extend(discovery.notes)
        labels = list(built) + ([LOSS_UNIT] if model.loss is not None else [])
        for checkpoint in discovery.checkpoints:
            out_dir = checkpoint_out_dir(config.out, model, checkpoint)
            if owners.setdefault(out_dir, checkpoint.label) != checkpoint.label:
                raise UserError(
                    f"{owners[out_dir]} and {checkpoint.label} would share the results folder {out_dir}; "
                    "give the models distinct names (name: in the config, --name)"
                )
            total += len(labels)
            owned = tuple(label for label in labels if config.shard.owns(plan_id(model.name, checkpoint, label)))
            if owned:
                planned.append(PlannedCheckpoint(model, checkpoint, out_dir, owned))
    return SweepPlan(planned, built, digests, notes, total)


# ---------------------------------------------------------------------- run


@dataclass
class SweepSummary:
    shard: str
    units_in_sweep: int
    units_owned: int
    units_skipped: int = 0  # finished before this run started
    units_done: int = 0  # finished by this run
    units_failed: int = 0
    # finished units this run wrote over an existing finished file: work done twice (two processes
    # given the same shard, say); always 0 in a correct setup
    units_recomputed: int = 0
    items_scored: int = 0  # items this run put through the model
    items_resumed: int = 0  # items of unfinished units found already scored on disk
    ran: list[str] = field(default_factory=list)  # keys of the units this run finished
    skipped: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # per checkpoint: load/eval seconds
    interrupted: bool = False


@dataclass
class _Prepared:
    """What the loader produced for one checkpoint (in the background, while the previous one ran)."""

    keys: dict[str, str]  # unit label -> key
    records: dict[str, Any]  # unit label -> its frozen record
    record_errors: dict[str, Exception]  # unit label -> why its record could not be made (it fails alone)
    pending: list[str]  # labels not finished yet
    skipped: list[str]
    loaded: tuple[Any, Any, Any] | None  # (model, tokenizer, ModelInfo) when a pending unit needs it
    load_error: Exception | None  # the weights could not be loaded: every pending unit fails with it
    load_seconds: float = 0.0


class _SweepLog:
    """Human lines to ``log`` and JSON events to ``<out>/logs/sweep-<shard>.jsonl`` (one per line, flushed)."""

    def __init__(self, out: Path, shard_label: str, log: Log) -> None:
        self.path = Path(out) / "logs" / f"sweep-{shard_label}.jsonl"
        self.log = log

    def event(self, kind: str, message: str | None = None, **fields: Any) -> None:
        if message:
            self.log(message)
        record = {"time": _now(), "event": kind, **fields}
        store.append_jsonl(self.path, [record])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _dtype_name(config: SweepConfig) -> str:
    from harness.engine.models import dtype_name

    return dtype_name(config.dtype, config.device)


class _SweepInputs:
    """What a sweep reads or computes once, not once per checkpoint: loss corpora hashed, loss logs
    read (a Pythia loss log has 143,000 lines), tokenizers loaded and prompts tokenized (one of each
    per distinct tokenizer)."""

    def __init__(self) -> None:
        self._digests: dict[Path, str] = {}
        self._logs: dict[Path, LossLog] = {}
        self._encodings: dict[str, dict[str, tuple[int, ...]]] = {}
        # tokenizers by the digest of their files: checkpoints of one run share one tokenizer object
        self.tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()  # the loader thread and the main thread both ask

    def encode_cache(self, tokenizer: Any, add_bos_token: bool | None) -> dict[str, tuple[int, ...]] | None:
        from harness.engine import tokenizer_fingerprint

        fingerprint = tokenizer_fingerprint(tokenizer, add_bos_token)
        if fingerprint is None:
            return None
        with self._lock:
            return self._encodings.setdefault(fingerprint, {})

    def digest(self, path: Path) -> str:
        with self._lock:
            if path not in self._digests:
                from harness.engine.models import file_sha256

                self._digests[path] = file_sha256(path)
            return self._digests[path]

    def log(self, path: Path) -> LossLog:
        with self._lock:
            if path not in self._logs:
                self._logs[path] = read_loss_log(path)
            return self._logs[path]


def _loss_record(
    settings: LossSettings, planned: PlannedCheckpoint, identity: CheckpointIdentity | None, inputs: _SweepInputs
) -> LossUnitRecord:
    from harness.engine.models import file_sha256

    checkpoint = planned.checkpoint
    common = {"checkpoint_ref": checkpoint.label, "step": checkpoint.step, "source": settings.kind}
    if settings.kind == "corpus":
        return LossUnitRecord(
            checkpoint=identity, input_sha256=inputs.digest(settings.corpus), window=settings.window,
            tokens=settings.tokens, **common,
        )
    if settings.kind == "file":
        return LossUnitRecord(
            checkpoint=None, input_sha256=inputs.digest(settings.file), smoothing=settings.smoothing, **common
        )
    state = Path(checkpoint.model) / TRAINER_STATE_NAME
    if not state.is_file():
        raise UserError(f"{state} does not exist; --loss-from trainer-state needs HF Trainer checkpoints")
    return LossUnitRecord(checkpoint=None, input_sha256=file_sha256(state), **common)


def _prepare(
    config: SweepConfig, plan: SweepPlan, planned: PlannedCheckpoint, dtype: str, inputs: _SweepInputs
) -> _Prepared:
    """Keys of the checkpoint's units, which are finished, and the model if any pending unit needs it."""
    from harness.engine.models import load_model

    started = time.perf_counter()
    loss = planned.model.loss
    needs_identity = any(label != LOSS_UNIT for label in planned.units) or (loss is not None and loss.needs_model)
    identity = checkpoint_identity(planned.checkpoint, dtype) if needs_identity else None
    opts = config.build_options()
    records: dict[str, Any] = {}
    record_errors: dict[str, Exception] = {}
    for label in planned.units:
        if label == LOSS_UNIT:
            try:
                records[label] = _loss_record(loss, planned, identity, inputs)
            except Exception as error:  # noqa: BLE001 - e.g. no trainer_state.json: the loss unit fails, tasks go on
                record_errors[label] = error
            continue
        built = plan.task_rows[label]
        records[label] = task_unit_record(identity, label, built.spec, plan.items_sha256[label], opts, config.add_bos_token)
    keys = {label: unit_key(record) for label, record in records.items()}
    finished = [label for label, key in keys.items() if _is_finished(planned.out_dir, key)]
    pending = [label for label in planned.units if label not in finished]
    needs_model = any(label != LOSS_UNIT or (loss.needs_model and label not in record_errors) for label in pending)
    loaded, load_error = None, None
    if needs_model:
        try:
            loaded = load_model(
                planned.checkpoint.model, revision=planned.checkpoint.revision, dtype=config.dtype,
                device=config.device, trust_remote_code=config.trust_remote_code, tokenizers=inputs.tokenizers,
                content_hash=identity.content_hash if identity is not None else None,
            )
        except Exception as error:  # noqa: BLE001 - corrupt or missing weights fail this checkpoint only
            load_error = error
    return _Prepared(keys, records, record_errors, pending, finished, loaded, load_error, time.perf_counter() - started)


def _is_finished(out_dir: Path, key: str) -> bool:
    path = store.unit_path(out_dir, key)
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("status") == "done"


def _provenance(config: SweepConfig, info: Any = None) -> dict[str, Any]:
    """``models.run_provenance`` of the loaded model, or of the configured device when none was loaded."""
    from harness.engine.models import resolve_device, run_provenance

    if info is not None:
        return run_provenance(info.device, info.dtype)
    return run_provenance(str(resolve_device(config.device)), _dtype_name(config))


def _unit_header(
    planned: PlannedCheckpoint, label: str, kind: str, key: str | None, record: Any, provenance: dict[str, Any]
) -> dict[str, Any]:
    checkpoint = planned.checkpoint
    return {
        "schema": store.SCHEMA_VERSION,
        "harness_version": __version__,
        "kind": kind,
        "key": key,
        "task": label,
        "name": planned.model.name,
        "size": planned.model.size,
        "checkpoint": {"model": checkpoint.model, "revision": checkpoint.revision},
        "step": checkpoint.step,
        "tokens_per_step": planned.model.tokens_per_step,
        "record": record_json(record) if record is not None else None,
        "command": " ".join(sys.argv),
        "provenance": provenance,
    }


def _plan_hash(planned: PlannedCheckpoint, label: str) -> str:
    return hashlib.sha256(plan_id(planned.model.name, planned.checkpoint, label).encode("utf-8")).hexdigest()[:24]


def _write_unit(planned: PlannedCheckpoint, unit: dict[str, Any]) -> bool:
    """Write a finished unit; True when a finished file of the same key was already there."""
    redone = _is_finished(planned.out_dir, unit["key"])
    store.write_json_atomic(store.unit_path(planned.out_dir, unit["key"]), unit)
    store.failure_path(planned.out_dir, _plan_hash(planned, unit["task"])).unlink(missing_ok=True)
    _write_view(planned.out_dir)
    return redone


def _write_failure(
    planned: PlannedCheckpoint, label: str, error: BaseException, provenance: dict[str, Any], record: Any = None
) -> dict[str, Any]:
    message = _error_line(error)
    unit = {
        **_unit_header(planned, label, "failure", None, record, provenance),
        "status": "failed",
        "failed": _now(),
        "error": message,
        "error_type": type(error).__name__,
    }
    store.write_json_atomic(store.failure_path(planned.out_dir, _plan_hash(planned, label)), unit)
    _write_view(planned.out_dir)
    return {"checkpoint": planned.checkpoint.label, "task": label, "error": message}


def _write_view(out_dir: Path) -> None:
    view = store.merged_results(out_dir)
    if view is not None:
        store.write_json_atomic(Path(out_dir) / store.RESULTS_NAME, view)


def _error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class UnitFailure(RuntimeError):
    """A unit produced numbers that cannot be right (NaN): recorded as failed, not as a result."""


def _run_task_unit(
    engine: Any, built: TaskRows, planned: PlannedCheckpoint, key: str, save_every: int, summary: SweepSummary,
    stop: _StopRequest,
) -> dict[str, Any]:
    """Score the unit's items not yet in its item log, appending them in chunks of ``save_every``,
    then aggregate every row from the whole log."""
    items_path = store.unit_items_path(planned.out_dir, key)
    saved = store.read_partial_jsonl(items_path)
    if items_path.exists():
        # drop a line torn by a kill before appending after it
        store.write_jsonl_atomic(items_path, saved)
    have = {(r["task"], r["doc_id"]): r for r in saved}
    flat = [item for items in built.rows.values() for item in items]
    todo = [item for item in flat if (item.task, item.doc_id) not in have]
    summary.items_resumed += len(flat) - len(todo)
    before = (engine.tokens_forwarded, engine.tokens_naive, time.perf_counter())
    for start in range(0, len(todo), save_every):
        chunk = todo[start : start + save_every]
        records = score_items(engine, built.spec, chunk)  # the engine fails a unit on NaN or inf (NonFiniteOutput)
        store.append_jsonl(items_path, records)
        have.update(((r["task"], r["doc_id"]), r) for r in records)
        summary.items_scored += len(records)
        stop.check()
    records = [have[(item.task, item.doc_id)] for item in flat]
    forwarded, naive = engine.tokens_forwarded - before[0], engine.tokens_naive - before[1]
    stats = {
        "tokens_forwarded": forwarded,
        "tokens_naive": naive,
        "forwarded_over_naive": forwarded / naive if naive else None,
        "seconds": round(time.perf_counter() - before[2], 3),
        "items_scored": len(todo),
        "items_resumed": len(flat) - len(todo),
    }
    return {"tasks": task_entries(built, split_by_row(built, records)), "stats": stats, "items": items_path.name}


def _run_loss_unit(
    settings: LossSettings, planned: PlannedCheckpoint, loaded: Any, inputs: _SweepInputs, progress: bool
) -> dict[str, Any]:
    checkpoint = planned.checkpoint
    if settings.kind == "corpus":
        from harness.engine.loss import pretraining_loss

        model, tokenizer, _ = loaded
        result = pretraining_loss(
            model, tokenizer, settings.corpus, window=settings.window, max_tokens=settings.tokens, progress=progress
        )
        loss = {**dataclasses.asdict(result), "source": "corpus"}
    elif settings.kind == "file":
        loss = logged_loss(inputs.log(settings.file), checkpoint.step, settings.smoothing)
    else:
        loss = trainer_state_loss(Path(checkpoint.model), checkpoint.step, use_eval=settings.kind.endswith(":eval"))
    if loss["loss"] is not None and not math.isfinite(loss["loss"]):
        raise UnitFailure(f"the loss is {loss['loss']} ({loss['source']}): diverged or corrupt weights")
    return loss


def run_sweep(config: SweepConfig, log: Log = print, loggers: Any = None) -> SweepSummary:
    """Run this shard's pending units; failures are recorded and passed over, Ctrl-C (or SIGTERM,
    as SLURM sends before a time limit) stops after keeping everything finished so far.

    ``loggers`` (``harness.runs.loggers.Loggers``, ``--log-to``): each checkpoint's series, written once
    its units are run or found done, against its step."""
    plan = plan_sweep(config)
    owned = sum(len(p.units) for p in plan.checkpoints)
    summary = SweepSummary(config.shard.label, plan.units_in_sweep, owned)
    sweep_log = _SweepLog(config.out, config.shard.label, log)
    for note in plan.notes:
        sweep_log.event("note", f"note: {note}", note=note)
    sweep_log.event(
        "start",
        f"sweep {config.shard.label}: {len(plan.checkpoints)} checkpoints, {owned} of {plan.units_in_sweep} units",
        checkpoints=len(plan.checkpoints), units_owned=owned, units_in_sweep=plan.units_in_sweep,
    )
    with _StopRequest() as stop:
        try:
            _run_plan(config, plan, summary, sweep_log, stop, loggers)
        except KeyboardInterrupt:
            summary.interrupted = True
            sweep_log.event("interrupted", "interrupted: finished units and scored items are kept; rerun to resume")
        finally:
            _write_summary(config, summary, sweep_log)
    return summary


def _write_summary(config: SweepConfig, summary: SweepSummary, sweep_log: _SweepLog) -> None:
    """``<out>/logs/summary-<shard>.json``: the counts, the keys run and skipped, failures, timings."""
    record = dataclasses.asdict(summary)
    store.write_json_atomic(Path(config.out) / "logs" / f"summary-{config.shard.label}.json", record)
    sweep_log.event("end", None, **{k: v for k, v in record.items() if k not in ("ran", "skipped", "checkpoints")})


class _StopRequest:
    """Ctrl-C and SIGTERM (what SLURM sends before a time limit) stop the sweep.

    The handler raises KeyboardInterrupt as Python's own does, and also remembers the request: a
    signal that lands in a finalizer run by ``gc.collect()`` (freeing a checkpoint) has its
    exception swallowed, so the sweep checks the flag between chunks, units and checkpoints."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _run_plan(
    config: SweepConfig, plan: SweepPlan, summary: SweepSummary, sweep_log: _SweepLog, stop: _StopRequest,
    loggers: Any = None,
) -> None:
    dtype = _dtype_name(config)
    inputs = _SweepInputs()

    def start(index: int) -> BackgroundCall[_Prepared] | None:
        if index >= len(plan.checkpoints):
            return None
        return BackgroundCall(_prepare, config, plan, plan.checkpoints[index], dtype, inputs, in_thread=config.prefetch)

    upcoming = start(0)
    for index, planned in enumerate(plan.checkpoints):
        call, waited_from = upcoming, time.perf_counter()
        try:
            prepared = call.result()
        except Exception as error:  # noqa: BLE001 - a checkpoint whose files cannot be read fails alone
            prepared = None
            for label in planned.units:
                summary.failures.append(_write_failure(planned, label, error, _provenance(config)))
                summary.units_failed += 1
            sweep_log.event("checkpoint_failed", f"FAILED {planned.checkpoint.label}: {_error_line(error)}",
                            checkpoint=planned.checkpoint.label, error=_error_line(error))
        waited = time.perf_counter() - waited_from
        # the next checkpoint's weights are read while this one is evaluated
        upcoming = start(index + 1)
        if prepared is not None:
            device_type = _evaluate_checkpoint(config, plan, planned, prepared, waited, summary, sweep_log, inputs, stop)
            del prepared
            # free this checkpoint's model before the next one is evaluated
            from harness.engine.batching import release_memory

            release_memory(device_type)
        view = store.merged_results(planned.out_dir) if loggers is not None else None
        if view is not None:
            loggers.log_results(planned.model.name, view, planned.checkpoint.step)
        stop.check()


def _evaluate_checkpoint(
    config: SweepConfig, plan: SweepPlan, planned: PlannedCheckpoint, prepared: _Prepared, waited: float,
    summary: SweepSummary, sweep_log: _SweepLog, inputs: _SweepInputs, stop: _StopRequest,
) -> str | None:
    """Run the checkpoint's pending units; returns its device type, for freeing memory after."""
    from harness.engine import Engine

    summary.skipped.extend(prepared.keys[label] for label in prepared.skipped)
    summary.units_skipped += len(prepared.skipped)
    started = time.perf_counter()
    engine, device_type = None, None
    if prepared.loaded is not None:
        model, tokenizer, _ = prepared.loaded
        device_type = model.device.type
        engine = Engine(
            model, tokenizer, batch_size=config.batch_size, add_bos_token=config.add_bos_token,
            prefix_cache=config.prefix_cache, encode_cache=inputs.encode_cache(tokenizer, config.add_bos_token),
            progress=config.progress,
        )
        del model, tokenizer
    for label in prepared.pending:
        _run_unit(config, plan, planned, prepared, label, engine, summary, sweep_log, inputs, stop)
        stop.check()
    eval_seconds = time.perf_counter() - started
    timing = {
        "checkpoint": planned.checkpoint.label,
        "step": planned.checkpoint.step,
        "load_seconds": prepared.load_seconds,
        "waited_seconds": waited,
        "eval_seconds": eval_seconds,
        "load_over_eval": prepared.load_seconds / eval_seconds if prepared.pending and eval_seconds > 0 else None,
        "units_run": len(prepared.pending),
        "units_skipped": len(prepared.skipped),
    }
    summary.checkpoints.append(timing)
    ratio = "" if timing["load_over_eval"] is None else f", load/eval {timing['load_over_eval']:.3f}"
    sweep_log.event(
        "checkpoint",
        f"{planned.checkpoint.label}: load {timing['load_seconds']:.1f}s (waited {waited:.1f}s), "
        f"eval {eval_seconds:.1f}s{ratio}; {len(prepared.pending)} units run, {len(prepared.skipped)} already done",
        **timing,
    )
    prepared.loaded = None
    return device_type


def _run_unit(
    config: SweepConfig, plan: SweepPlan, planned: PlannedCheckpoint, prepared: _Prepared, label: str,
    engine: Any, summary: SweepSummary, sweep_log: _SweepLog, inputs: _SweepInputs, stop: _StopRequest,
) -> None:
    key, record = prepared.keys.get(label), prepared.records.get(label)
    info = prepared.loaded[2] if prepared.loaded is not None else None
    provenance = _provenance(config, info)
    try:
        if label in prepared.record_errors:
            raise prepared.record_errors[label]
        if prepared.load_error is not None and (label != LOSS_UNIT or planned.model.loss.needs_model):
            raise prepared.load_error
        if label == LOSS_UNIT:
            loss = _run_loss_unit(planned.model.loss, planned, prepared.loaded, inputs, config.progress)
            unit = {**_unit_header(planned, label, "loss", key, record, provenance), "loss": loss}
        else:
            body = _run_task_unit(engine, plan.task_rows[label], planned, key, config.save_every, summary, stop)
            unit = {**_unit_header(planned, label, "task", key, record, provenance), **body}
        unit.update(model=dataclasses.asdict(info) if info is not None else None, status="done", finished=_now())
        summary.units_recomputed += _write_unit(planned, unit)
    except Exception as error:  # noqa: BLE001 - out of memory after back-off, NaN, bad files: recorded, sweep goes on
        summary.failures.append(_write_failure(planned, label, error, provenance, record))
        summary.units_failed += 1
        sweep_log.event("unit_failed", f"FAILED {planned.checkpoint.label} {label}: {_error_line(error)}",
                        checkpoint=planned.checkpoint.label, task=label, key=key, error=_error_line(error))
        return
    summary.units_done += 1
    summary.ran.append(key)
    sweep_log.event("unit_done", None, checkpoint=planned.checkpoint.label, task=label, key=key)
