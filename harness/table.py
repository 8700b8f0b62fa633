"""The tidy table: one row per (model, revision, step, task, metric) and configuration, read only
from the store.

A checkpoint folder may hold several configurations of one task (other shots, limit, prompt type,
task data), and even units of different weights (a checkpoint overwritten, two runs given one name):
every finished unit gets its own rows, with the columns that tell them apart (``num_fewshot``,
``limit``, ``prompt_type``, ``unit_key``, ``weights``) and ``latest`` (the unit is one the last run
into that folder asked for).  A task row carries the loss of a loss unit of the same weights only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import store
from harness.errors import UserError

COLUMNS = [
    "model", "size", "revision", "resolved_revision", "step", "tokens_seen", "params", "params_nonembed",
    "params_non_embedding", "compute", "dtype", "loss", "loss_bits_per_byte", "loss_source", "task", "parent",
    "metric", "value", "stderr", "n", "random_baseline", "higher_is_better", "primary", "status", "error",
    # what tells configurations apart, and which of them the last run asked for
    "num_fewshot", "limit", "prompt_type", "unit_key", "loss_unit_key", "weights", "latest",
]
STATUS_UNREADABLE = "unreadable"  # a unit (or results) file that cannot be read: counted as missing


def results_table(root: Path, tokens_per_step: int | None = None) -> pd.DataFrame:
    """Every checkpoint under ``root``: checkpoint folders rebuilt from their unit files (so shards
    that wrote one folder merge, and an interrupted or running sweep shows what finished), and
    imported ``results.json`` files.  Unreadable files are rows with status ``unreadable``.

    ``tokens_per_step`` (else each checkpoint's recorded one) turns the step into ``tokens_seen``;
    ``compute`` is 6·N·D with N the non-embedding parameters and D the tokens seen."""
    folders = store.find_checkpoint_dirs(Path(root))
    if not folders:
        raise UserError(f"no {store.RESULTS_NAME} under {root}; pass the --out folder of `harness eval` or `harness sweep`")
    rows = []
    for folder in folders:
        rows.extend(folder_rows(folder, tokens_per_step))
    return table_frame(rows)


def table_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("step", "tokens_seen", "params", "params_nonembed", "params_non_embedding", "n", "num_fewshot", "limit"):
        frame[column] = frame[column].astype("Int64")
    for column in ("compute", "loss", "loss_bits_per_byte", "value", "stderr", "random_baseline"):
        frame[column] = frame[column].astype("float64")
    frame["latest"] = frame["latest"].astype("boolean")
    order = ["model", "step", "revision", "task", "metric", "weights", "num_fewshot", "limit", "prompt_type", "unit_key"]
    return frame.sort_values(order, na_position="first", kind="stable").reset_index(drop=True)


def one_configuration(frame: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """One row per ``cell`` (e.g. model, step, task, metric): where a folder holds a cell under several
    configurations (other shots, limit, task data, weights; the table lists them all), the one its
    last run asked for (``latest``), else the one the table lists last.  What compare and the report
    read, so no curve or comparison mixes two configurations."""
    if "latest" not in frame.columns or not frame.duplicated(cell).any():
        return frame
    rank = frame["latest"].astype("boolean").fillna(False).astype(bool).to_numpy()
    ordered = frame.assign(_latest=rank).sort_values("_latest", kind="stable")
    return ordered.drop_duplicates(cell, keep="last").drop(columns="_latest").sort_index()


def view_table(results_path: Path) -> pd.DataFrame:
    """The rows of one results view (``results.json``: what one run asked for), as ``results_table``'s."""
    results = store.read_results_file(Path(results_path).parent) or {}
    return table_frame(checkpoint_rows(results, latest=True))


def _unreadable_row(folder: Path, path: Path, error: str) -> dict[str, Any]:
    return {"model": None, "task": None, "status": STATUS_UNREADABLE,
            "error": f"{path}: {error}; counted as missing (the next run redoes that unit)"}


def _config_columns(unit: dict[str, Any], latest_keys: set[str]) -> dict[str, Any]:
    record = unit.get("record") or {}
    spec = record.get("spec") or {}
    identity = record.get("checkpoint")
    return {
        "num_fewshot": spec.get("num_fewshot"), "limit": record.get("limit"), "prompt_type": spec.get("prompt_type"),
        "unit_key": unit.get("key"), "weights": _weights(identity), "latest": unit.get("key") in latest_keys,
    }


def _weights(identity: dict[str, Any] | None) -> str | None:
    """8 hex digits naming the weights a unit was computed on: the sha256 of its record's
    ``checkpoint`` (``units.CheckpointIdentity``) as canonical JSON."""
    if not identity:
        return None
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:8]


def _chosen_losses(units: list[dict[str, Any]], latest_keys: set[str]) -> dict[str | None, dict[str, Any]]:
    """Per weights identity, the loss unit its task rows carry: the one the last run asked for, else
    the most recently finished (``loss_unit_key`` says which).  A unit with no identity in its record
    (a logged loss written before losses were keyed by the weights, a hand-made file) joins only
    task units with none either: never the rows of known weights."""
    chosen: dict[str | None, dict[str, Any]] = {}
    losses = [u for u in units if u["status"] == "done" and u.get("kind") == "loss"]
    for unit in sorted(losses, key=lambda u: (u.get("key") in latest_keys, u.get("finished") or "")):
        chosen[store.identity_text(unit)] = unit
    return chosen


def folder_rows(folder: Path, tokens_per_step: int | None = None) -> list[dict[str, Any]]:
    """The rows of one checkpoint folder: every finished task unit (each its own configuration), every
    failure not since finished, every unreadable file; an imported folder's ``results.json``."""
    files = store.read_unit_files(folder)
    rows = [_unreadable_row(folder, path, error) for path, error in files.unreadable]
    if not files.units and not files.unreadable:
        results = store.read_results_file(folder)
        if results is not None:
            return checkpoint_rows(results, tokens_per_step)
        if (Path(folder) / store.RESULTS_NAME).exists():
            rows.append(_unreadable_row(folder, Path(folder) / store.RESULTS_NAME, "not a readable results file"))
        return rows  # only partial item logs: a unit still running, or killed; nothing finished yet
    latest_keys = set((store.latest_request(folder) or {}).values())
    losses = _chosen_losses(files.units, latest_keys)
    done_keys = {u.get("key") for u in files.units if u["status"] == "done"}
    for unit in sorted(files.units, key=lambda u: u.get("finished") or u.get("failed") or ""):
        if unit["status"] != "failed" and unit.get("kind") != "task":
            continue
        if unit["status"] == "failed" and unit.get("key") is not None and unit["key"] in done_keys:
            continue  # failed once, finished since
        loss = losses.get(store.identity_text(unit))
        view = {
            "name": unit.get("name"), "size": unit.get("size"), "step": unit.get("step"),
            "tokens_per_step": unit.get("tokens_per_step"), "checkpoint": unit.get("checkpoint"),
            "model": unit.get("model") or (loss or {}).get("model"),
            "loss": loss["loss"] if loss is not None else None,
            "tasks": {row: {**entry, **store.partial_note(unit)} for row, entry in unit.get("tasks", {}).items()}
            if unit["status"] != "failed" else {},
            "failures": [{"task": unit["task"], "error": unit.get("error")}] if unit["status"] == "failed" else [],
            "units": {unit["task"]: {"status": unit["status"], "partial": unit.get("partial")}},
        }
        extra = {**_config_columns(unit, latest_keys), "loss_unit_key": loss.get("key") if loss is not None else None}
        rows.extend({**row, **extra} for row in checkpoint_rows(view, tokens_per_step))
    return rows


def checkpoint_rows(results: dict[str, Any], tokens_per_step: int | None = None, latest: bool | None = None) -> list[dict[str, Any]]:
    """One row per (task, metric) of one checkpoint's results, plus one per failed unit.  A view
    written by a run carries each row's ``unit_key`` and ``config``: they fill the configuration columns."""
    model = results.get("model") or {}
    checkpoint = results.get("checkpoint") or {}
    loss = results.get("loss") or {}
    step = results.get("step")
    per_step = tokens_per_step or results.get("tokens_per_step")
    tokens_seen = step * per_step if step is not None and per_step else None
    nonembed = model.get("params_non_embedding")
    common = {
        "model": results.get("name") or model.get("model") or checkpoint.get("model"),
        "size": results.get("size"),
        "revision": model.get("revision", checkpoint.get("revision")),
        "resolved_revision": model.get("resolved_revision") or model.get("content_hash"),
        "step": step,
        "tokens_seen": tokens_seen,
        "params": model.get("params_total"),
        "params_nonembed": nonembed,
        "params_non_embedding": nonembed,
        # training FLOPs, Kaplan et al.'s 6·N·D
        "compute": 6.0 * nonembed * tokens_seen if nonembed is not None and tokens_seen is not None else None,
        "dtype": model.get("dtype"),
        "loss": loss.get("loss"),
        "loss_bits_per_byte": loss.get("bits_per_byte"),
        "loss_source": loss.get("source"),
    }
    rows = []
    for task, entry in results.get("tasks", {}).items():
        for metric, m in entry["metrics"].items():
            rows.append({
                **common,
                "task": task,
                "parent": entry.get("parent"),
                "metric": metric,
                "value": m["value"],
                "stderr": m["stderr"],
                "n": m["n"],
                "random_baseline": m["random_baseline"],
                "higher_is_better": m["higher_is_better"],
                "primary": metric == entry["primary_metric"],
                "status": entry.get("status", "done"),
                "error": _partial_error(entry.get("partial")),
                **_entry_config(entry, results, latest),
            })
    for failure in results.get("failures", []):
        rows.append({**common, "task": failure["task"], "status": "failed", "error": failure["error"], "latest": latest})
    for label, unit in (results.get("units") or {}).items():
        if unit.get("status") == "partial" and not (unit.get("partial") or {}).get("items_scored"):
            # cut before its first item: no metric to show, but the row says the unit is there, partial
            rows.append({**common, "task": label, "status": "partial", "error": _partial_error(unit["partial"]), "latest": latest})
    return rows


def _partial_error(partial: dict[str, Any] | None) -> str | None:
    if not partial:
        return None
    return (f"partial: {partial['items_scored']} of {partial['items_total']} items scored before the "
            f"{partial.get('reason', 'time budget')} ran out; the next run resumes the unit")


def _entry_config(entry: dict[str, Any], results: dict[str, Any], latest: bool | None) -> dict[str, Any]:
    """The configuration columns of a view's row, from the record its unit hashed (absent in imported results)."""
    config = entry.get("config") or {}
    spec = config.get("spec") or {}
    loss_unit = (results.get("units") or {}).get("loss") or {}
    return {
        "num_fewshot": spec.get("num_fewshot", entry.get("num_fewshot")), "limit": config.get("limit"),
        "prompt_type": spec.get("prompt_type", entry.get("prompt_type")), "unit_key": entry.get("unit_key"),
        "loss_unit_key": loss_unit.get("key"), "weights": _weights(config.get("checkpoint")), "latest": latest,
    }


def render(frame: pd.DataFrame, fmt: str, output: Path | None = None) -> str | None:
    """csv and markdown go to stdout (returned) unless ``output`` is given; parquet needs ``output``."""
    if fmt == "parquet":
        if output is None:
            raise UserError("--format parquet writes a binary file: pass --output FILE.parquet")
        frame.to_parquet(output, index=False)
        return None
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "markdown":
        text = markdown_table(frame)
    else:
        raise UserError(f"unknown --format {fmt!r}; use csv, parquet or markdown")
    if output is not None:
        Path(output).write_text(text, encoding="utf-8")
        return None
    return text


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_markdown(results_path: Path) -> str:
    """The end-of-run summary: each row's primary metric with its stderr and random baseline."""
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    loss = results.get("loss")
    checkpoint = results.get("checkpoint") or results.get("model") or {}
    head = f"model {checkpoint.get('model')}" + (f" @ {checkpoint['revision']}" if checkpoint.get("revision") else "")
    if loss and loss.get("loss") is not None:
        head += f"  loss {loss['loss']:.4f} nats/token ({loss.get('source')})"
    else:
        head += "  loss: not computed (pass --loss-corpus)" if not any(f["task"] == "loss" for f in results.get("failures", [])) else "  loss: failed"
    # shots and limit on screen: two runs of one task with other settings are told apart at a glance
    lines = [head, "", "| task | metric | value | stderr | n | random | shots | limit |", "|---|---|---|---|---|---|---|---|"]
    for task, entry in results["tasks"].items():
        m = entry["metrics"].get(entry["primary_metric"])
        if m is None:
            continue
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        config = entry.get("config") or {}
        shots = (config.get("spec") or {}).get("num_fewshot", entry.get("num_fewshot"))
        limit = config.get("limit")
        lines.append(f"| {task} | {entry['primary_metric']} | {fmt(m['value'])} | {fmt(m['stderr'])} | {m['n']} | "
                     f"{fmt(m['random_baseline'])} | {'' if shots is None else shots} | {'' if not config else 'all' if limit is None else limit} |")
    return "\n".join(lines)


def stats_markdown(results_path: Path) -> str:
    """``--stats``: per task, tokens the model forwarded against a naive per-request evaluation."""
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    lines = ["| task | tokens forwarded | naive tokens | ratio | seconds |", "|---|---|---|---|---|"]
    for task, s in results.get("stats", {}).items():
        ratio = "" if s["forwarded_over_naive"] is None else f"{s['forwarded_over_naive']:.3f}"
        lines.append(f"| {task} | {s['tokens_forwarded']} | {s['tokens_naive']} | {ratio} | {s['seconds']:.1f} |")
    loss = results.get("loss") or {}
    if loss.get("tokens"):
        # the loss scores each corpus token once; forwarded counts the context windows re-read
        forwarded = loss.get("tokens_forwarded", loss["tokens"])
        seconds = f"{loss['seconds']:.1f}" if loss.get("seconds") is not None else ""
        lines.append(f"| loss ({loss.get('source')}) | {forwarded} | {loss['tokens']} | {forwarded / loss['tokens']:.3f} | {seconds} |")
    return "\n".join(lines)


def with_task_loss(frame: pd.DataFrame, spec: str) -> pd.DataFrame:
    """The table with its loss replaced by ln(the value of TASK:METRIC) at the same (model, revision, step).

    Published evaluations carry no pre-training loss, but a perplexity is one in disguise: Pythia's
    files hold LAMBADA's (the perplexity of each passage's last word), and its log is a per-word
    cross-entropy in nats. It is a proxy, not the pre-training loss, so every row says where it came
    from (``loss_source`` ``task:TASK:METRIC``). A checkpoint without that value gets no loss.
    """
    task, _, metric = spec.rpartition(":")
    rows = frame[(frame["task"] == task) & (frame["metric"] == metric) & frame["value"].notna()]
    if not task or rows.empty:
        candidates = sorted({f"{t}:{m}" for t, m in zip(frame["task"], frame["metric"])
                             if isinstance(m, str) and "perplexity" in m})
        raise UserError(f"--loss-from-task {spec!r}: the results hold no values of that task and metric; "
                        f"use TASK:METRIC, e.g. {', '.join(candidates[:4]) or 'lambada_openai:perplexity'}")
    values = pd.to_numeric(rows["value"], errors="coerce").astype("float64")
    if not (values > 0).all():
        raise UserError(f"--loss-from-task {spec!r}: its values must be positive perplexities (the loss is their log)")
    keys = ["model", "revision", "step"]
    proxy = rows.assign(_proxy=np.log(values))[keys + ["_proxy"]].astype({"step": "float64"})
    proxy = proxy.drop_duplicates(keys, keep="last")
    out = frame.drop(columns=["loss", "loss_bits_per_byte", "loss_source"], errors="ignore")
    out = out.assign(_step=pd.to_numeric(out["step"], errors="coerce").astype("float64"))
    out = out.merge(proxy.rename(columns={"step": "_step"}), on=["model", "revision", "_step"], how="left")
    out["loss"] = out.pop("_proxy")
    out["loss_bits_per_byte"] = np.nan
    out["loss_source"] = np.where(out["loss"].notna(), f"task:{task}:{metric}", None)
    return out[list(dict.fromkeys([*frame.columns, "loss", "loss_bits_per_byte", "loss_source"]))]
