"""TriviaQA (rc.nocontext): greedy generation scored by exact match against any answer alias, as
lm-evaluation-harness 0.4.13's ``triviaqa`` task builds and scores it.

Hub only (``mandarjoshi/trivia_qa``; the upstream files are hundreds of MB), whatever ``--data-dir``
says.  The prompt is ``(exemplar + delimiter) * k + question``; exemplars are training rows answered
with their first alias, drawn by lm-eval's default sampler: ``random.Random(fewshot_seed)``, one
draw per item in item order.  The task sets neither a test split nor a fewshot split, and lm-eval
hands the sampler the item as a doc to leave out when those two are equal (here both None), so every
draw takes k + 1 training rows, drops any equal to the item, and keeps the first k; we draw the same
way so the exemplars are lm-eval's.  ``doc_id`` is the row's position in the validation split.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """The single row ``spec.name``: validation rows in Hub order, each with its k-shot prompt."""
    spec = single_row_spec(selection, opts)
    prompt = load_prompt(spec.prompt)
    shots = spec.num_fewshot
    rows, pool = sources.hub_rows_and_shot_pool(spec, opts)

    sampler = fewshot.LmEvalSampler(pool, spec.options.get("fewshot_seed", 1234))
    items = []
    # Draws advance one generator item by item, so --limit N stops after the first N items.
    for doc_id, row in enumerate(rows[: opts.limit]):
        picked = sampler.draw(shots, eval_doc=row)
        context = "".join(
            prompt["exemplar"].format_map(exemplar_fields(pool[i])) + prompt["fewshot_delimiter"] for i in picked
        )
        context += prompt["question"].format_map({"question": row["question"]})
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=context,
                targets=aliases(row),
                stop=tuple(prompt["stop"]),
                max_new_tokens=spec.max_new_tokens,
                meta={"fewshot_doc_ids": picked} if shots else {},
            )
        )
    return {spec.name: items}


def aliases(row: dict[str, Any]) -> tuple[str, ...]:
    """The accepted answers: ``answer.aliases`` (lm-eval's doc_to_target), in the dataset's order."""
    names = tuple(row["answer"]["aliases"])
    if not names:
        raise UserError(f"TriviaQA row {row.get('question_id')!r} has no answer aliases")
    return names


def exemplar_fields(row: dict[str, Any]) -> dict[str, str]:
    """An exemplar's question and its answer: lm-eval writes the first alias of a list target."""
    return {"question": row["question"], "answer": aliases(row)[0]}
