"""MMLU and C-Eval: four-way multiple-choice exams, one table row per subject, k-shot from dev.

Both render ``description + (exemplar + delimiter) * k + question`` and score the four letter
continuations; they differ in data (``spec.options["dataset"]``) and in their prompt file.
The exemplars are the first k rows of the fewshot split (lm-eval's ``first_n`` sampler).
"""

from __future__ import annotations

from typing import Any, Callable

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, selected_subtasks, with_overrides
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec

LETTERS = ("A", "B", "C", "D")


def subtasks(spec: TaskSpec, opts: BuildOptions) -> list[str]:
    """The exam's subjects, sorted: MMLU's 57 from the spec, C-Eval's from its subject mapping."""
    return sorted(subject_names(spec, opts))


def subject_names(spec: TaskSpec, opts: BuildOptions) -> dict[str, str]:
    """Subject -> the name the prompt header uses ("high school biology", "高中生物")."""
    dataset = _dataset(spec)
    if dataset == "mmlu":
        return {subject: subject.replace("_", " ") for subject in spec.options["subjects"]}
    return sources.ceval_subject_names(opts, spec.options["subjects"])


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """One row ``"<task>:<subject>"`` per selected subject, items in split-file order."""
    spec = with_overrides(selection.spec, opts)
    names = subject_names(spec, opts)
    subjects = selected_subtasks(selection, sorted(names), "subject")
    shots = spec.num_fewshot
    splits = [spec.split] + ([spec.fewshot_split] if shots and spec.fewshot_split != spec.split else [])
    records = _LOADERS[_dataset(spec)](subjects, splits, opts, spec.hub_path, spec.hub_name or "{subject}")
    prompt = load_prompt(spec.prompt)
    to_fields = _FIELDS[_dataset(spec)]

    rows: dict[str, list[Item]] = {}
    for subject in subjects:
        row = f"{spec.name}:{subject}"
        dev = records[(subject, spec.fewshot_split)] if shots else []
        exemplars = [to_fields(dev[i]) for i in fewshot.first_k(len(dev), shots)]
        if len(exemplars) < shots:
            raise UserError(
                f"{row}: {shots} shots asked but the {spec.fewshot_split} split has {len(exemplars)} items;"
                f" pass --num-fewshot {len(exemplars)} or fewer"
            )
        header = fewshot_header(prompt, names[subject], exemplars)
        items = []
        for doc_id, record in enumerate(records[(subject, spec.split)][: opts.limit]):
            fields = to_fields(record)
            items.append(
                Item(
                    task=row,
                    doc_id=doc_id,
                    context=header + prompt["question"].format_map(fields),
                    choices=tuple(prompt["choices"]),
                    gold=_gold(fields, row, doc_id),
                    meta={"subject": subject},
                )
            )
        rows[row] = items
    return rows


def fewshot_header(prompt: dict[str, Any], subject_name: str, exemplars: list[dict[str, str]]) -> str:
    """Everything before the item's question: the description, then each solved exemplar + delimiter."""
    header = prompt["description"].format_map({"subject_name": subject_name})
    for fields in exemplars:
        header += prompt["exemplar"].format_map(fields) + prompt["fewshot_delimiter"]
    return header


def mmlu_fields(record: dict[str, Any]) -> dict[str, str]:
    """Template fields of a cais/mmlu record; the question is stripped as lm-eval's doc_to_text does."""
    return {
        "question": record["question"].strip(),
        **dict(zip(LETTERS, record["choices"])),
        "answer": LETTERS[record["answer"]],
    }


def ceval_fields(record: dict[str, Any]) -> dict[str, str]:
    """Template fields of a C-Eval record, verbatim as the C-Eval authors' code formats them."""
    return {"question": record["question"], **{letter: record[letter] for letter in LETTERS}, "answer": record["answer"]}


def _gold(fields: dict[str, str], row: str, doc_id: int) -> int:
    answer = fields["answer"].strip()
    if answer not in LETTERS:
        # C-Eval's test split ships without answers.
        raise UserError(f"{row} item {doc_id} has no answer letter ({answer!r}); evaluate a split with answers")
    return LETTERS.index(answer)


def _dataset(spec: TaskSpec) -> str:
    dataset = spec.options.get("dataset")
    if dataset not in _LOADERS:
        raise ValueError(f"task {spec.name}: options.dataset must be one of {sorted(_LOADERS)}, not {dataset!r}")
    return dataset


_LOADERS: dict[str, Callable[..., dict[tuple[str, str], list[dict[str, Any]]]]] = {
    "mmlu": sources.mmlu_records,
    "ceval": sources.ceval_records,
}
_FIELDS: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {"mmlu": mmlu_fields, "ceval": ceval_fields}
