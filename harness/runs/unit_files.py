"""Writing a run's files (``harness.store`` holds the layout): a finished unit, a failed unit, the
merged ``results.json`` view, and the run log.  Only the main process of a launch writes."""

from __future__ import annotations

import datetime as dt
import hashlib
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


def is_finished(out_dir: Path, key: str, warn: Log | None = None) -> bool:
    """Whether the unit of ``key`` has a finished file.  A file that cannot be read (truncated,
    damaged) counts as missing, so the unit runs again and its file is rewritten; ``warn`` is told
    which file."""
    path = store.unit_path(out_dir, key)
    if not path.is_file():
        return False
    try:
        return store.read_unit_file(path).get("status") == "done"
    except (OSError, ValueError) as error:
        if warn is not None:
            warn(f"warning: {path} is unreadable ({type(error).__name__}); counted as missing, its unit runs again")
        return False


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


def write_unit(planned: PlannedCheckpoint, unit: dict[str, Any], request: dict[str, str]) -> bool:
    """Write a finished unit, then the view of ``request`` (label -> key, the run's units at this
    checkpoint); True when a finished file of the same key was already there."""
    redone = is_finished(planned.out_dir, unit["key"])
    store.write_json_atomic(store.unit_path(planned.out_dir, unit["key"]), unit)
    store.failure_path(planned.out_dir, _plan_hash(planned, unit["task"])).unlink(missing_ok=True)
    write_view(planned, request)
    return redone


def write_failure(
    planned: PlannedCheckpoint, label: str, error: BaseException, provenance: dict[str, Any], record: Any = None,
    key: str | None = None, request: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record a failed unit (``key``: the unit's key when it was made; a view matches a failure to its
    request by it) and rewrite the view of ``request``."""
    message = error_line(error)
    unit = {
        **unit_header(planned, label, "failure", key, record, provenance),
        "status": "failed",
        "failed": now(),
        "error": message,
        "error_type": type(error).__name__,
    }
    store.write_json_atomic(store.failure_path(planned.out_dir, _plan_hash(planned, label)), unit)
    write_view(planned, request)
    return {"checkpoint": planned.checkpoint.label, "task": label, "error": message}


def write_view(planned: PlannedCheckpoint, request: dict[str, str] | None) -> None:
    """``results.json``: the view of this run's request at this checkpoint (``store.merged_results``
    with its keys), rewritten after each unit and once before any runs, so that it never shows
    what another run asked for, even when every unit is found done.  ``request`` None (the
    checkpoint failed before its keys were made): the failures alone."""
    keys = request if request is not None else {}
    view = store.merged_results(planned.out_dir, keys)
    if view is None:
        view = {"schema": store.SCHEMA_VERSION, "loss": None, "tasks": {}, "stats": {}, "units": {}, "failures": [],
                "request": keys, "identity": None, "model": None}
    if request is None:  # no keys: the failures recorded for this checkpoint's labels
        failures = [u for u in store.read_unit_files(planned.out_dir).units if u["status"] == "failed"]
        labels = set(planned.labels)
        view["failures"] = [{"task": u["task"], "error": u["error"], "failed": u["failed"]}
                            for u in sorted(failures, key=lambda u: u["failed"]) if u["task"] in labels and u.get("key") is None]
        view["units"] = {f["task"]: {"status": "failed", "failed": f["failed"]} for f in view["failures"]}
    # a request with nothing shown yet still names its checkpoint
    checkpoint = planned.checkpoint
    for field, value in (("name", planned.model.name), ("size", planned.model.size), ("step", checkpoint.step),
                         ("checkpoint", {"model": checkpoint.model, "revision": checkpoint.revision}),
                         ("tokens_per_step", planned.model.tokens_per_step)):
        if view.get(field) is None:
            view[field] = value
    store.write_json_atomic(Path(planned.out_dir) / store.RESULTS_NAME, view)
