"""ClozeT (LOT benchmark, Guan et al. 2022): pick the sentence that fits a Chinese story, scored by
log-likelihood.  No public copy is bundled: the rows come from ``--task-file clozet=SOURCE``.

Each row is ``{"context": str, "choices": [str, ...], "label": int}``: ``context`` is the story up to
the blank, ``choices`` the candidate sentences (ClozeT has two) and ``label`` the index of the right
one.  Each choice is scored as the continuation of the context, with no separator (Chinese text).
doc_id is the row's position in the file (or Hub split).
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.items import sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions

FIELDS = '{"context": str, "choices": [str, ...], "label": int}'



def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    spec = single_row_spec(selection, opts)
    if spec.num_fewshot:
        raise UserError(f"{spec.name} is zero-shot; pass --num-fewshot 0")
    prompt = load_prompt(spec.prompt)
    rows = sources.user_task_records(spec.name, spec.split, opts, FIELDS)
    items = []
    for doc_id, row in enumerate(rows[: opts.limit]):
        _check(spec.name, doc_id, row)
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=prompt["question"].format_map({"context": row["context"]}),
                choices=tuple(prompt["choice"].format_map({"choice": c}) for c in row["choices"]),
                gold=row["label"],
            )
        )
    return {spec.name: items}


def _check(task: str, doc_id: int, row: Any) -> None:
    ok = (
        isinstance(row, dict)
        and isinstance(row.get("context"), str)
        and isinstance(row.get("choices"), list)
        and len(row["choices"]) >= 2
        and all(isinstance(c, str) and c for c in row["choices"])
        and isinstance(row.get("label"), int)
        and not isinstance(row.get("label"), bool)
        and 0 <= row["label"] < len(row["choices"])
    )
    if not ok:
        raise UserError(f"{task} row {doc_id}: expected {FIELDS} with two or more non-empty choices and a label indexing them")
