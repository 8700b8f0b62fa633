"""Evaluate one checkpoint: tasks → items → engine → records → metrics → store.

Results are written after every task (atomically), so work already done survives a crash in a
later task.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, companions, distributed, registry, scoring, store
from harness.checkpoints import parse_step
from harness.registry import BuildOptions, TaskSelection
from harness.requests import GenerationRequest, Item, LoglikelihoodRequest


@dataclass(frozen=True)
class EvalConfig:
    model: str
    tasks: tuple[str, ...]
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | str = "auto"
    data_dir: Path | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    prompt_type: str | None = None
    bigbench_mode: str = "auto"
    add_bos_token: bool | None = None
    prefix_cache: bool = True
    trust_remote_code: bool = False
    loss_corpus: Path | None = None
    loss_window: int = 2048
    loss_tokens: int = 1_000_000
    out: Path = Path("results")
    progress: bool = True
    task_files: tuple[tuple[str, str], ...] = ()  # --task-file NAME=PATH|HUB_ID
    data_revision: str | None = None  # hub datasets' revision (branch, tag or commit)

    def build_options(self) -> BuildOptions:
        return BuildOptions(
            data_dir=self.data_dir,
            limit=self.limit,
            num_fewshot=self.num_fewshot,
            prompt_type=self.prompt_type,
            bigbench_mode=self.bigbench_mode,
            task_files=self.task_files,
            hub_revision=self.data_revision,
        )


@dataclass
class TaskRows:
    """The items of one selected task, one list per table row."""

    selection: TaskSelection
    spec: registry.TaskSpec
    rows: dict[str, list[Item]] = field(default_factory=dict)


def build_task_rows(selections: list[TaskSelection], opts: BuildOptions) -> list[TaskRows]:
    """Render every item of every selected task (before any model is loaded, so data errors come first)."""
    built = []
    for selection in selections:
        spec = registry.with_overrides(selection.spec, opts)
        rows = registry.family_module(spec).build_rows(dataclasses.replace(selection, spec=spec), opts)
        built.append(TaskRows(selection, spec, rows))
    return built


def score_items(engine, spec: registry.TaskSpec, items: list[Item]) -> list[dict[str, Any]]:
    """Per-item records of ``items`` (one task), in item order: one engine call per request kind, so
    batches span rows."""
    # multiple-choice and single-continuation items alike are scored by log-likelihood
    mc = [item for item in items if item.choices]
    gen = [item for item in items if not item.choices]
    ll_requests = [
        LoglikelihoodRequest(context, choice)
        for item in mc
        for context, choice in zip(item.choice_contexts, item.choices)
    ]
    ll_results = engine.loglikelihood(ll_requests, desc=f"{spec.name} loglikelihood") if ll_requests else []
    generations = (
        # each with its gold continuation scored on the prompt's cache: the continuous companions
        engine.generate_scored(
            [
                GenerationRequest(
                    item.context, item.stop, item.max_new_tokens,
                    score=companions.gold_continuation(spec, item).score_requests(),
                )
                for item in gen
            ],
            desc=f"{spec.name} generate",
        )
        if gen
        else []
    )
    by_item: dict[int, Any] = {}
    cursor = 0
    for item in mc:
        by_item[id(item)] = ll_results[cursor : cursor + len(item.choices)]
        cursor += len(item.choices)
    for item, text in zip(gen, generations):
        by_item[id(item)] = text
    return [
        scoring.score_multiple_choice(item, by_item[id(item)])
        if item.is_multiple_choice
        else scoring.score_loglikelihood(item, by_item[id(item)][0])
        if item.is_loglikelihood
        # an item's own metric list: BIG-bench rows decide theirs per subtask
        else scoring.score_generation(spec, item, by_item[id(item)], scoring.row_metrics(spec, [item])[0], engine.tokenize)
        for item in items
    ]


def task_entries(built: TaskRows, records_by_row: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The results entries of one task from its per-item records: one per row, then, for a task of
    several rows, the parent row (item-weighted metrics and ``<metric>_macro``)."""
    parent = built.selection.label if len(built.rows) > 1 else None
    entries: dict[str, dict[str, Any]] = {}
    row_metrics: dict[str, dict] = {}
    for row_name, items in built.rows.items():
        metric_names = scoring.row_metrics(built.spec, items)[0]
        row_metrics[row_name] = scoring.aggregate_row(items, records_by_row[row_name], metric_names)
        entries[row_name] = _row_entry(built.spec, items, row_metrics[row_name], parent)
    if parent is not None:
        group = scoring.aggregate_group(row_metrics, {name: len(items) for name, items in built.rows.items()})
        entry = _row_entry(built.spec, [item for items in built.rows.values() for item in items], group, None)
        entry["subtasks"] = list(built.rows)
        entries[parent] = entry
    return entries


def split_by_row(built: TaskRows, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records in the order of ``built.rows``' items, cut back into rows."""
    out, cursor = {}, 0
    for row_name, items in built.rows.items():
        out[row_name] = records[cursor : cursor + len(items)]
        cursor += len(items)
    return out


def _row_entry(spec, items: list[Item], metrics: dict, parent: str | None) -> dict[str, Any]:
    row, primary = scoring.row_metrics(spec, items)
    # Where the exemplars came from, when a family draws them from somewhere other than fewshot_split
    # (RACE: other articles of the evaluated split).
    source = {"fewshot_source": items[0].meta["fewshot_source"]} if items and "fewshot_source" in items[0].meta else {}
    return {
        **source,
        "task_family": spec.name,
        "parent": parent,
        "output_type": items[0].output_type if items else "generate",
        "prompt_type": spec.prompt_type,
        "num_fewshot": spec.num_fewshot,
        "split": spec.split,
        "primary_metric": primary,
        "n": len(items),
        "metrics": metrics,
    }


def evaluate(config: EvalConfig, log=print) -> Path:
    """Run the whole evaluation of one checkpoint; returns the results file path.

    Under a multi-process launch (``accelerate launch``/``torchrun``) every process loads the model
    on its own device and scores its share of each task's items; the main process gathers the
    records, computes the loss and writes the results (the other processes write nothing).
    """
    from harness.engine import Engine
    from harness.loss import pretraining_loss
    from harness.models import load_model

    opts = config.build_options()
    selections = registry.resolve(list(config.tasks))
    task_rows = build_task_rows(selections, opts)
    ranks, device = distributed.join(config.device)

    model, tokenizer, info = load_model(
        config.model,
        revision=config.revision,
        dtype=config.dtype,
        device=device,
        trust_remote_code=config.trust_remote_code,
    )
    out_dir = Path(config.out) / store.checkpoint_dirname(config.model, config.revision)
    results: dict[str, Any] = {
        "schema": store.SCHEMA_VERSION,
        "harness_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": dataclasses.asdict(info),
        "step": parse_step(config.revision) if config.revision else parse_step(config.model),
        "loss": None,
        "config": _jsonable(dataclasses.asdict(config)),
        "command": " ".join(sys.argv),
        "tasks": {},
    }
    if ranks.world > 1:
        results["processes"] = ranks.world
    all_records = _keep_earlier_results(out_dir, results, task_rows, log) if ranks.is_main else []
    if config.loss_corpus is not None and ranks.is_main:
        loss = pretraining_loss(
            model, tokenizer, Path(config.loss_corpus),
            window=config.loss_window, max_tokens=config.loss_tokens, progress=config.progress,
        )
        results["loss"] = {**dataclasses.asdict(loss), "source": "corpus"}
        log(f"pre-training loss: {loss.loss:.4f} nats/token ({loss.bits_per_byte:.4f} bits/byte, {loss.tokens} tokens)")
        store.write_json_atomic(out_dir / store.RESULTS_NAME, results)

    engine = Engine(
        model, tokenizer, batch_size=config.batch_size, add_bos_token=config.add_bos_token,
        prefix_cache=config.prefix_cache, progress=config.progress and ranks.is_main,
    )
    results.setdefault("stats", {})
    for built in task_rows:
        before = (engine.tokens_forwarded, engine.tokens_naive, time.perf_counter())
        flat = [item for items in built.rows.values() for item in items]
        mine = distributed.my_indices(len(flat), ranks)
        records = score_items(engine, built.spec, [flat[i] for i in mine])
        records = distributed.gather_in_order(list(zip(mine, records)), ranks)
        stats = _stats(engine, *before)
        stats.update(distributed.sum_over_processes(
            {"tokens_forwarded": stats["tokens_forwarded"], "tokens_naive": stats["tokens_naive"]}, ranks
        ))
        if stats["tokens_naive"]:
            stats["forwarded_over_naive"] = stats["tokens_forwarded"] / stats["tokens_naive"]
        if not ranks.is_main:
            continue
        results["stats"][built.selection.label] = stats
        results["tasks"].update(task_entries(built, split_by_row(built, records)))
        all_records.extend(records)
        store.write_jsonl_atomic(out_dir / store.ITEMS_NAME, all_records)
        store.write_json_atomic(out_dir / store.RESULTS_NAME, results)
    if ranks.is_main:
        store.write_json_atomic(out_dir / store.RESULTS_NAME, results)
    return out_dir / store.RESULTS_NAME


def _stats(engine, forwarded_before: int, naive_before: int, started: float) -> dict[str, Any]:
    """Work done for one task: tokens the model really forwarded vs a naive per-request evaluation."""
    forwarded = engine.tokens_forwarded - forwarded_before
    naive = engine.tokens_naive - naive_before
    return {
        "tokens_forwarded": forwarded,
        "tokens_naive": naive,
        "forwarded_over_naive": forwarded / naive if naive else None,
        "seconds": round(time.perf_counter() - started, 3),
        "prefix_cache": engine.prefix_cache,
    }


def _same_checkpoint(a: dict, b: dict) -> bool:
    keys = ("model", "revision", "resolved_revision", "content_hash", "dtype")
    return all(a.get(k) == b.get(k) for k in keys)


def _keep_earlier_results(out_dir: Path, results: dict, task_rows: list[TaskRows], log) -> list[dict]:
    """A second ``harness eval`` of the same checkpoint into the same folder adds to its results:
    rows not re-run now (and the loss, if not recomputed) are kept with their item records."""
    path = out_dir / store.RESULTS_NAME
    if not path.exists():
        return []
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if not _same_checkpoint(earlier.get("model", {}), results["model"]):
        log(f"note: {path} held results of another checkpoint or dtype; they are replaced")
        return []
    rerun = {name for built in task_rows for name in built.rows} | {
        built.selection.label for built in task_rows if len(built.rows) > 1
    }
    results["tasks"].update({k: v for k, v in earlier.get("tasks", {}).items() if k not in rerun})
    results["stats"] = {k: v for k, v in earlier.get("stats", {}).items() if k not in rerun}
    if results["loss"] is None:
        results["loss"] = earlier.get("loss")
    items_path = out_dir / store.ITEMS_NAME
    records = store.read_jsonl(items_path) if items_path.exists() else []
    return [r for r in records if r["task"] not in rerun]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
