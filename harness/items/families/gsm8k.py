"""GSM8K grade-school math: greedy generation, one table row per spec (``gsm8k``, ``gsm8k:fewshot``, ...).

The prompt is ``(exemplar + delimiter) * k + question``.  Exemplars come from the prompt file
(the fixed chain-of-thought set) or, when it has none, from the spec's fewshot split, picked by
``spec.options["sampler"]`` (``harness.items.fewshot``): ``first_n`` in order, or ``random`` exactly
as lm-evaluation-harness 0.4.13's default ``ContextSampler`` draws them.  How the answers are read and
scored is named in the task's YAML (``extractor``, ``scorer``, ``gold_continuation``; harness.scoring.registry).
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """The single row ``spec.name``: the test items in file order, each with its full prompt."""
    spec = single_row_spec(selection, opts)
    prompt = load_prompt(spec.prompt)
    shots = spec.num_fewshot
    fixed = prompt.get("exemplars")
    from_split = shots > 0 and fixed is None
    if from_split and not spec.fewshot_split:
        raise UserError(f"{spec.name} has no exemplars to draw {shots} shots from; pass --num-fewshot 0")
    splits = [spec.split] + ([spec.fewshot_split] if from_split and spec.fewshot_split != spec.split else [])
    records = sources.gsm8k_records(splits, opts, spec.hub_path or "openai/gsm8k", spec.hub_name or "main")
    docs = records[spec.split]
    pool = records[spec.fewshot_split] if from_split else (fixed or [])
    if shots > len(pool):
        raise UserError(f"{spec.name}: {shots} shots asked but only {len(pool)} exemplars exist; lower --num-fewshot")

    sampler = spec.options.get("sampler", "first_n")
    random_sampler = fewshot.LmEvalSampler(pool, spec.options.get("fewshot_seed", 1234))
    same_split = from_split and spec.fewshot_split == spec.split
    items = []
    # Random draws advance one shared generator item by item: draw for the first --limit items only.
    for doc_id, doc in enumerate(docs[: opts.limit]):
        if shots == 0:
            picked: list[int] = []
        elif sampler == "random":
            picked = random_sampler.draw(shots, eval_doc=doc if same_split else None)
        elif sampler == "first_n":
            picked = fewshot.first_k(len(pool), shots, leave_out=(lambda i: pool[i] == doc) if same_split else None)
        else:
            raise ValueError(f"task {spec.name}: options.sampler must be first_n or random, not {sampler!r}")
        items.append(question_item(spec, prompt, doc_id, doc, [pool[i] for i in picked], picked if from_split else None))
    return {spec.name: items}


def question_item(
    spec: TaskSpec, prompt: dict[str, Any], doc_id: int, doc: dict[str, Any], exemplars: list[dict[str, Any]],
    fewshot_doc_ids: list[int] | None,
) -> Item:
    """A GSM8K-style item: the solved exemplars, then the question; the target is the number after
    ``####`` of the doc's answer, whose whole text is the item's ``solution`` (the gold continuation's
    source).  ``fewshot_doc_ids`` (None: fixed exemplars) is recorded in meta."""
    context = "".join(prompt["exemplar"].format_map(e) + prompt["fewshot_delimiter"] for e in exemplars)
    context += prompt["question"].format_map(doc)
    meta: dict[str, Any] = {"fewshot_doc_ids": fewshot_doc_ids} if fewshot_doc_ids is not None else {}
    return Item(
        task=spec.name,
        doc_id=doc_id,
        context=context,
        targets=(final_answer(doc["answer"]),),
        stop=tuple(prompt["stop"]),
        max_new_tokens=spec.max_new_tokens,
        solution=doc["answer"],
        meta=meta,
    )


def final_answer(solution: str) -> str:
    """The number after GSM8K's ``####`` marker (lm-eval's gsm8k_cot doc_to_target)."""
    return solution.split("####")[-1].strip()
