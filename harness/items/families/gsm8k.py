"""GSM8K grade-school math: greedy generation, one table row per spec (``gsm8k``, ``gsm8k:fewshot``, ...).

The prompt is ``(exemplar + delimiter) * k + question``.  Exemplars come from the prompt file
(the fixed chain-of-thought set) or, when it has none, from the spec's fewshot split, picked by
``spec.options["sampler"]``: ``first_n`` in order, or ``random`` exactly as lm-evaluation-harness
0.4.13's default ``ContextSampler`` draws them.  The scorer reads ``spec.options["extract"]``.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from harness.items import sources
from harness.scoring.companions import GoldContinuation
from harness.errors import UserError
from harness.items.registry import BuildOptions, TaskSelection, TaskSpec, load_prompt, single_row_spec
from harness.requests import Item



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
    rnd = random.Random(spec.options.get("fewshot_seed", 1234))
    same_split = from_split and spec.fewshot_split == spec.split
    items = []
    # Random draws advance one shared generator item by item, so --limit N must stop after the
    # first N items (not sample for all and slice) to reproduce lm-eval's prompts for them.
    for doc_id, doc in enumerate(docs[: opts.limit]):
        if shots == 0:
            picked: list[int] = []
        elif sampler == "random":
            picked = lm_eval_random_draw(rnd, pool, shots, eval_doc=doc if same_split else None)
        elif sampler == "first_n":
            picked = [i for i in range(len(pool)) if not (same_split and pool[i] == doc)][:shots]
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


# GSM8K's calculator annotations, "48/2 = <<48/2=24>>24": the exemplars of the CoT prompts have none
_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def gold_continuation(spec: TaskSpec, item: Item) -> GoldContinuation:
    """The dataset's solution as the prompt's exemplars would write it after "A:" / "Answer:".

    ``extract: hash`` (gsm8k, exemplars = the dataset's full answers): " " + the solution as it is,
    final answer "#### N".  ``extract: cot`` (Wei et al.'s exemplars, one line each ending "The answer
    is N."): the calculator annotations removed, the reasoning lines joined by spaces (a line without
    final punctuation gets a period, as the exemplars' sentences have), and "#### N" replaced by
    "The answer is N.", which is also the final answer.
    """
    solution = item.solution
    if spec.options.get("extract", "cot") == "hash":
        return GoldContinuation((" " + solution,), final_answer=solution[solution.rindex("####") :])
    lines = [line.strip() for line in _CALCULATOR_ANNOTATION.sub("", solution.split("####")[0]).splitlines()]
    sentences = [line if line[-1] in ".!?" else line + "." for line in lines if line]
    final = f" The answer is {final_answer(solution)}."
    return GoldContinuation(("".join(" " + sentence for sentence in sentences) + final,), final_answer=final)


def lm_eval_random_draw(
    rnd: random.Random, pool: Sequence[dict[str, Any]], n: int, eval_doc: dict[str, Any] | None = None
) -> list[int]:
    """Positions in ``pool`` of the n exemplars lm-eval 0.4.13's default sampler returns for one item.

    ``random.sample`` consumes the generator according to the population size only, so drawing
    positions gives the same picks as lm-eval drawing the documents.  When exemplars come from the
    evaluated split, lm-eval draws n + 1 and drops the item itself (then takes the first n), and
    redraws from the pool without it if duplicates left fewer than n.
    """
    if eval_doc is None:
        return rnd.sample(range(len(pool)), n)
    picked = [i for i in rnd.sample(range(len(pool)), n + 1) if pool[i] != eval_doc][:n]
    if len(picked) < n:
        others = [i for i in range(len(pool)) if pool[i] != eval_doc]
        picked = rnd.sample(others, n)
    return picked
