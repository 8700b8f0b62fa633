"""BIG-bench JSON tasks: ``DATA_DIR/bigbench/benchmark_tasks/<task>[/<subtask>]/task.json`` → items.

Only task.json files are read: the hub copies of BIG-bench lack the per-task prompt fields.

Prompts follow BIG-bench 1.0.0 (``bigbench/api/json_task.py``).  ``default_format_fn`` turns an
example into

    example_input_prefix + input [+ choice_prefix + choice_prefix.join(choices)] + example_output_prefix

where the choices are appended when the example has ``target_scores`` and the task leaves
``append_choices_to_input`` true — whether the row is then scored generatively or as multiple
choice, since BIG-bench feeds one input to both.  ``make_nshot_dataset`` then builds

    task_prefix + separator.join(shot_input + shot_answer for each shot) + separator + item_input

(0 shots: ``task_prefix + item_input``).  Fields a task.json leaves out take BIG-bench's defaults,
kept in ``prompts/bigbench.yaml``.  Like ``load_and_process_json``, examples whose ``json.dumps``
string was already seen are dropped (the first occurrence stays); ``doc_id`` remains the
example's 0-based position in the file's ``examples`` list.

Where we deliberately differ from BIG-bench, which draws from seeded numpy RNG streams, so that a
prompt depends on the file alone:

- shots: the first k distinct examples of the (sub)task other than the item itself, so every item
  from position k on shares one few-shot header; BIG-bench draws k at random for each item;
- a shot's answer: its first target (a target_scores-only example: its highest-scoring choice,
  first on ties, as default_format_fn picks); BIG-bench draws one of the targets at random;
- appended choices: in task.json order; BIG-bench sorts them and applies a seeded permutation.

A multiple-choice item scores the bare choice strings after the prompt, as BIG-bench's
``cond_log_prob`` does: nothing is inserted between prompt and choice.  Where the prompt ends in
whitespace (logical_deduction's example_output_prefix " "), lm-evaluation-harness's
loglikelihood boundary rule — trailing whitespace of the context moves to the front of the
continuation — makes the scored text " The black book is the leftmost.".

A generative item's answer is read from the generation as BIG-bench's ``postprocess_output`` reads
it (``harness.scoring.extraction.BigbenchAnswer``): the first ``max_new_tokens`` characters (BIG-bench uses
its one ``max_length`` for tokens and characters), cut after the task's ``stop_string`` when that
occurs past position 0, then the first match of ``output_regex``; exact_match compares that answer
with the targets as they are.  Generation is not stopped at the example separator or a newline, as
in BIG-bench; the engine stops it early only where more tokens cannot change the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.errors import UserError
from harness.items import fewshot
from harness.items.registry import TaskSelection, load_prompt, with_overrides
from harness.items.sources import require_files
from harness.requests import Item
from harness.spec import MULTIPLE_CHOICE_METRICS, ROUGE_METRICS, BuildOptions, TaskSpec

MODES = ("auto", "gen", "mc")
# BIG-bench metric names that we report, under our names (exact_match is always reported).
_OUR_GENERATIVE_METRICS = {"bleu": "bleu", "numeric_match_with_0_1_relative_error": "numeric_match"}
# json_task.GENERATIVE_METRICS: a task listing one of these is scored generatively when it can be.
_BIGBENCH_GENERATIVE_METRICS = {
    "bleu",
    "bleurt",
    "exact_str_match",
    "case_insensitive_str_match",
    "sequence_f1",
    "numeric_match_with_0_1_relative_error",
    "rouge",
}

_NO_DATA_DIR = (
    "BIG-bench is read from task.json files: pass --data-dir pointing at a folder with "
    "bigbench/benchmark_tasks/<task>/task.json (the hub copies lack the prompt fields)"
)
BIGBENCH_LAYOUT = (
    "--data-dir DIR expects bigbench/benchmark_tasks/<task>[/<subtask>]/task.json "
    "(BIG-bench's own files; the hub copies lack the prompt fields)"
)


@dataclass(frozen=True)
class TaskFormat:
    """A (sub)task's prompt fields: its task.json values over BIG-bench's defaults."""

    task_prefix: str
    input_prefix: str
    output_prefix: str
    choice_prefix: str
    append_choices: bool
    separator: str
    stop_string: str | None
    output_regex: str | None  # BIG-bench's default regex when the task sets neither this nor stop_string


def task_format(task_json: dict[str, Any], prompt: dict[str, Any]) -> TaskFormat:
    """Read the prompt fields of ``task_json``; ``prompt`` is ``prompts/bigbench.yaml``."""
    fields = {**prompt["defaults"], **task_json}
    stop_string, output_regex = fields["stop_string"], fields["output_regex"]
    if stop_string is None and output_regex is None:
        output_regex = prompt["default_output_regex"]
    if output_regex:  # "" is no regex at all, as in postprocess_output
        _check_output_regex(output_regex)
    return TaskFormat(
        task_prefix=str(fields["task_prefix"]),  # BIG-bench applies str() to this one field only
        input_prefix=fields["example_input_prefix"],
        output_prefix=fields["example_output_prefix"],
        choice_prefix=fields["choice_prefix"],
        append_choices=bool(fields["append_choices_to_input"]),
        separator=fields["few_shot_example_separator"],
        stop_string=stop_string,
        output_regex=output_regex,
    )


def _check_output_regex(output_regex: str) -> None:
    """BIG-bench reads ``re.findall``'s first item, so a regex needs to compile and have at most one group."""
    try:
        groups = re.compile(output_regex).groups
    except re.error as err:
        raise UserError(f"output_regex {output_regex!r} is not a Python regex ({err}); fix the task.json") from err
    if groups > 1:
        raise UserError(
            f"output_regex {output_regex!r} has {groups} groups, BIG-bench allows one; make the others (?:...) in the task.json"
        )


def format_input(example: dict[str, Any], fmt: TaskFormat) -> str:
    """One example as BIG-bench's default_format_fn writes it, up to where the answer goes."""
    text = example["input"]
    if "target_scores" in example and fmt.append_choices:
        text += fmt.choice_prefix + fmt.choice_prefix.join(example["target_scores"])
    return fmt.input_prefix + text + fmt.output_prefix


def gold_index(target_scores: dict[str, float]) -> int:
    """The highest-scoring choice, first on ties."""
    scores = list(target_scores.values())
    return scores.index(max(scores))


def shot_answer(example: dict[str, Any]) -> str:
    if "target" in example:
        target = example["target"]
        return target[0] if isinstance(target, list) else target
    return list(example["target_scores"])[gold_index(example["target_scores"])]


def fewshot_prompt(example: dict[str, Any], shots: Iterable[dict[str, Any]], fmt: TaskFormat) -> str:
    item_input = format_input(example, fmt)
    shot_texts = [format_input(shot, fmt) + shot_answer(shot) for shot in shots]
    if not shot_texts:
        return fmt.task_prefix + item_input
    return fmt.task_prefix + fmt.separator.join(shot_texts) + fmt.separator + item_input


def distinct_examples(examples: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(doc_id, example) for each example whose ``json.dumps`` was not seen before, in file order.

    The same key BIG-bench's load_and_process_json dedupes on: the whole example, key order included.
    """
    seen: set[str] = set()
    kept = []
    for doc_id, example in enumerate(examples):
        key = json.dumps(example)
        if key not in seen:
            seen.add(key)
            kept.append((doc_id, example))
    return kept


def row_mode(task_json: dict[str, Any], examples: list[dict[str, Any]], requested: str, where: str) -> str:
    """"gen" or "mc" for one row; a requested mode the examples cannot support falls back to the other."""
    has_target = all("target" in x for x in examples)
    has_scores = all("target_scores" in x for x in examples)
    if requested == "mc" and has_scores:
        return "mc"
    if requested == "gen" and has_target:
        return "gen"
    generative = bool(set(task_json.get("metrics", [])) & _BIGBENCH_GENERATIVE_METRICS)
    if has_target and (generative or not has_scores):
        return "gen"
    if has_scores:
        return "mc"
    raise UserError(f"{where}: every example needs a 'target' or every example a 'target_scores'; fix the task.json")


def row_metrics(task_json: dict[str, Any], mode: str) -> tuple[list[str], str]:
    """The metrics a row reports and its primary metric."""
    if mode == "mc":
        return list(MULTIPLE_CHOICE_METRICS), "acc"
    listed = task_json.get("metrics", [])
    metrics = ["exact_match"] + [ours for theirs, ours in _OUR_GENERATIVE_METRICS.items() if theirs in listed]
    if "rouge" in listed:  # one BIG-bench metric, three numbers
        metrics += list(ROUGE_METRICS)
    primary = _OUR_GENERATIVE_METRICS.get(task_json.get("preferred_score"), "exact_match")
    if primary not in metrics:
        metrics.append(primary)
    return metrics, primary


def build_row(
    row: str,
    task_json: dict[str, Any],
    fmt: TaskFormat,
    num_shots: int,
    mode: str,
    limit: int | None,
    max_new_tokens: int,
) -> list[Item]:
    distinct = distinct_examples(task_json["examples"])
    if len(distinct) < num_shots + 1:
        raise UserError(
            f"{row} has {len(distinct)} distinct examples, too few for {num_shots} shots; pass a smaller --num-fewshot"
        )
    examples = [example for _, example in distinct]
    metrics, primary = row_metrics(task_json, mode)
    items = []
    for position, (doc_id, example) in enumerate(distinct[:limit] if limit is not None else distinct):
        # the first k distinct examples other than the item itself (BIG-bench draws k at random)
        shot_ids = fewshot.first_k(len(examples), num_shots, leave_out=lambda j: j == position)
        context = fewshot_prompt(example, [examples[j] for j in shot_ids], fmt)
        meta = {"mode": mode, "fewshot_doc_ids": [distinct[j][0] for j in shot_ids]}
        if mode == "mc":
            scores = example["target_scores"]
            items.append(
                Item(task=row, doc_id=doc_id, context=context, choices=tuple(scores), gold=gold_index(scores),
                     metrics=tuple(metrics), primary_metric=primary, meta=meta)
            )
        else:
            target = example["target"]
            items.append(
                Item(
                    task=row,
                    doc_id=doc_id,
                    context=context,
                    targets=tuple(target) if isinstance(target, list) else (target,),
                    # BIG-bench generates to max_length without stopping at anything; the engine
                    # stops earlier only once the answer cannot change (extraction.BigbenchAnswer)
                    max_new_tokens=max_new_tokens,
                    stop_string=fmt.stop_string,
                    output_regex=fmt.output_regex,
                    metrics=tuple(metrics),
                    primary_metric=primary,
                    meta=meta,
                )
            )
    return items


def _tasks_root(opts: BuildOptions, selected: str | None = None) -> Path:
    if opts.data_dir is None:
        raise UserError(_NO_DATA_DIR)
    root = Path(opts.data_dir) / "bigbench" / "benchmark_tasks"
    if not root.is_dir():
        if selected is not None:  # name the file the user asked for
            require_files([root / selected.partition("/")[0] / "task.json"], BIGBENCH_LAYOUT)
        raise UserError(f"missing BIG-bench folder {root}; {BIGBENCH_LAYOUT}")
    return root


def _task_names(folder: Path) -> list[str]:
    """Sub-folders holding a task.json, sorted (BIG-bench sorts its subtask paths too)."""
    return sorted(p.name for p in folder.iterdir() if (p / "task.json").is_file())


def _read_task_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); replace it with BIG-bench's task.json") from err


def _row_sources(root: Path, selected: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(row path "task" or "task/subtask", its task.json) for every row the selection covers."""
    tasks = _task_names(root)
    if selected is None:
        chosen = tasks
    else:
        task, _, subtask = selected.partition("/")
        if task not in tasks:
            raise UserError(f"unknown BIG-bench task {task!r}; tasks under {root}: {', '.join(tasks) or 'none'}")
        if subtask:
            subtasks_here = _task_names(root / task)
            if subtask not in subtasks_here:
                listing = ", ".join(subtasks_here) if subtasks_here else "none (select it as bigbench:" + task + ")"
                raise UserError(f"unknown subtask {subtask!r} of BIG-bench task {task}; its subtasks: {listing}")
            return [(selected, _read_task_json(root / task / subtask / "task.json"))]
        chosen = [task]
    sources = []
    for task in chosen:
        task_json = _read_task_json(root / task / "task.json")
        if "examples" in task_json:
            sources.append((task, task_json))
            continue
        subtask_names = _task_names(root / task)
        if not subtask_names:
            raise UserError(f"{root / task / 'task.json'} has neither examples nor subtask folders; fix the data dir")
        for subtask in subtask_names:
            sources.append((f"{task}/{subtask}", _read_task_json(root / task / subtask / "task.json")))
    return sources


def _num_shots(spec: TaskSpec, opts: BuildOptions) -> int:
    spec = with_overrides(spec, opts)
    if spec.prompt_type == "cot":
        raise UserError("BIG-bench tasks have no chain-of-thought prompts; use --prompt fewshot or --prompt zeroshot")
    num_shots = spec.num_fewshot
    if num_shots < 0:
        raise UserError(f"--num-fewshot must be 0 or more, got {num_shots}")
    return num_shots


def subtasks(spec: TaskSpec, opts: BuildOptions) -> list[str]:
    """The BIG-bench tasks present under the data dir (a parent task stands for all its subtasks)."""
    return _task_names(_tasks_root(opts))


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """One row per task with examples, one per subtask of a parent task; no subtask = every task."""
    if opts.bigbench_mode not in MODES:
        raise UserError(f"unknown BIG-bench mode {opts.bigbench_mode!r}; use one of {', '.join(MODES)}")
    spec = selection.spec
    num_shots = _num_shots(spec, opts)
    root = _tasks_root(opts, selection.subtask)
    prompt = load_prompt(spec.prompt)
    rows: dict[str, list[Item]] = {}
    for path, task_json in _row_sources(root, selection.subtask):
        row = f"{spec.name}:{path}"
        examples = task_json.get("examples", [])
        if any(not isinstance(x, dict) or "input" not in x for x in examples):
            raise UserError(f"{row}: every example of {path}/task.json needs an 'input'; fix the task.json")
        mode = row_mode(task_json, examples, opts.bigbench_mode, row)
        rows[row] = build_row(
            row, task_json, task_format(task_json, prompt), num_shots, mode, opts.limit, spec.max_new_tokens
        )
    return rows
