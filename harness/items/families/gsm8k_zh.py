"""GSM8K-Chinese: grade-school math in Chinese, greedy generation scored like GSM8K (exact match on
the final number).  No public copy is bundled: rows come from ``--task-file gsm8k_zh=SOURCE``.

Each row is ``{"question": str, "answer": str}``; ``answer`` is either the final answer ("18") or a
worked solution ending in GSM8K's "#### 18".  Zero-shot by default; with ``--num-fewshot k`` the
exemplars are the first k other rows of the same file (no separate train split is assumed), each
with its full answer, and the record keeps their positions (``fewshot_doc_ids``).
"""

from __future__ import annotations

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.families.gsm8k import question_item
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions

FIELDS = '{"question": str, "answer": str (the final number, or a solution ending "#### N")}'


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    spec = single_row_spec(selection, opts)
    prompt = load_prompt(spec.prompt)
    rows = sources.user_task_records(spec.name, spec.split, opts, FIELDS)
    for doc_id, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("answer"), str)):
            raise UserError(f"{spec.name} row {doc_id}: expected {FIELDS}")
    shots = spec.num_fewshot
    if shots >= len(rows) and shots:
        raise UserError(f"{spec.name}: {shots} shots asked but the file has {len(rows)} rows; lower --num-fewshot")
    items = []
    for doc_id, row in enumerate(rows[: opts.limit]):
        picked = fewshot.first_k(len(rows), shots, leave_out=lambda i: i == doc_id)
        items.append(question_item(spec, prompt, doc_id, row, [rows[i] for i in picked], picked if shots else None))
    return {spec.name: items}
