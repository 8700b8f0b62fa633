"""The tidy table: one row per (model, revision, step, task, metric), read only from the store."""

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
]


def results_table(root: Path, tokens_per_step: int | None = None) -> pd.DataFrame:
    """Every checkpoint under ``root``: ``harness eval`` and imported results files, and sweep
    checkpoint folders rebuilt from their unit files (so shards that wrote one folder merge).

    ``tokens_per_step`` (else each checkpoint's recorded one) turns the step into ``tokens_seen``;
    ``compute`` is 6·N·D with N the non-embedding parameters and D the tokens seen."""
    folders = store.find_checkpoint_dirs(Path(root))
    if not folders:
        raise UserError(f"no {store.RESULTS_NAME} under {root}; pass the --out folder of `harness eval` or `harness sweep`")
    rows = []
    for folder in folders:
        results = store.merged_results(folder)
        if results is None:
            with open(folder / store.RESULTS_NAME, encoding="utf-8") as handle:
                results = json.load(handle)
        rows.extend(checkpoint_rows(results, tokens_per_step))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("step", "tokens_seen", "params", "params_nonembed", "params_non_embedding", "n"):
        frame[column] = frame[column].astype("Int64")
    for column in ("compute", "loss", "loss_bits_per_byte", "value", "stderr", "random_baseline"):
        frame[column] = frame[column].astype("float64")
    return frame.sort_values(["model", "step", "revision", "task", "metric"], na_position="first", kind="stable").reset_index(drop=True)


def checkpoint_rows(results: dict[str, Any], tokens_per_step: int | None = None) -> list[dict[str, Any]]:
    """One row per (task, metric) of one checkpoint's results, plus one per failed unit."""
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
                "status": "done",
                "error": None,
            })
    for failure in results.get("failures", []):
        rows.append({**common, "task": failure["task"], "status": "failed", "error": failure["error"]})
    return rows


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
    lines = [head, "", "| task | metric | value | stderr | n | random |", "|---|---|---|---|---|---|"]
    for task, entry in results["tasks"].items():
        m = entry["metrics"].get(entry["primary_metric"])
        if m is None:
            continue
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {task} | {entry['primary_metric']} | {fmt(m['value'])} | {fmt(m['stderr'])} | {m['n']} | {fmt(m['random_baseline'])} |")
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
