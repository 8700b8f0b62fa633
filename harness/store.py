"""The one on-disk layout, for a sweep of many checkpoints and an eval of one alike: per checkpoint
folder, one file per finished unit, its per-item log, failure records, and a merged results view.

A crash mid-write never leaves a truncated file: whole files are written to a temp file in the same
folder, fsynced, then ``os.replace``d over the target (atomic on POSIX and Windows); item logs are
appended and flushed line by line, and a torn last line is dropped on reading.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

RESULTS_NAME = "results.json"
SCHEMA_VERSION = 1


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def checkpoint_dirname(model: str, revision: str | None, identity: str | None = None) -> str:
    """A readable folder name for one checkpoint's results: ``<model>@<revision>`` made filesystem-safe,
    then ``-<identity>`` (``units.identity_digest``) when given: paths that end alike
    (``a/run/checkpoint-60``, ``b/run/checkpoint-60``) name different weights, and must not share a folder."""
    name = model.rstrip("/\\")
    # a local path: keep its last two components (run name / checkpoint name); a hub id: org__name
    name = "_".join(Path(name).parts[-2:]) if Path(name).exists() else name.replace("/", "__")
    label = f"{name}@{revision}" if revision else name
    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "_", label).strip("_") or "model"
    return f"{slug}-{identity}" if identity else slug


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
#   <checkpoint dir>/results.json              a merged view of the above, rewritten after each unit;
#                                              `harness table` rebuilds it from the unit files

UNITS_DIR = "units"
FAILED_PREFIX = "failed-"


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


def read_partial_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of an append-only log; a last line cut short by a kill is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last write
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def read_unit_files(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """Every finished-unit and failure file of one checkpoint folder (partial writes never exist:
    they are written atomically)."""
    folder = Path(checkpoint_dir) / UNITS_DIR
    if not folder.is_dir():
        return []
    units = []
    for path in sorted(folder.glob("*.json")):
        with open(path, encoding="utf-8") as handle:
            units.append(json.load(handle))
    return units


def merged_results(checkpoint_dir: Path) -> dict[str, Any] | None:
    """One checkpoint's results view built from its unit files (None when it has none).

    Per task label the latest finished unit wins (a rerun with other settings supersedes older
    units); a failure shows only for labels with no finished unit."""
    units = read_unit_files(checkpoint_dir)
    if not units:
        return None
    done: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for unit in sorted(units, key=lambda u: u.get("finished") or u.get("failed") or ""):
        (done if unit["status"] == "done" else failed)[unit["task"]] = unit
    latest = max(units, key=lambda u: u.get("finished") or u.get("failed") or "")
    with_model = [u for u in done.values() if u.get("model")]
    processes = [u["processes"] for u in done.values() if u.get("processes")]
    view: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": latest.get("finished") or latest.get("failed"),
        "name": latest.get("name"),
        "size": latest.get("size"),
        "checkpoint": latest.get("checkpoint"),
        "model": max(with_model, key=lambda u: u["finished"])["model"] if with_model else None,
        "step": latest.get("step"),
        "tokens_per_step": latest.get("tokens_per_step"),
        # of the latest unit; every unit file keeps its own
        "provenance": latest.get("provenance"),
        "command": latest.get("command"),
        "identity": None,  # the weights' identity (units.CheckpointIdentity), from a unit that used them
        "loss": done["loss"]["loss"] if "loss" in done else None,
        "tasks": {},
        "stats": {},
        "units": {},
        "failures": [],
    }
    if processes:
        view["processes"] = max(processes)
    for label, unit in done.items():
        view["units"][label] = {"key": unit["key"], "status": "done", "finished": unit["finished"]}
        if unit["kind"] == "task":
            view["units"][label]["items"] = f"{UNITS_DIR}/{unit['items']}"
            # each row with the key and the record (the settings) of the unit that produced it
            view["tasks"].update(
                {row: {**entry, "unit_key": unit["key"], "config": unit.get("record")} for row, entry in unit["tasks"].items()}
            )
            view["stats"][label] = unit["stats"]
        if view["identity"] is None and (unit.get("record") or {}).get("checkpoint"):
            view["identity"] = unit["record"]["checkpoint"]
    for label, unit in failed.items():
        if label not in done:
            view["units"][label] = {"status": "failed", "failed": unit["failed"]}
            view["failures"].append({"task": label, "error": unit["error"], "failed": unit["failed"]})
    return view


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
