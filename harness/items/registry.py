"""Task specs are data: each ``tasks/*.yaml`` declares one task family entry; this module reads them
and resolves CLI names (``mmlu``, ``mmlu:anatomy``, ``gsm8k:fewshot``, ``bigbench:arithmetic/2_digit_addition``)."""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Callable

import yaml

from harness.errors import UserError
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


@dataclass(frozen=True)
class TaskSelection:
    spec: TaskSpec
    subtask: str | None = None  # "anatomy", "modified_arithmetic/three_digit_addition_control"

    @property
    def label(self) -> str:
        return f"{self.spec.name}:{self.subtask}" if self.subtask else self.spec.name


def _load_yaml(text: str) -> dict[str, Any]:
    return yaml.safe_load(text) or {}


@lru_cache(maxsize=None)
def all_specs() -> dict[str, TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    for entry in sorted(resources.files("harness.tasks").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        for raw in _load_yaml(entry.read_text(encoding="utf-8")).get("tasks", []):
            raw = dict(raw)
            raw["metrics"] = tuple(raw["metrics"])
            spec = TaskSpec(**raw)
            specs[spec.name] = spec
    return specs


def load_prompt(name: str) -> dict[str, Any]:
    """The prompt template file ``prompts/<name>.yaml`` (templates and exemplars)."""
    path = resources.files("harness.prompts") / f"{name}.yaml"
    return _load_yaml(path.read_text(encoding="utf-8"))


def family_module(spec: TaskSpec):
    """The module that turns a spec into items: ``harness.items.families.<family>``.

    It exposes ``build_rows(selection, opts) -> dict[row_name, list[Item]]`` and, for a family
    whose tasks have subtasks, ``subtasks(spec, opts) -> list[str]``.
    """
    return importlib.import_module(f"harness.items.families.{spec.family}")


def known_task_names() -> list[str]:
    names = []
    for spec in all_specs().values():
        names.append(spec.name)
        if spec.has_subtasks:
            names.append(f"{spec.name}:<subtask>")
    return names


def task_list(names: Any) -> tuple[str, ...]:
    """The one reading of a task list, whoever gives it (flag, YAML key, Python argument):
    ``"mmlu, gsm8k"`` or ``["mmlu", "gsm8k"]`` -> ``("mmlu", "gsm8k")``; blanks dropped, None -> ()."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = names.split(",")
    return tuple(str(n).strip() for n in names if str(n).strip())


def resolve(names: str | list[str]) -> list[TaskSelection]:
    """Turn ``"mmlu,gsm8k,bigbench:arithmetic"`` into selections; unknown names raise a UserError."""
    names = task_list(names)
    specs = all_specs()
    selections = []
    for name in names:
        if name in specs:
            selections.append(TaskSelection(specs[name]))
            continue
        base, _, sub = name.partition(":")
        if not (sub and base in specs and specs[base].has_subtasks):
            base, _, sub = (lm_eval_alias(name) or name).partition(":")  # an lm-eval spelling of ours
        if sub and base in specs and specs[base].has_subtasks:
            selections.append(TaskSelection(specs[base], sub))
            continue
        close = difflib.get_close_matches(name, [n for n in known_task_names() if "<" not in n], n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UserError(f"unknown task {name!r}; {hint}known tasks: {', '.join(known_task_names())}")
    return selections


# lm-evaluation-harness's names for tasks that are ours under another spelling (the same prompts,
# data and metrics): its per-subject MMLU and C-Eval tasks, and BIG-bench's generative form.
_LM_EVAL_PREFIXES = (("mmlu_", "mmlu:"), ("ceval-valid_", "ceval:"))
_LM_EVAL_BIGBENCH = re.compile(r"bigbench_(\w+?)_generate_until")


def lm_eval_alias(name: str) -> str | None:
    """Our name for an lm-eval task name (``mmlu_abstract_algebra`` -> ``mmlu:abstract_algebra``,
    ``ceval-valid_law`` -> ``ceval:law``, ``bigbench_arithmetic_generate_until`` ->
    ``bigbench:arithmetic``); None when it is not one.  The prompts, data and metrics are lm-eval's;
    the shots are ours (MMLU and C-Eval 5, as in Du et al.), where lm-eval's default is 0: add
    ``--num-fewshot 0`` for its numbers.  A subject that does not exist is still
    refused where the subjects are known, with the list."""
    for prefix, ours in _LM_EVAL_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return ours + name[len(prefix):]
    match = _LM_EVAL_BIGBENCH.fullmatch(name)
    return f"bigbench:{match.group(1)}" if match else None


def with_overrides(spec: TaskSpec, opts: BuildOptions) -> TaskSpec:
    """Apply ``--num-fewshot`` / ``--prompt`` to a spec, so the recorded spec is what ran."""
    changes: dict[str, Any] = {}
    if opts.num_fewshot is not None:
        changes["num_fewshot"] = opts.num_fewshot
        if opts.num_fewshot == 0 and spec.prompt_type == "fewshot":
            changes["prompt_type"] = "zeroshot"
        elif opts.num_fewshot > 0 and spec.prompt_type == "zeroshot":
            changes["prompt_type"] = "fewshot"  # e.g. race --num-fewshot 3: the record says what ran
    if opts.prompt_type is not None:
        changes["prompt_type"] = opts.prompt_type
        if opts.prompt_type == "zeroshot":
            # a zero-shot prompt has no exemplars, whatever --num-fewshot says
            changes["num_fewshot"] = 0
    return replace(spec, **changes) if changes else spec


def selected_subtasks(selection: TaskSelection, known: list[str], noun: str) -> list[str]:
    """The subtasks a selection runs: its own ``:<subtask>`` (which must be one of ``known``), else all
    of ``known`` in the order given; ``noun`` names them in the error ("subject", "level")."""
    if selection.subtask is None:
        return list(known)
    if selection.subtask not in known:
        raise UserError(f"unknown {selection.spec.name} {noun} {selection.subtask!r}; known {noun}s: {', '.join(known)}")
    return [selection.subtask]


def single_row_spec(selection: TaskSelection, opts: BuildOptions) -> TaskSpec:
    """The spec, with the user's overrides, of a task that is a single row (no ``:<subtask>``)."""
    spec = with_overrides(selection.spec, opts)
    if selection.subtask is not None:
        raise UserError(f"{spec.name} has no subtasks; drop ':{selection.subtask}'")
    return spec


BuildRows = Callable[[TaskSelection, BuildOptions], dict[str, list[Item]]]
