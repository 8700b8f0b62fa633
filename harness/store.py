"""The one on-disk layout, for a sweep of many checkpoints and an eval of one alike: per checkpoint
folder, one file per finished unit, its per-item log, failure records, and a merged results view.

A crash mid-write never leaves a truncated file: whole files are written to a temp file in the same
folder, fsynced, then ``os.replace``d over the target (atomic on POSIX and Windows); item logs are
appended and flushed line by line, and a line that does not parse (torn by a kill) is skipped on
reading.  Still, a file damaged afterwards never stops a reader: an unreadable unit file counts as
missing (``read_unit_files``), a bad item-log line is skipped and counted (``read_item_log``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

RESULTS_NAME = "results.json"
SCHEMA_VERSION = 1


def _umask() -> int:
    """The process's umask, read without changing it where the OS says (``/proc/self/status``): setting
    and restoring it (the portable way) would let a file created by another thread meanwhile get mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes it 0600; the file gets the mode open() would give (0644 under umask 022)
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(Path(path), lambda h: h.write(text))


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(Path(path), lambda h: json.dump(obj, h, ensure_ascii=False, indent=2, allow_nan=True))


def write_jsonl_atomic(path: Path, records: Iterable[dict[str, Any]]) -> None:
    def write(handle):
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=True))
            handle.write("\n")

    _write_atomic(Path(path), write)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def checkpoint_dirname(model: str, revision: str | None) -> str:
    """A readable folder name for one imported checkpoint's results: ``<model>@<revision>`` made
    filesystem-safe."""
    name = model.rstrip("/\\")
    # a local path: keep its last two components (run name / checkpoint name); a hub id: org__name
    name = "_".join(Path(name).parts[-2:]) if Path(name).exists() else name.replace("/", "__")
    label = f"{name}@{revision}" if revision else name
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", label).strip("_") or "model"


def find_results(root: Path) -> list[Path]:
    """Every results file under ``root`` (a results file itself, or a folder searched recursively)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob(RESULTS_NAME))


# ---------------------------------------------------------------------- units
#
# Each unit of work has its own files, so shards sharing an output folder never write the same file:
#   <checkpoint dir>/units/<key>.json          a finished unit (task rows or loss), written atomically
#   <checkpoint dir>/units/<key>.items.jsonl   its per-item records, appended and flushed as they are
#                                              scored (a rerun resumes after the last one)
#   <checkpoint dir>/units/failed-<id>.json    a unit that failed, with its error (removed on success)
#   <checkpoint dir>/results.json              the view of the last run's request (the units its keys
#                                              name), rewritten after each unit; `harness table` reads
#                                              the unit files themselves, every configuration

UNITS_DIR = "units"
FAILED_PREFIX = "failed-"
# "partial": a task unit a time budget cut (evaluation during training): its rows are the items it
# scored, marked partial; it is never taken for a finished unit, so the next run resumes it
UNIT_STATUSES = ("done", "partial", "failed")


def unit_path(checkpoint_dir: Path, key: str) -> Path:
    return Path(checkpoint_dir) / UNITS_DIR / f"{key}.json"


def unit_items_path(checkpoint_dir: Path, key: str) -> Path:
    return Path(checkpoint_dir) / UNITS_DIR / f"{key}.items.jsonl"


def failure_path(checkpoint_dir: Path, plan_hash: str) -> Path:
    return Path(checkpoint_dir) / UNITS_DIR / f"{FAILED_PREFIX}{plan_hash}.json"


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records and push them to disk before returning: what was scored survives a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_item_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The valid records of an append-only item log and the number of lines that are not (a line torn
    by a kill, bytes damaged on disk): a bad line is skipped and counted, never the end of the log,
    so the valid lines after it are kept."""
    path = Path(path)
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
    return records, bad


def read_partial_jsonl(path: Path) -> list[dict[str, Any]]:
    """The valid records of an append-only log (``read_item_log`` without the count of bad lines)."""
    return read_item_log(path)[0]


@dataclass(frozen=True)
class UnitFiles:
    """What one checkpoint folder's ``units/*.json`` hold: the unit and failure records that could be
    read, and the files that could not (path, error), which count as missing: the next run redoes them."""

    units: list[dict[str, Any]]
    unreadable: list[tuple[Path, str]]


def read_unit_file(path: Path) -> dict[str, Any]:
    """One unit or failure file; ValueError when it is not a unit record (truncated, damaged, foreign)."""
    with open(path, encoding="utf-8", errors="strict") as handle:
        unit = json.load(handle)
    if not isinstance(unit, dict) or unit.get("status") not in UNIT_STATUSES or not unit.get("task"):
        raise ValueError("not a unit record (no status and task)")
    return unit


def read_unit_files(checkpoint_dir: Path) -> UnitFiles:
    """Every finished-unit and failure file of one checkpoint folder.  They are written atomically,
    but a disk, a copy or a hand can still damage one: such a file is listed in ``unreadable`` and
    counts as missing, it never stops the reading of the others."""
    folder = Path(checkpoint_dir) / UNITS_DIR
    if not folder.is_dir():
        return UnitFiles([], [])
    units, unreadable = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            units.append(read_unit_file(path))
        except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            unreadable.append((path, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")))
    return UnitFiles(units, unreadable)


def identity_text(unit: dict[str, Any]) -> str | None:
    """The weights a unit was computed on (its record's ``checkpoint``), as canonical JSON: units of
    one checkpoint folder are joined into one row only when this is equal."""
    checkpoint = (unit.get("record") or {}).get("checkpoint")
    return json.dumps(checkpoint, sort_keys=True) if checkpoint else None


def other_checkpoint(checkpoint_dir: Path, checkpoint: dict[str, Any], identity: dict[str, Any]) -> str | None:
    """The checkpoint (path or hub id@revision) whose units this folder holds when it is neither
    ``checkpoint`` nor the same weights (``identity``): two runs that end alike given one model name.
    None when the folder is free, holds this checkpoint (its weights since replaced included), or
    these weights found at another path (a moved run)."""
    mine = json.dumps(identity, sort_keys=True)
    here = (checkpoint.get("model"), checkpoint.get("revision"))
    for unit in read_unit_files(checkpoint_dir).units:
        where = unit.get("checkpoint") or {}
        theirs = identity_text(unit)
        if theirs is not None and theirs != mine and (where.get("model"), where.get("revision")) != here:
            return f"{where.get('model')}@{where['revision']}" if where.get("revision") else str(where.get("model"))
    return None


def _when(unit: dict[str, Any]) -> str:
    return unit.get("finished") or unit.get("failed") or ""


def read_results_file(checkpoint_dir: Path) -> dict[str, Any] | None:
    """A folder's ``results.json`` (None when it is missing or unreadable)."""
    path = Path(checkpoint_dir) / RESULTS_NAME
    try:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def latest_request(checkpoint_dir: Path) -> dict[str, str] | None:
    """The unit keys (label -> key) of the last run that wrote this folder's view, from its
    ``results.json``; None when there is none (an older layout, a damaged file)."""
    request = (read_results_file(checkpoint_dir) or {}).get("request")
    if isinstance(request, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in request.items()):
        return request
    return None


def _fallback_request(units: list[dict[str, Any]]) -> dict[str, str]:
    """When no run recorded its request: the finished units of the weights used last, the latest
    per label (never units of two different weights in one view)."""
    done = sorted((u for u in units if u["status"] == "done" and u.get("key")), key=_when)
    if not done:
        return {}
    identity = identity_text(done[-1])
    return {u["task"]: u["key"] for u in done if identity_text(u) == identity}


def merged_results(checkpoint_dir: Path, keys: dict[str, str] | None = None) -> dict[str, Any] | None:
    """One checkpoint's results view: the units a request names (``keys``: label -> unit key), never
    simply the latest ones, so a rerun with other settings, or of other weights, never shows another
    run's numbers.  ``keys`` None: the request of the last run that wrote the folder (``latest_request``).
    A label of the request with no finished unit shows its failure, if one was recorded; one with
    neither is absent (not run yet, or interrupted).  None when the folder has no readable unit file
    and no request."""
    files = read_unit_files(checkpoint_dir)
    if keys is None:
        keys = latest_request(checkpoint_dir)
        if keys is None:
            if not files.units:
                return None
            keys = _fallback_request(files.units)
    by_key = {u["key"]: u for u in files.units if u["status"] in ("done", "partial") and u.get("key")}
    done = {label: by_key[key] for label, key in keys.items() if key in by_key}
    failed: dict[str, dict] = {}
    for unit in sorted((u for u in files.units if u["status"] == "failed"), key=_when):
        label = unit["task"]
        # a failure of this request's unit (its key, or no key: the checkpoint failed before keys were made)
        if label in keys and label not in done and unit.get("key") in (None, keys[label]):
            failed[label] = unit
    if not done and not failed and not files.units:
        return None
    shown = list(done.values()) or list(failed.values())
    latest = max(shown, key=_when) if shown else {}
    with_model = [u for u in done.values() if u.get("model")]
    processes = [u["processes"] for u in done.values() if u.get("processes")]
    view: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": _when(latest) or None,
        "name": latest.get("name"),
        "size": latest.get("size"),
        "checkpoint": latest.get("checkpoint"),
        "model": max(with_model, key=_when)["model"] if with_model else None,
        "step": latest.get("step"),
        "tokens_per_step": latest.get("tokens_per_step"),
        # of the latest unit; every unit file keeps its own
        "provenance": latest.get("provenance"),
        "command": latest.get("command"),
        "identity": None,  # the weights' identity (units.CheckpointIdentity), from a unit that used them
        "loss": done["loss"]["loss"] if "loss" in done else None,
        "request": dict(keys),  # label -> unit key: what this view was assembled from
        "tasks": {},
        "stats": {},
        "units": {},
        "failures": [],
    }
    if processes:
        view["processes"] = max(processes)
    for label, unit in done.items():
        view["units"][label] = {"key": unit["key"], "status": unit["status"], "finished": unit["finished"]}
        if unit.get("partial"):
            view["units"][label]["partial"] = unit["partial"]
        if unit["kind"] == "task":
            view["units"][label]["items"] = f"{UNITS_DIR}/{unit['items']}"
            # each row with the key and the record (the settings) of the unit that produced it
            view["tasks"].update(
                {row: {**entry, "unit_key": unit["key"], "config": unit.get("record"), **partial_note(unit)}
                 for row, entry in unit["tasks"].items()}
            )
            view["stats"][label] = unit["stats"]
        if view["identity"] is None and (unit.get("record") or {}).get("checkpoint"):
            view["identity"] = unit["record"]["checkpoint"]
    for label, unit in failed.items():
        view["units"][label] = {"status": "failed", "failed": unit["failed"]}
        view["failures"].append({"task": label, "error": unit["error"], "failed": unit["failed"]})
    return view


def partial_note(unit: dict[str, Any]) -> dict[str, Any]:
    """What a row of a unit cut by a time budget carries: its status and how far the unit got."""
    return {"status": "partial", "partial": unit["partial"]} if unit["status"] == "partial" else {}


def find_checkpoint_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a results file or sweep units (``root`` may be one results file)."""
    root = Path(root)
    if root.is_file():
        return [root.parent]
    found = {p.parent for p in root.rglob(RESULTS_NAME)} | {p.parent for p in root.rglob(UNITS_DIR) if p.is_dir()}
    return sorted(found)


def checkpoint_items(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """The per-item records of a checkpoint's finished task units (those its results view lists),
    in unit then item order."""
    view = merged_results(checkpoint_dir) or {}
    records: list[dict[str, Any]] = []
    for unit in view.get("units", {}).values():
        if "items" in unit:
            records.extend(read_partial_jsonl(Path(checkpoint_dir) / unit["items"]))
    return records
