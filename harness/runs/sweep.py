"""The one runner: a sweep of many checkpoints, ``harness eval`` of one, and
``harness.evaluate_model`` of a model in memory all run here, into one store.

    plan (runs/plan.py) ─► for each checkpoint: prepare (identity, folder, keys, skip finished, load;
    the next one prepared in the background) ─► each pending unit: score items in chunks, each chunk
    appended to the unit's item log ─► unit file ─► results.json view

Nothing finished is ever redone or lost: a unit's file appears (atomically) only when it is complete,
its item log is flushed as it grows (a rerun resumes after the last item scored), and a failure in
one checkpoint or unit is recorded and passed over.  Under ``accelerate launch``/``torchrun`` every
process loads the checkpoint and scores every ``world``-th item of each chunk; the main process
gathers the records in item order and writes.  Two limits of that: the corpus loss is measured by
the main process alone (the others wait at the next gather), and a checkpoint that loads in some
processes but not others leaves them at different gathers (they must see the same files).  See
``harness.store`` for the files and ``harness.runs.units`` for the keys.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import store
from harness.errors import NonFiniteOutput
from harness.items.rows import TaskRows
from harness.runs import distributed
from harness.runs.distributed import Ranks
from harness.runs.loss_sources import LossSettings, logged_loss, trainer_state_loss
from harness.runs.plan import FolderTaken, PlannedCheckpoint, SweepPlan, plan_sweep
from harness.runs.prefetch import BackgroundCall
from harness.runs.prepare import InMemory, Prepared, RunInputs, prepare
from harness.runs.progress import SweepProgress, library_bars_off
from harness.runs.score import score_items, score_lm_eval, split_by_row, task_entries
from harness.runs.sweep_config import SweepConfig
from harness.runs.unit_files import Log, RunLog, error_line, now, unit_header, write_failure, write_unit, write_view
from harness.runs.units import LOSS_UNIT


@dataclass
class SweepSummary:
    shard: str
    units_in_sweep: int
    units_owned: int
    units_skipped: int = 0  # finished before this run started
    units_done: int = 0  # finished by this run
    units_failed: int = 0
    units_partial: int = 0  # task units a time budget cut: written ``partial``, resumed by the next run
    # finished units this run wrote over an existing finished file: work done twice (two processes
    # given the same shard, say); always 0 in a correct setup
    units_recomputed: int = 0
    items_scored: int = 0  # items this run put through the model
    items_resumed: int = 0  # items of unfinished units found already scored on disk
    ran: list[str] = field(default_factory=list)  # keys of the units this run finished
    skipped: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # per checkpoint: folder, load/eval seconds
    interrupted: bool = False

    def line(self) -> str:
        cut = f", {self.units_partial} cut by the time budget (partial)" if self.units_partial else ""
        return (
            f"sweep {self.shard}: {self.units_done} units run{cut}, {self.units_skipped} already done, "
            f"{self.units_failed} failed (of {self.units_owned} owned, {self.units_in_sweep} in the sweep); "
            f"{self.items_scored} items scored, {self.items_resumed} resumed from disk"
        )


class UnitFailure(RuntimeError):
    """A unit produced numbers that cannot be right (NaN): recorded as failed, not as a result."""


class StopRequest:
    """Ctrl-C and SIGTERM (what SLURM sends before a time limit) stop the run.

    The handler raises KeyboardInterrupt as Python's own does, and also remembers the request: a
    signal that lands in a finalizer run by ``gc.collect()`` (freeing a checkpoint) has its
    exception swallowed, so the runner checks the flag between chunks, units and checkpoints."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@dataclass
class _Run:
    """One run's settings and running state, passed down the loop."""

    config: SweepConfig
    plan: SweepPlan
    summary: SweepSummary
    log: RunLog
    stop: StopRequest
    inputs: RunInputs
    ranks: Ranks
    device: str
    loggers: Any = None
    deadline: float | None = None  # time.monotonic() past which no more items are scored (a time budget)
    progress: SweepProgress = field(default_factory=lambda: SweepProgress(None, None, enabled=False))

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def run_sweep(
    config: SweepConfig, log: Log = print, loggers: Any = None, *, plan: SweepPlan | None = None,
    memory: InMemory | None = None, deadline: float | None = None,
) -> SweepSummary:
    """Run this shard's pending units; failures are recorded and passed over, Ctrl-C (or SIGTERM,
    as SLURM sends before a time limit) stops after keeping everything finished so far.

    ``plan``: a plan made elsewhere (``plan_checkpoint`` for one checkpoint), else ``plan_sweep``.
    ``memory``: the plan's one checkpoint is this model in memory.  ``deadline`` (``time.monotonic()``,
    a time budget: ``evaluate_model(time_budget=)``): once past it no more items are scored, and each
    task unit left unfinished is written ``partial`` (the metrics of the items it scored, never taken
    for a finished unit: the next run resumes it); the loss unit still runs.  ``loggers``
    (``harness.runs.loggers.Loggers``, ``--log-to``): each checkpoint's series, written once its
    units are run or found done, against its step."""
    device = memory.device if memory is not None else config.device
    ranks, device = distributed.join(device)
    plan = plan if plan is not None else plan_sweep(config)
    owned = sum(len(p.units) for p in plan.checkpoints)
    summary = SweepSummary(config.shard.label, plan.units_in_sweep, owned)
    progress = SweepProgress(len(plan.checkpoints), owned, enabled=config.progress and ranks.is_main)
    run_log = RunLog(config.out, config.shard.label, progress.log_through(log), writes=ranks.is_main)
    for note in plan.notes:
        run_log.event("note", f"note: {note}", note=note)
    run_log.event(
        "start",
        f"sweep {config.shard.label}: {len(plan.checkpoints)} checkpoints, {owned} of {plan.units_in_sweep} units",
        checkpoints=len(plan.checkpoints), units_owned=owned, units_in_sweep=plan.units_in_sweep,
    )
    encodings = memory.encodings if memory is not None else None
    with StopRequest() as stop, library_bars_off(), progress:
        run = _Run(config, plan, summary, run_log, stop, RunInputs(encodings), ranks, device, loggers, deadline, progress)
        try:
            _run_plan(run, memory)
        except KeyboardInterrupt:
            summary.interrupted = True
            progress.interrupted()
            run_log.event("interrupted", "interrupted: finished units and scored items are kept; rerun to resume")
        finally:
            if ranks.is_main:
                _write_summary(config, summary, run_log)
    return summary


def _write_summary(config: SweepConfig, summary: SweepSummary, run_log: RunLog) -> None:
    """``<out>/logs/summary-<shard>.json``: the counts, the keys run and skipped, failures, timings."""
    record = dataclasses.asdict(summary)
    store.write_json_atomic(Path(config.out) / "logs" / f"summary-{config.shard.label}.json", record)
    run_log.event("end", None, **{k: v for k, v in record.items() if k not in ("ran", "skipped", "checkpoints")})


def _provenance(run: _Run, info: Any = None) -> dict[str, Any]:
    """``models.run_provenance`` of the loaded model, or of the configured device when none was loaded."""
    from harness.engine.models import dtype_name, resolve_device, run_provenance

    if info is not None:
        return run_provenance(info.device, info.dtype)
    return run_provenance(str(resolve_device(run.device)), dtype_name(run.config.dtype, run.device))


def _run_plan(run: _Run, memory: InMemory | None) -> None:
    from harness.engine.models import dtype_name

    dtype = dtype_name(run.config.dtype, run.device)
    config = dataclasses.replace(run.config, device=run.device)
    checkpoints = run.plan.checkpoints

    def start(index: int) -> BackgroundCall[Prepared] | None:
        if index >= len(checkpoints):
            return None
        return BackgroundCall(
            prepare, config, run.plan, checkpoints[index], dtype, run.inputs, memory, in_thread=config.prefetch,
        )

    upcoming = start(0)
    for index, planned in enumerate(checkpoints):
        call, waited_from = upcoming, time.perf_counter()
        run.progress.checkpoint(index + 1, f"{planned.out_dir.parent.name}/{planned.out_dir.name}")
        try:
            prepared = call.result()
        except Exception as error:  # noqa: BLE001 - a checkpoint whose files cannot be read fails alone
            prepared = None
            _checkpoint_failed(run, planned, error)
        waited = time.perf_counter() - waited_from
        # the next checkpoint's weights are read while this one is evaluated
        upcoming = start(index + 1)
        if prepared is not None:
            device_type = _evaluate_checkpoint(run, prepared, waited)
            del prepared
            if memory is None:  # free this checkpoint's model before the next one is evaluated
                from harness.engine.batching import release_memory

                release_memory(device_type)
        view = store.merged_results(planned.out_dir) if run.loggers is not None and run.ranks.is_main else None
        if view is not None:
            run.loggers.log_results(planned.model.name, view, planned.checkpoint.step)
        run.stop.check()


def _checkpoint_failed(run: _Run, planned: PlannedCheckpoint, error: Exception) -> None:
    for label in planned.units:
        if run.ranks.is_main and isinstance(error, FolderTaken):
            # nothing is written into a folder that holds another checkpoint's results
            run.summary.failures.append({"checkpoint": planned.checkpoint.label, "task": label, "error": error_line(error)})
        elif run.ranks.is_main:
            run.summary.failures.append(write_failure(planned, label, error, _provenance(run)))
        run.summary.units_failed += 1
    run.progress.settled(len(planned.units), failed=True)
    run.log.event("checkpoint_failed", f"FAILED {planned.checkpoint.label}: {error_line(error)}",
                  checkpoint=planned.checkpoint.label, error=error_line(error))


def _evaluate_checkpoint(run: _Run, prepared: Prepared, waited: float) -> str | None:
    """Run the checkpoint's pending units; returns its device type, for freeing memory after."""
    from harness.engine import Engine

    planned, config, summary = prepared.planned, run.config, run.summary
    for warning in prepared.warnings:
        run.log.event("warning", warning, checkpoint=planned.checkpoint.label)
    if run.ranks.is_main:
        # the view of this run's request before anything runs: units found done are shown, and a
        # view left by a run with other settings (or of other weights) is never shown as this one's
        write_view(planned, prepared.request)
    summary.skipped.extend(prepared.keys[label] for label in prepared.skipped)
    summary.units_skipped += len(prepared.skipped)
    run.progress.settled(len(prepared.skipped))
    if prepared.skipped:
        run.log.event("skipped", f"already in {planned.out_dir}: {', '.join(sorted(prepared.skipped))} "
                      "(same checkpoint, data and settings); not run again")
    started = time.perf_counter()
    engine, device_type = None, None
    if prepared.loaded is not None:
        model, tokenizer, _ = prepared.loaded
        device_type = model.device.type
        engine = Engine(
            model, tokenizer, batch_size=config.batch_size, add_bos_token=config.add_bos_token,
            prefix_cache=config.prefix_cache, encode_cache=run.inputs.encode_cache(tokenizer, config.add_bos_token),
            progress=run.progress,
        )
        del model, tokenizer
    for label in prepared.pending:
        failed = summary.units_failed
        run.progress.unit_started(label)
        _run_unit(run, prepared, label, engine)
        run.progress.unit_finished(failed=summary.units_failed > failed)
        run.stop.check()
    eval_seconds = time.perf_counter() - started
    timing = {
        "checkpoint": planned.checkpoint.label,
        "folder": str(planned.out_dir),
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
    run.log.event(
        "checkpoint",
        f"{planned.checkpoint.label}: load {timing['load_seconds']:.1f}s (waited {waited:.1f}s), "
        f"eval {eval_seconds:.1f}s{ratio}; {len(prepared.pending)} units run, {len(prepared.skipped)} already done",
        **timing,
    )
    prepared.loaded = None
    return device_type


def _run_unit(run: _Run, prepared: Prepared, label: str, engine: Any) -> None:
    planned = prepared.planned
    key, record = prepared.keys.get(label), prepared.records.get(label)
    info = prepared.loaded[2] if prepared.loaded is not None else None
    provenance = _provenance(run, info)
    extra = {"processes": run.ranks.world} if run.ranks.world > 1 else None
    try:
        if label in prepared.record_errors:
            raise prepared.record_errors[label]
        if prepared.load_error is not None and (label != LOSS_UNIT or planned.model.loss.needs_model):
            raise prepared.load_error
        if label == LOSS_UNIT:
            if not run.ranks.is_main:
                return  # the main process measures the loss; the others go on to the next unit
            loss = _run_loss_unit(planned.model.loss, planned, prepared.loaded, run)
            unit = {**unit_header(planned, label, "loss", key, record, provenance, extra), "loss": loss}
        else:
            body = _run_task_unit(run, engine, run.plan.task_rows[label], planned, key)
            unit = {**unit_header(planned, label, "task", key, record, provenance, extra), **body}
        partial = unit.get("partial") is not None
        unit.update(model=dataclasses.asdict(info) if info is not None else None, status="partial" if partial else "done",
                    finished=now())
        if run.ranks.is_main:
            run.summary.units_recomputed += write_unit(planned, unit, prepared.request)
        if partial:
            run.summary.units_partial += 1
            run.log.event("unit_partial", f"CUT {planned.checkpoint.label} {label}: the time budget ran out after "
                          f"{unit['partial']['items_scored']} of {unit['partial']['items_total']} items; the unit is partial",
                          checkpoint=planned.checkpoint.label, task=label, key=key, **unit["partial"])
            return
    except Exception as error:  # noqa: BLE001 - out of memory after back-off, NaN, bad files: recorded, run goes on
        if run.ranks.is_main:
            run.summary.failures.append(write_failure(planned, label, error, provenance, record, key, prepared.request))
        run.summary.units_failed += 1
        run.log.event("unit_failed", f"FAILED {planned.checkpoint.label} {label}: {error_line(error)}",
                      checkpoint=planned.checkpoint.label, task=label, key=key, error=error_line(error))
        return
    run.summary.units_done += 1
    run.summary.ran.append(key)
    run.log.event("unit_done", None, checkpoint=planned.checkpoint.label, task=label, key=key)


# A process whose share of a chunk failed (NaN, out of memory after back-off) sends this in place of
# its records, so every process still takes part in the gather and all of them fail the unit alike.
_FAILED = "__failed__"


def _score_chunk(run: _Run, engine: Any, built: TaskRows, chunk: list) -> list[dict[str, Any]]:
    """This process's share of ``chunk`` scored, every process's records gathered in item order."""
    mine = distributed.my_indices(len(chunk), run.ranks)
    try:
        items = [chunk[i] for i in mine]
        # an lm-eval task's documents are scored with lm-eval's own filters and process_results
        own = score_lm_eval(engine, built, items) if built.lm_eval is not None else score_items(engine, built.spec, items)
        scored = list(zip(mine, own))
    except (NonFiniteOutput, RuntimeError) as error:
        if run.ranks.world == 1:
            raise
        scored = [(-1, {_FAILED: error_line(error)})]
    records = distributed.gather_in_order(scored, run.ranks)
    errors = [r[_FAILED] for r in records if _FAILED in r]
    if errors:
        raise UnitFailure(errors[0])
    return records


def _run_task_unit(run: _Run, engine: Any, built: TaskRows, planned: PlannedCheckpoint, key: str) -> dict[str, Any]:
    """Score the unit's items not yet in its item log, appending them in chunks of ``save_every``,
    then aggregate every row from the whole log."""
    items_path = store.unit_items_path(planned.out_dir, key)
    saved, bad = store.read_item_log(items_path)
    saved = [r for r in saved if "task" in r and "doc_id" in r]
    if bad:
        run.log.event("warning", f"warning: {items_path}: {bad} unreadable lines skipped (their items are scored "
                      "again); every valid line is kept", checkpoint=planned.checkpoint.label, key=key, bad_lines=bad)
    if items_path.exists() and run.ranks.is_main:
        # drop the bad lines (a line torn by a kill) before appending after them; the valid lines stay
        store.write_jsonl_atomic(items_path, saved)
    have = {(r["task"], r["doc_id"]): r for r in saved}
    flat = [item for items in built.rows.values() for item in items]
    todo = [item for item in flat if (item.task, item.doc_id) not in have]
    run.summary.items_resumed += len(flat) - len(todo)
    run.progress.unit_items(len(flat) - len(todo), len(flat))
    before = (engine.tokens_forwarded, engine.tokens_naive, time.perf_counter())
    for start in range(0, len(todo), run.config.save_every):
        if run.out_of_time():
            break
        chunk = todo[start : start + run.config.save_every]
        run.progress.chunk_started(len(chunk))
        records = _score_chunk(run, engine, built, chunk)  # the engine fails a unit on NaN or inf (NonFiniteOutput)
        if run.ranks.is_main:
            store.append_jsonl(items_path, records)
        have.update(((r["task"], r["doc_id"]), r) for r in records)
        run.summary.items_scored += len(records)
        run.progress.chunk_finished(len(records))
        run.stop.check()
    if len(have) < len(flat):  # cut by the time budget: the metrics of the items scored, marked partial
        built = dataclasses.replace(built, rows={row: kept for row, items in built.rows.items()
                                                 if (kept := [item for item in items if (item.task, item.doc_id) in have])})
    records = [have[(item.task, item.doc_id)] for items in built.rows.values() for item in items]
    counts = distributed.sum_over_processes({
        "tokens_forwarded": engine.tokens_forwarded - before[0], "tokens_naive": engine.tokens_naive - before[1],
    }, run.ranks)
    forwarded, naive = counts["tokens_forwarded"], counts["tokens_naive"]
    stats = {
        "tokens_forwarded": forwarded,
        "tokens_naive": naive,
        "forwarded_over_naive": forwarded / naive if naive else None,
        "seconds": round(time.perf_counter() - before[2], 3),
        "prefix_cache": engine.prefix_cache,
        "items_scored": len(records) - (len(flat) - len(todo)),
        "items_resumed": len(flat) - len(todo),
    }
    body = {"tasks": task_entries(built, split_by_row(built, records)) if records else {}, "stats": stats,
            "items": items_path.name}
    if len(records) < len(flat):
        body["partial"] = {"items_scored": len(records), "items_total": len(flat), "reason": "time budget"}
    return body


def _run_loss_unit(settings: LossSettings, planned: PlannedCheckpoint, loaded: Any, run: _Run) -> dict[str, Any]:
    checkpoint = planned.checkpoint
    if settings.kind == "corpus":
        from harness.engine.loss import pretraining_loss

        model, tokenizer, _ = loaded
        started = time.perf_counter()
        result = pretraining_loss(
            model, tokenizer, settings.corpus, window=settings.window, max_tokens=settings.tokens,
            batch_size=run.config.batch_size, progress=run.progress,
        )
        loss = {**dataclasses.asdict(result), "source": "corpus", "seconds": round(time.perf_counter() - started, 3)}
    elif settings.kind == "file":
        loss = logged_loss(run.inputs.log(settings.file), checkpoint.step, settings.smoothing)
    elif settings.kind == "trainer":
        loss = {"loss": settings.value, "source": "trainer", "logged_step": settings.logged_step}
    else:
        loss = trainer_state_loss(Path(checkpoint.model), checkpoint.step, use_eval=settings.kind.endswith(":eval"))
    if loss["loss"] is not None and not math.isfinite(loss["loss"]):
        raise UnitFailure(f"the loss is {loss['loss']} ({loss['source']}): diverged or corrupt weights")
    return loss
