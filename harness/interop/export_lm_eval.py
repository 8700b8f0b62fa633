"""``harness export RESULTS_DIR --format lm-eval --out OUT``: our results as lm-evaluation-harness 0.4's
results files, so tools that read lm-eval's output (``results[task]["acc,none"]``, ``n-shot``,
``configs``, ``samples_<task>_<date>.jsonl``) read ours, and ``harness import-lm-eval OUT`` reads them
back into the same table.

One file per checkpoint folder of the store, laid out as lm-eval lays out one run, under the same
relative path as in RESULTS_DIR (our ``<model>/<checkpoint>``):

    OUT/<model>/<checkpoint>/results_<date>.json
    OUT/<model>/<checkpoint>/samples_<task>_<date>.jsonl     (--samples: one per scored (sub)task)

What a checkpoint folder exports is its results view (``store.merged_results``: the units the last run
into the folder asked for), the configuration the report shows.  lm-eval's layout has no place for the
loss, the weights' identity, our metric names, random baselines or the unit records (shots, limit,
prompt, task data): they go into one top-level field, ``emergence_harness``, which lm-eval's readers
never look at, so the loss travels with the numbers and the importer restores the table exactly.
The numbers themselves (value, stderr) are only in lm-eval's own fields: a re-import reads them there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__, store
from harness.errors import UserError, check_input_dir, check_out_dir
from harness.interop.lm_eval_results import EXPORT_KEY, EXPORT_SCHEMA, lm_eval_metric_key

FORMATS = ("lm-eval",)
MODEL_NAME = "emergence-harness"  # lm-eval's config.model: the backend that produced the numbers
# lm-eval's output types; our "generate" is its generate_until (the same request type)
_OUTPUT_TYPES = {"generate": "generate_until"}
# the loss's units, named in the file: the number alone would be ambiguous (nats or bits, per token or byte)
LOSS_UNITS = {"loss": "nats/token", "bits_per_byte": "bits/byte"}


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: Any  # a dict (results JSON) or a list of records (samples JSONL)


def lm_eval_date(timestamp: str | None) -> str:
    """lm-eval's file date (``datetime.now().isoformat()`` with ``:`` as ``-``), from the time the
    checkpoint's last unit finished rather than now: a re-export of unchanged results writes the same
    file names, and lm-eval's "latest file" ordering (a string sort) still follows the runs."""
    when = dt.datetime.fromisoformat(timestamp) if timestamp else dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds").replace(":", "-")


def sample_file_task(task: str) -> str:
    """A task name as it can stand in a file name: lm-eval's own ``sanitize_task_name`` (our
    ``mmlu:anatomy`` and ``bigbench:x/y`` hold ``:`` and ``/``, which a file name must not)."""
    return re.sub(r"\W", "_", task)


def _stderr(value: Any) -> Any:
    # lm-eval writes "N/A" where it has no stderr, and its readers (make_table) expect that string
    return "N/A" if value is None else value


def _loss_unit(folder: Path, view: dict[str, Any]) -> dict[str, Any] | None:
    """The loss unit the table puts beside these rows (``analysis.table``: the one the last run asked
    for, else the latest finished loss of the same weights)."""
    files = store.read_unit_files(folder)
    key = view["request"].get("loss")
    losses = [u for u in files.units if u["status"] == "done" and u.get("kind") == "loss"]
    asked = [u for u in losses if u.get("key") == key]
    if asked:
        return asked[0]
    weights = json.dumps(view["identity"], sort_keys=True) if view.get("identity") else None
    same = sorted((u for u in losses if store.identity_text(u) == weights), key=lambda u: u.get("finished") or "")
    return same[-1] if same else None


def _config(row: str, entry: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """lm-eval's per-task ``configs`` entry, from the unit record the row was computed under."""
    spec = (record or {}).get("spec") or {}
    return {
        "task": row,
        "dataset_path": spec.get("hub_path"),
        "dataset_name": spec.get("hub_name"),
        "test_split": entry.get("split"),
        "fewshot_split": spec.get("fewshot_split"),
        "description": spec.get("description", ""),
        "num_fewshot": entry.get("num_fewshot"),
        "output_type": _OUTPUT_TYPES.get(entry.get("output_type"), entry.get("output_type")),
        # one entry per lm-eval metric: gsm8k's strict and flexible exact matches are one metric, two filters
        "metric_list": list({base: {"metric": base, "higher_is_better": v["higher_is_better"]} for base, v in
                             ((lm_eval_metric_key(m).partition(",")[0], v) for m, v in entry["metrics"].items())}.values()),
        "repeats": 1,
        # lm-eval keeps a task's version here; ours is the scoring code's version, and the unit key pins the rest
        "metadata": {"version": (record or {}).get("scoring_version"), "prompt": spec.get("prompt"),
                     "prompt_type": entry.get("prompt_type"), "limit": (record or {}).get("limit"),
                     "unit_key": entry.get("unit_key")},
    }


def lm_eval_sample(record: dict[str, Any]) -> dict[str, Any]:
    """One item record as a line of lm-eval's ``samples_<task>_<date>.jsonl``, after its
    ``save_results_samples`` (arguments as ``gen_args_i``/``arg_j``, responses as strings).  We keep
    the prompt's hash, not its text or the document: those fields are null; ``harness prompt`` prints
    the prompt.  The whole record rides along under ``emergence_harness``, so nothing of ours is lost."""
    if "choice_logprobs" in record:  # multiple choice, or one continuation (LAMBADA): loglikelihood requests
        pairs = list(zip(record["choice_logprobs"], record.get("choice_is_greedy", [None] * len(record["choices"]))))
        arguments = {f"gen_args_{i}": {"arg_0": None, "arg_1": choice} for i, choice in enumerate(record["choices"])}
        resps = [[[str(lp), str(greedy)]] for lp, greedy in pairs]
        filtered = [[str(lp), str(greedy)] for lp, greedy in pairs]
        target = record.get("gold", 0)
    else:  # generate_until: one request, its text
        arguments = {"gen_args_0": {"arg_0": None}}
        resps = [[str(record.get("generation"))]]
        filtered = [str(record.get("generation"))]
        target = record.get("target")
    target = str(target)
    metrics = record.get("metrics", {})
    return {
        "doc_id": record["doc_id"],
        "doc": None,
        "target": target,
        "arguments": arguments,
        "resps": resps,
        "filtered_resps": filtered,
        "filter": "none",
        # the names of the values that follow, as lm-eval lists its process_results keys (ours: gsm8k's two
        # exact matches are two names here, where lm-eval has one name under two filters)
        "metrics": list(metrics),
        "doc_hash": None,
        # lm-eval's prompt_hash is the sha256 of the context, as our prompt_sha256: equal for the same prompt
        "prompt_hash": record.get("prompt_sha256"),
        "target_hash": hashlib.sha256(target.encode("utf-8")).hexdigest(),
        **metrics,
        EXPORT_KEY: record,
    }


def checkpoint_document(folder: Path, view: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint's results view as one lm-eval results file (the ``emergence_harness`` field included)."""
    rows = view["tasks"]
    children: dict[str, list[str]] = {}
    for row, entry in rows.items():
        if entry.get("parent"):
            children.setdefault(entry["parent"], []).append(row)
    results, records, hib, block_rows = {}, {}, {}, {}
    for row, entry in rows.items():
        values: dict[str, Any] = {"alias": row, "name": row, "sample_len": entry.get("n")}
        block_metrics = {}
        for metric, m in entry["metrics"].items():
            key = lm_eval_metric_key(metric)
            base, _, filter_name = key.partition(",")
            values[key] = m["value"]
            values[f"{base}_stderr,{filter_name}"] = _stderr(m["stderr"])
            hib.setdefault(row, {})[base] = m["higher_is_better"]
            block_metrics[metric] = {"key": key, "n": m["n"], "random_baseline": m["random_baseline"],
                                     "higher_is_better": m["higher_is_better"]}
        counts = {lm_eval_metric_key(metric): m["n"] for metric, m in entry["metrics"].items()}
        if any(n != entry.get("n") for n in counts.values()):
            values["sample_count"] = counts  # lm-eval's per-metric count, where one differs from the row's
        results[row] = values
        # a unit's record (shots, limit, prompt, task data, weights) once per unit, not once per row
        if entry.get("unit_key") and entry.get("config") is not None:
            records[entry["unit_key"]] = entry["config"]
        block_rows[row] = {**{k: v for k, v in entry.items() if k not in ("metrics", "config")}, "metrics": block_metrics}
    leaves = [row for row in rows if row not in children]
    loss = _loss_unit(folder, view)
    model = view.get("model") or {}
    checkpoint = view.get("checkpoint") or {}
    limits = {(entry.get("config") or {}).get("limit") for entry in rows.values()}
    model_args = {"pretrained": checkpoint.get("model"), **({"revision": checkpoint["revision"]} if checkpoint.get("revision") else {}),
                  **({"dtype": model["dtype"]} if model.get("dtype") else {})}
    seconds = sum(s.get("seconds") or 0.0 for s in (view.get("stats") or {}).values())
    return {
        "results": results,
        "groups": {row: results[row] for row in rows if row in children},
        "group_subtasks": {parent: subtasks for parent, subtasks in children.items()},
        "configs": {row: _config(row, rows[row], rows[row].get("config")) for row in leaves},
        "versions": {row: (rows[row].get("config") or {}).get("scoring_version") for row in rows},
        "n-shot": {row: entry.get("num_fewshot") for row, entry in rows.items()},
        "higher_is_better": hib,
        # "original" is the split's size in lm-eval; we record only the items scored, so both are n
        "n-samples": {row: {"original": rows[row].get("n"), "effective": rows[row].get("n")} for row in leaves},
        "config": {
            "model": MODEL_NAME, "model_args": model_args, "model_num_parameters": model.get("params_total"),
            "model_dtype": model.get("dtype"), "model_revision": checkpoint.get("revision") or "main",
            "model_sha": model.get("resolved_revision") or model.get("content_hash") or "",
            "device": model.get("device"), "limit": next(iter(limits)) if len(limits) == 1 else None,
        },
        "git_hash": (view.get("provenance") or {}).get("git_commit"),
        "date": dt.datetime.fromisoformat(view["created"]).timestamp() if view.get("created") else None,
        "transformers_version": (view.get("provenance") or {}).get("transformers"),
        "task_hashes": {},  # lm-eval hashes each sample's document, which our item logs do not keep
        "model_source": MODEL_NAME,
        "model_name": view.get("name") or checkpoint.get("model"),
        # lm-eval's sanitize_model_name, which names its output folder
        "model_name_sanitized": re.sub(r"[\"<>:/|\\?*\[\]]+", "__", str(view.get("name") or checkpoint.get("model"))),
        "total_evaluation_time_seconds": str(seconds),
        EXPORT_KEY: {
            "schema": EXPORT_SCHEMA,
            "harness_version": __version__,
            "name": view.get("name"), "size": view.get("size"), "step": view.get("step"),
            "tokens_per_step": view.get("tokens_per_step"),
            "checkpoint": checkpoint, "model": model, "identity": view.get("identity"),
            "loss": loss["loss"] if loss else None, "loss_units": LOSS_UNITS,
            "loss_unit_key": loss.get("key") if loss else None,
            "provenance": view.get("provenance"), "command": view.get("command"),
            "failures": view.get("failures", []),
            "units": records,  # unit key -> its record
            "tasks": block_rows,
        },
    }


def samples_files(folder: Path, view: dict[str, Any], directory: Path, date: str) -> list[PlannedFile]:
    """``samples_<task>_<date>.jsonl`` of every scored (sub)task, from the item logs of the view's units."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for unit in view["units"].values():
        if "items" in unit:
            for record in store.read_partial_jsonl(Path(folder) / unit["items"]):
                by_task.setdefault(record.get("task"), []).append(record)
    planned, names = [], {}
    for task, records in sorted(by_task.items(), key=lambda kv: str(kv[0])):
        if task not in view["tasks"]:
            continue  # a record of no row of the view (a unit cut mid-write): nothing lm-eval could pair it with
        name = sample_file_task(task)
        if name in names:
            raise UserError(f"{folder}: tasks {names[name]!r} and {task!r} would share the samples file "
                            f"samples_{name}_{date}.jsonl; export them from different folders")
        names[name] = task
        records.sort(key=lambda r: r.get("doc_id", 0))
        planned.append(PlannedFile(directory / f"samples_{name}_{date}.jsonl", [lm_eval_sample(r) for r in records]))
    return planned


def _relative(folder: Path, root: Path) -> Path:
    """The checkpoint folder's path under RESULTS_DIR (``find_checkpoint_dirs`` finds it below ``root``
    as given), or its own name when RESULTS_DIR is the checkpoint folder itself."""
    relative = Path(folder).relative_to(root)
    return relative if relative.parts else Path(Path(folder).resolve().name)


def _stale_exports(directory: Path, keep: set[Path]) -> list[Path]:
    """Files an earlier export wrote into ``directory`` that this one replaces: its results files (they
    carry our field) and their samples files (same date).  Anything else there is left alone."""
    stale = []
    for path in sorted(directory.glob("results_*.json")) if directory.is_dir() else []:
        if path in keep:
            continue
        try:
            ours = EXPORT_KEY in json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            ours = False
        if ours:
            date = path.stem.removeprefix("results_")
            stale += [path, *(p for p in directory.glob(f"samples_*_{date}.jsonl") if p not in keep)]
    return stale


def export_lm_eval(root: Path, out: Path, samples: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Write one lm-eval results file per checkpoint folder under ``root`` (and its samples files with
    ``samples``) into ``out``; return the results files written."""
    root, out = Path(root), Path(out)
    check_input_dir(root, "RESULTS_DIR", "the --out folder of harness eval or sweep")
    planned: list[PlannedFile] = []
    results_paths: list[Path] = []
    for folder in store.find_checkpoint_dirs(root):
        view = store.merged_results(folder)
        if view is None or not view["tasks"]:
            log(f"note: skipped {folder}: no finished task unit (imported results and folders with only a loss are not exported)")
            continue
        done = {u.get("key") for u in store.read_unit_files(folder).units if u["status"] == "done" and u.get("kind") == "task"}
        others = done - set(view["request"].values())
        if others:
            log(f"note: {folder}: {len(others)} task unit(s) of other configurations left out; only the last run's are exported")
        directory = out / _relative(folder, root)
        if Path(out).resolve() not in directory.resolve().parents:  # belt and braces: never outside --out
            raise UserError(f"{folder} would export outside --out {out}; pass RESULTS_DIR as a folder above it")
        date = lm_eval_date(view.get("created"))
        results = PlannedFile(directory / f"results_{date}.json", checkpoint_document(folder, view))
        planned.append(results)
        results_paths.append(results.path)
        if samples:
            planned += samples_files(folder, view, directory, date)
    if not planned:
        raise UserError(f"no finished results of harness eval or sweep under {root}; pass their --out folder")
    check_out_dir(out)  # after every check of the inputs: a bad input leaves no folder behind
    keep = {p.path for p in planned}
    for directory in sorted({p.path.parent for p in planned}):
        for path in _stale_exports(directory, keep):
            path.unlink()
    for planned_file in planned:
        if isinstance(planned_file.content, dict):
            store.write_json_atomic(planned_file.path, planned_file.content)
        else:
            store.write_jsonl_atomic(planned_file.path, planned_file.content)
    log(f"exported {len(results_paths)} checkpoint(s) as lm-eval results files under {out}")
    return results_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="RESULTS_DIR", help="the --out folder of harness eval or sweep (searched recursively)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="lm-eval: lm-evaluation-harness 0.4's results_<date>.json")
    parser.add_argument("--out", type=Path, required=True, help="where the files go: OUT/<model>/<checkpoint>/results_<date>.json")
    parser.add_argument("--samples", action="store_true", help="also write samples_<task>_<date>.jsonl, one line per scored item")


def run(args: argparse.Namespace) -> int:
    notes: list[str] = []  # printed once the export succeeds; a failed one is its one error line
    for path in export_lm_eval(args.path, args.out, samples=args.samples, log=notes.append):
        print(path)
    for note in notes:
        print(note, file=sys.stderr)
    return 0
