"""MMLU as lm-evaluation-harness 0.3.0's ``hendrycksTest-<subject>`` (Pythia's MMLU numbers).

The prompt is the question with its lettered choices, and the four *answer texts* are scored
(``" " + text``), where today's ``mmlu`` scores the letters.  Zero-shot by default; with k shots
the exemplars are drawn exactly as 0.3.0's evaluator draws them (``harness.items.fewshot.lm_eval_v030_draws``).
Records come from the same MMLU reader as ``mmlu`` (local CSVs or cais/mmlu).
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.families.choice_exam import LETTERS
from harness.items.registry import TaskSelection, load_prompt, selected_subtasks, with_overrides
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


def subtasks(spec: TaskSpec, opts: BuildOptions) -> list[str]:
    return sorted(spec.options["subjects"])


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """One row ``"<task>:<subject>"`` per selected subject, test items in file order."""
    spec = with_overrides(selection.spec, opts)
    subjects = selected_subtasks(selection, subtasks(spec, opts), "subject")
    shots = spec.num_fewshot
    splits = [spec.split] + ([spec.fewshot_split] if shots else [])
    records = sources.mmlu_records(subjects, splits, opts, spec.hub_path or "cais/mmlu", spec.hub_name or "{subject}")
    prompt = load_prompt(spec.prompt)

    rows: dict[str, list[Item]] = {}
    for subject in subjects:
        row = f"{spec.name}:{subject}"
        docs = [v030_doc(prompt, r) for r in records[(subject, spec.split)]]
        pool = [v030_doc(prompt, r) for r in records[(subject, spec.fewshot_split)]] if shots else []
        if shots and shots + 1 > len(pool):
            # 0.3.0 samples k+1 validation docs (to drop the evaluated one); more is a ValueError there
            raise UserError(
                f"{row}: {shots} shots need {shots + 1} {spec.fewshot_split} items but it has {len(pool)};"
                f" pass --num-fewshot {max(len(pool) - 1, 0)} or fewer"
            )
        picks = fewshot.lm_eval_v030_draws(docs, pool, shots, spec.options.get("shuffle_seed", 42)) if shots else {}
        items = []
        for doc_id, doc in enumerate(docs[: opts.limit]):
            exemplars = [pool[i] for i in picks.get(doc_id, [])]
            header = "".join(ex["query"] + ex["choices"][ex["gold"]] + prompt["fewshot_delimiter"] for ex in exemplars)
            meta: dict[str, Any] = {"subject": subject}
            if shots:
                meta["fewshot_doc_ids"] = picks[doc_id]
            items.append(
                Item(task=row, doc_id=doc_id, context=header + doc["query"], choices=doc["choices"], gold=doc["gold"],
                     choice_texts=tuple(doc["texts"]), meta=meta)
            )
        rows[row] = items
    return rows


def v030_doc(prompt: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """0.3.0's processed doc: ``query`` (the prompt), ``choices`` as scored (" " + text), ``gold``."""
    texts = list(record["choices"])
    if len(texts) != len(LETTERS):
        raise UserError(f"MMLU record with {len(texts)} choices: {record['question'][:60]!r}; expected 4")
    query = prompt["question"].format_map({"question": record["question"], **dict(zip(LETTERS, texts))})
    return {
        "query": query,
        "choices": tuple(prompt["choice"].format_map({"text": text}) for text in texts),
        "gold": int(record["answer"]),
        "texts": tuple(texts),  # acc_norm divides by len(text), without the leading space
    }
