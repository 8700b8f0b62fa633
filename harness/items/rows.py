"""Every selected task's items, rendered before any model is loaded (so data errors come first),
one list per table row: what the runner scores and keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.items import registry
from harness.items.registry import TaskSelection
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


@dataclass
class TaskRows:
    """The items of one selected task, one list per table row."""

    selection: TaskSelection
    spec: TaskSpec
    rows: dict[str, list[Item]] = field(default_factory=dict)
    # an lm-eval task (harness.interop.lm_eval_tasks.LmEvalTasks): its rows hold LmEvalDoc values, which
    # lm-eval's own objects score; None for our own tasks
    lm_eval: Any = None


def build_task_rows(selections: list[TaskSelection], opts: BuildOptions) -> list[TaskRows]:
    """Render every item of every selected task (before any model is loaded, so data errors come first)."""
    built = []
    for selection in selections:
        spec = registry.with_overrides(selection.spec, opts)
        rows = registry.family_module(spec).build_rows(dataclasses.replace(selection, spec=spec), opts)
        if opts.max_new_tokens is not None:
            rows = {row: [capped(item, spec, opts.max_new_tokens) for item in items] for row, items in rows.items()}
        built.append(TaskRows(selection, spec, rows))
    return built


# Extractors that read the answer from the start of the generation (BIG-bench's postprocess_output,
# a stripped whole answer): a model that answers writes a target and then a stop, so a cap that leaves
# room for both never changes how it is scored.  GSM8K's answers come after a chain of thought: no cap.
ANSWER_FIRST_EXTRACTORS = frozenset({"bigbench_postprocess", "strip"})
# tokens beyond the longest target and stop: leading whitespace, a tokenizer that splits oddly
AUTO_CAP_MARGIN = 8


def capped(item: Item, spec: TaskSpec, cap: int | str) -> Item:
    """``item`` with at most ``cap`` generated tokens (never more than its own ``max_new_tokens``).

    ``"auto"``: the UTF-8 bytes of its longest target and longest stop, plus ``AUTO_CAP_MARGIN``, for
    tasks whose extractor is in ``ANSWER_FIRST_EXTRACTORS`` and items whose answer ends at a stop, a
    stop string or a regex match (others keep their own).  A token covers
    at least one byte (byte-level BPE, SentencePiece with byte fallback) and a character at least one
    byte, so a model that writes a target and then a stop writes it whole within the cap, in tokens
    and in BIG-bench's ``max_length`` characters (the same field) alike: its answer and score are
    unchanged, while an untrained model's babble stops early.  Multiple-choice items pass unchanged.
    The item's fields, hence its unit key, record the cap."""
    if item.choices or item.max_new_tokens <= 0:
        return item
    if cap == "auto":
        # the answer must end somewhere short of the text: at a stop (the decode ends there), a stop
        # string or a regex (BIG-bench reads only up to them); with none, the whole text is the answer
        if spec.extractor not in ANSWER_FIRST_EXTRACTORS or not item.targets or not (
            item.stop or item.stop_string or item.output_regex
        ):
            return item
        stops = (*item.stop, item.stop_string or "")
        limit = max(len(t.encode("utf-8")) for t in item.targets) + max(len(s.encode("utf-8")) for s in stops)
        limit += AUTO_CAP_MARGIN
    else:
        limit = int(cap)
    return item if limit >= item.max_new_tokens else dataclasses.replace(item, max_new_tokens=limit)


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
