"""Writing a run's files (``harness.store`` holds the layout): a finished unit, a failed unit, the
merged ``results.json`` view, and the run log.  Only the main process of a launch writes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from harness import __version__, store
from harness.runs.plan import PlannedCheckpoint
from harness.runs.units import plan_id, record_json

Log = Callable[[str], None]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def error_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class RunLog:
    """Human lines to ``log`` and JSON events to ``<out>/logs/sweep-<shard>.jsonl`` (one per line,
    flushed); a process other than the launch's main one writes neither."""

    def __init__(self, out: Path, shard_label: str, log: Log, writes: bool = True) -> None:
        self.path = Path(out) / "logs" / f"sweep-{shard_label}.jsonl"
        self.log = log
        self.writes = writes

    def event(self, kind: str, message: str | None = None, **fields: Any) -> None:
        if not self.writes:
            return
        if message:
            self.log(message)
        store.append_jsonl(self.path, [{"time": now(), "event": kind, **fields}])


def is_finished(out_dir: Path, key: str) -> bool:
    path = store.unit_path(out_dir, key)
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("status") == "done"


def unit_header(
    planned: PlannedCheckpoint, label: str, kind: str, key: str | None, record: Any, provenance: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What every unit file starts with: the checkpoint's place in its run, the frozen record its
    key hashes (the config that produced it), the command line and the software versions."""
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
        **(extra or {}),
        "record": record_json(record) if record is not None else None,
        "command": " ".join(sys.argv),
        "provenance": provenance,
    }


def _plan_hash(planned: PlannedCheckpoint, label: str) -> str:
    return hashlib.sha256(plan_id(planned.model.name, planned.checkpoint, label).encode("utf-8")).hexdigest()[:24]


def write_unit(planned: PlannedCheckpoint, unit: dict[str, Any]) -> bool:
    """Write a finished unit; True when a finished file of the same key was already there."""
    redone = is_finished(planned.out_dir, unit["key"])
    store.write_json_atomic(store.unit_path(planned.out_dir, unit["key"]), unit)
    store.failure_path(planned.out_dir, _plan_hash(planned, unit["task"])).unlink(missing_ok=True)
    write_view(planned.out_dir)
    return redone


def write_failure(
    planned: PlannedCheckpoint, label: str, error: BaseException, provenance: dict[str, Any], record: Any = None,
) -> dict[str, Any]:
    message = error_line(error)
    unit = {
        **unit_header(planned, label, "failure", None, record, provenance),
        "status": "failed",
        "failed": now(),
        "error": message,
        "error_type": type(error).__name__,
    }
    store.write_json_atomic(store.failure_path(planned.out_dir, _plan_hash(planned, label)), unit)
    write_view(planned.out_dir)
    return {"checkpoint": planned.checkpoint.label, "task": label, "error": message}


def write_view(out_dir: Path) -> None:
    view = store.merged_results(out_dir)
    if view is not None:
        store.write_json_atomic(Path(out_dir) / store.RESULTS_NAME, view)
