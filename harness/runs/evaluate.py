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

from harness import __version__, store
from harness.scoring import companions, records as scoring
from harness.runs import distributed, units
from harness.items import registry
from harness.runs.checkpoints import Checkpoint, parse_step
from harness.errors import check_run_values
from harness.items.registry import BuildOptions, TaskSelection
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

    def __post_init__(self) -> None:
        check_run_values(
            limit=self.limit, num_fewshot=self.num_fewshot, batch_size=self.batch_size,
            loss_window=self.loss_window, loss_tokens=self.loss_tokens,
        )

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
                    until_settled=scoring.answer_settled(spec, item),
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


# A process that hit non-finite outputs sends this in place of its records, so every process still
# takes part in the gather and all of them see the failure.
_FAILED = "__failed__"


@dataclass
class CheckpointPlan:
    """What is decided before any model is loaded: where one checkpoint's results go, each unit's
    key, and which units an earlier run already finished there."""

    out_dir: Path
    identity: units.CheckpointIdentity
    run_config: dict[str, Any]
    task_rows: list[TaskRows]
    keys: dict[str, str]  # task label -> unit key
    loss_key: str | None  # None: no corpus loss asked for
    earlier: dict[str, Any]  # this checkpoint's results from an earlier run ({} if none)
    done: set[str]  # task labels finished under the same key

    @property
    def loss_done(self) -> bool:
        return self.loss_key is not None and (self.earlier.get("loss") or {}).get("key") == self.loss_key

    @property
    def pending(self) -> list[TaskRows]:
        return [built for built in self.task_rows if built.selection.label not in self.done]

    @property
    def finished(self) -> bool:
        return not self.pending and (self.loss_key is None or self.loss_done)

    @property
    def results_path(self) -> Path:
        return self.out_dir / store.RESULTS_NAME


def plan_checkpoint(
    config: EvalConfig, task_rows: list[TaskRows], identity: "units.CheckpointIdentity", out_dir: Path | None = None
) -> CheckpointPlan:
    """Keys of a checkpoint's units and which are already in its results folder (by default the one
    ``harness eval`` uses: ``<out>/<slug>-<identity digest>``)."""
    opts = config.build_options()
    if out_dir is None:
        out_dir = Path(config.out) / store.checkpoint_dirname(config.model, config.revision, units.identity_digest(identity))
    keys = {
        built.selection.label: units.unit_key(units.task_unit_record(
            identity, built.selection.label, built.spec, units.items_sha256(built.rows), opts, config.add_bos_token
        ))
        for built in task_rows
    }
    loss_key = _loss_key(config, identity) if config.loss_corpus is not None else None
    earlier = _earlier_results(out_dir, identity)
    done = {label for label, key in keys.items() if earlier.get("units", {}).get(label, {}).get("key") == key}
    return CheckpointPlan(out_dir, identity, _jsonable(dataclasses.asdict(config)), task_rows, keys, loss_key, earlier, done)


def evaluate(config: EvalConfig, log=print) -> Path:
    """Run the whole evaluation of one checkpoint; returns the results file path.

    Each task (and the loss) is keyed like a sweep unit (``harness.runs.units``): a task whose rows are
    already in this checkpoint's results under the same key is not run again, and when nothing is
    left to run no model is loaded.  A task whose model outputs are NaN or infinite is recorded under
    ``failures`` (the others still run); the caller exits non-zero for them.

    Under a multi-process launch (``accelerate launch``/``torchrun``) every process loads the model
    on its own device and scores its share of each task's items; the main process gathers the
    records, computes the loss and writes the results (the other processes write nothing).
    """
    from harness.engine.models import load_model

    task_rows = build_task_rows(registry.resolve(list(config.tasks)), config.build_options())
    ranks, device = distributed.join(config.device)
    from harness.engine.models import dtype_name

    identity = units.checkpoint_identity(Checkpoint(config.model, config.revision, None), dtype_name(config.dtype, device))
    plan = plan_checkpoint(config, task_rows, identity)
    if plan.done and ranks.is_main:
        log(f"already in {plan.out_dir}: {', '.join(sorted(plan.done))} (same checkpoint, data and settings); not run again")
    if plan.finished:
        return plan.results_path  # everything asked for is there: no model is loaded

    model, tokenizer, info = load_model(
        config.model, revision=config.revision, dtype=config.dtype, device=device,
        trust_remote_code=config.trust_remote_code, content_hash=identity.content_hash,
    )
    step = parse_step(config.revision) if config.revision else parse_step(config.model)
    run_plan(config, plan, model, tokenizer, info, ranks, log, header={"step": step})
    return plan.results_path


# Fields of a results file that say where a checkpoint sits in a run (written by a sweep or by
# harness.EvalCallback); a later `harness eval` of the same checkpoint into the same folder keeps them.
_RUN_FIELDS = ("name", "size", "step", "tokens_per_step", "tokens_seen")


def run_plan(
    config: EvalConfig, plan: CheckpointPlan, model, tokenizer, info, ranks: distributed.Ranks, log=print, *,
    header: dict[str, Any] | None = None, given_loss: dict[str, Any] | None = None,
    encode_cache: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """Score the plan's pending units with a loaded ``model`` and write the results (main process).

    ``header``: run fields (``step``, ``name``, ``tokens_per_step``...) for the results file;
    ``given_loss``: a loss measured elsewhere (the trainer's), recorded when no corpus loss is asked
    for; ``encode_cache``: prompt encodings to share across calls (``Engine``)."""
    from harness.engine import Engine
    from harness.errors import NonFiniteOutput
    from harness.engine.loss import pretraining_loss
    from harness.engine.models import run_provenance

    out_dir, earlier, run_config, keys = plan.out_dir, plan.earlier, plan.run_config, plan.keys
    pending = plan.pending
    results: dict[str, Any] = {
        "schema": store.SCHEMA_VERSION,
        "harness_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **{name: earlier[name] for name in _RUN_FIELDS if earlier.get(name) is not None},
        "model": dataclasses.asdict(info),
        "identity": dataclasses.asdict(plan.identity),
        **{name: value for name, value in (header or {}).items() if value is not None},
        "loss": earlier.get("loss"),
        # the latest run's; each task row and the loss carry the config that produced them
        "config": run_config,
        "command": " ".join(sys.argv),
        "provenance": run_provenance(info.device, info.dtype),
        "tasks": {},
        "stats": {},
        "units": {},
        "failures": [],
    }
    if ranks.world > 1:
        results["processes"] = ranks.world
    all_records = _keep_earlier_results(out_dir, earlier, results, pending) if ranks.is_main else []
    write = (lambda: store.write_json_atomic(out_dir / store.RESULTS_NAME, results)) if ranks.is_main else (lambda: None)
    if plan.loss_key is not None and not plan.loss_done and ranks.is_main:
        results["failures"] = [f for f in results["failures"] if f["task"] != units.LOSS_UNIT]
        try:
            loss = pretraining_loss(
                model, tokenizer, Path(config.loss_corpus),
                window=config.loss_window, max_tokens=config.loss_tokens, progress=config.progress,
            )
        except NonFiniteOutput as error:
            results["loss"] = None
            results["failures"].append({"task": units.LOSS_UNIT, "error": f"{type(error).__name__}: {error}"})
            log(f"FAILED loss: {error}")
        else:
            results["loss"] = {**dataclasses.asdict(loss), "source": "corpus", "key": plan.loss_key, "config": run_config}
            log(f"pre-training loss: {loss.loss:.4f} nats/token ({loss.bits_per_byte:.4f} bits/byte, {loss.tokens} tokens)")
        write()
    elif plan.loss_key is None and given_loss is not None:
        results["loss"] = given_loss

    engine = Engine(
        model, tokenizer, batch_size=config.batch_size, add_bos_token=config.add_bos_token,
        prefix_cache=config.prefix_cache, progress=config.progress and ranks.is_main, encode_cache=encode_cache,
    )
    for built in pending:
        label = built.selection.label
        before = (engine.tokens_forwarded, engine.tokens_naive, time.perf_counter())
        flat = [item for items in built.rows.values() for item in items]
        mine = distributed.my_indices(len(flat), ranks)
        try:
            scored = list(zip(mine, score_items(engine, built.spec, [flat[i] for i in mine])))
        except NonFiniteOutput as error:
            scored = [(-1, {_FAILED: f"{type(error).__name__}: {error}"})]
        records = distributed.gather_in_order(scored, ranks)
        stats = _stats(engine, *before)
        stats.update(distributed.sum_over_processes(
            {"tokens_forwarded": stats["tokens_forwarded"], "tokens_naive": stats["tokens_naive"]}, ranks
        ))
        if stats["tokens_naive"]:
            stats["forwarded_over_naive"] = stats["tokens_forwarded"] / stats["tokens_naive"]
        if not ranks.is_main:
            continue
        errors = [r[_FAILED] for r in records if _FAILED in r]
        if errors:
            results["failures"].append({"task": label, "error": errors[0]})
            log(f"FAILED {label}: {errors[0]}")
            write()
            continue
        entries = task_entries(built, split_by_row(built, records))
        for entry in entries.values():
            entry.update(unit_key=keys[label], config=run_config)
        results["tasks"].update(entries)
        results["stats"][label] = stats
        results["units"][label] = {"key": keys[label], "rows": list(entries)}
        all_records.extend(records)
        store.write_jsonl_atomic(out_dir / store.ITEMS_NAME, all_records)
        write()
    write()
    return results


def _loss_key(config: EvalConfig, identity: "units.CheckpointIdentity") -> str:
    from harness.engine.models import file_sha256

    return units.unit_key(units.LossUnitRecord(
        checkpoint=identity, checkpoint_ref=Checkpoint(config.model, config.revision, None).label, step=None,
        source="corpus", input_sha256=file_sha256(Path(config.loss_corpus)), window=config.loss_window,
        tokens=config.loss_tokens,
    ))


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


def _earlier_results(out_dir: Path, identity: "units.CheckpointIdentity") -> dict[str, Any]:
    """This checkpoint's results from an earlier ``harness eval`` into the same folder ({} if none).

    The folder name carries a hash of the identity, so another checkpoint never lands here; a file
    without a matching identity (written before identities were recorded) is not trusted."""
    path = out_dir / store.RESULTS_NAME
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    return earlier if earlier.get("identity") == dataclasses.asdict(identity) else {}


def _keep_earlier_results(out_dir: Path, earlier: dict, results: dict, pending: list[TaskRows]) -> list[dict]:
    """A second ``harness eval`` of the same checkpoint into the same folder adds to its results:
    tasks not run now keep their rows (each with the config that produced it), units and records."""
    if not earlier:
        return []
    rerun = {built.selection.label for built in pending}
    rerun_rows = {name for built in pending for name in built.rows} | rerun
    results["units"] = {k: v for k, v in earlier.get("units", {}).items() if k not in rerun}
    results["tasks"] = {k: v for k, v in earlier.get("tasks", {}).items() if k not in rerun_rows}
    results["stats"] = {k: v for k, v in earlier.get("stats", {}).items() if k not in rerun}
    results["failures"] = [f for f in earlier.get("failures", []) if f["task"] not in rerun]
    items_path = out_dir / store.ITEMS_NAME
    records = store.read_jsonl(items_path) if items_path.exists() else []
    return [r for r in records if r["task"] not in rerun_rows]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
