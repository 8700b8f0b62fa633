"""Items to per-item records and table entries: one engine call per request kind, then the
scorers, then each row's metrics (and a parent row over a task's subtasks).

    items ─► requests (log-likelihood; scored generation) ─► engine ─► records ─► row entries
"""

from __future__ import annotations

from typing import Any

from harness.items.rows import TaskRows
from harness.requests import GenerationRequest, Item, LoglikelihoodRequest
from harness.scoring import companions
from harness.scoring import records as scoring
from harness.spec import TaskSpec


def score_items(engine, spec: TaskSpec, items: list[Item]) -> list[dict[str, Any]]:
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


def score_lm_eval(engine, built: TaskRows, docs: list) -> list[dict[str, Any]]:
    """Per-item records of an lm-eval task's documents: its requests through the engine, then lm-eval's
    filters and ``process_results`` (``harness.interop.lm_eval_tasks``, imported only for such a task)."""
    from harness.interop.lm_eval_tasks import score_docs

    return score_docs(engine, built.lm_eval, docs)


def task_entries(built: TaskRows, records_by_row: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The results entries of one task from its per-item records: one per row, then, for a task of
    several rows, the parent row (item-weighted metrics and ``<metric>_macro``).  An lm-eval task's
    entries are lm-eval's aggregation of its records."""
    if built.lm_eval is not None:
        from harness.interop.lm_eval_tasks import task_entries as lm_eval_entries

        return lm_eval_entries(built, records_by_row)
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
