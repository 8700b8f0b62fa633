"""Every selected task's items, rendered before any model is loaded (so data errors come first),
one list per table row: what the runner scores and keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.items import registry
from harness.items.registry import BuildOptions, TaskSelection
from harness.requests import Item


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


def find_item(task: str, doc_id: int, opts: BuildOptions) -> Item:
    """The item ``doc_id`` of one row (``harness prompt``), rendered exactly as a run renders it."""
    from harness.errors import UserError

    (selection,) = registry.resolve([task])
    (built,) = build_task_rows([selection], dataclasses.replace(opts, limit=doc_id + 1))
    if len(built.rows) != 1:
        raise UserError(f"{task} has {len(built.rows)} rows; name one, e.g. {next(iter(built.rows))}")
    (items,) = built.rows.values()
    for item in items:
        if item.doc_id == doc_id:
            return item
    raise UserError(f"{task} has no item with doc_id {doc_id} (it has {len(items)} items from 0)")


def item_answers(item: Item) -> dict:
    """What ``harness prompt`` prints beside the prompt: the choices and gold, or the targets and stops."""
    info: dict = {"task": item.task, "doc_id": item.doc_id}
    if item.choices:  # multiple choice, or one continuation (gold null)
        info.update(choices=list(item.choices), gold=item.gold)
        if item.contexts:  # the prompt showed them joined; here each one exactly
            info.update(contexts=list(item.contexts))
    else:
        info.update(targets=list(item.targets), stop=list(item.stop), max_new_tokens=item.max_new_tokens)
        # how the answer is read from the generation (BIG-bench): the prompt alone does not show it
        info.update({name: value for name, value in (("stop_string", item.stop_string), ("output_regex", item.output_regex))
                     if value is not None})
    if item.metrics:
        info.update(metrics=list(item.metrics))
    return info
