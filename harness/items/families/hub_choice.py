"""ARC and HellaSwag: multiple choice read from the Hub only, as lm-evaluation-harness 0.4.13's
``arc_easy`` / ``arc_challenge`` and ``hellaswag`` build their requests.

No upstream file of either dataset is at hand, so neither has a ``--data-dir`` layout: rows come
from the Hub dataset lm-eval reads (the spec's ``hub_path``/``hub_name``) through the Hub cache,
whatever ``--data-dir`` says.  One function per dataset turns a Hub row into a doc ``{"query",
"choices", "gold"}``; the prompt file joins the pieces as lm-eval does.  ``doc_id`` is the row's
position in the split.

Zero-shot by default.  ``--num-fewshot k`` draws k exemplars from the spec's ``fewshot_split`` with
lm-eval's default sampler (``random.Random(fewshot_seed)``, one draw per item, in item order).
lm-eval passes the item to the sampler as a doc to leave out (so it draws k + 1) exactly when the
task's fewshot split and test split are both unset or equal: true for hellaswag (no test split),
false for ARC (test split "test"); ``options.fewshot_excludes_item`` records which.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """The single row ``spec.name``: the split's rows in Hub order, each with its full prompt."""
    spec = single_row_spec(selection, opts)
    to_doc = _doc_function(spec)
    prompt = load_prompt(spec.prompt)
    shots = spec.num_fewshot
    rows, pool = sources.hub_rows_and_shot_pool(spec, opts)

    sampler = fewshot.LmEvalSampler(pool, spec.options.get("fewshot_seed", 1234))
    exclude_item = bool(spec.options.get("fewshot_excludes_item", False))
    items = []
    # Draws advance one generator item by item, so --limit N stops after the first N items.
    for doc_id, row in enumerate(rows[: opts.limit]):
        doc = to_doc(row)
        picked = sampler.draw(shots, eval_doc=row if exclude_item else None)
        context = "".join(exemplar(prompt, to_doc(pool[i])) for i in picked)
        context += prompt["question"].format_map(doc)
        meta: dict[str, Any] = {"fewshot_doc_ids": picked} if shots else {}
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=context,
                choices=tuple(prompt["target_delimiter"] + choice for choice in doc["choices"]),
                gold=doc["gold"],
                # lm-eval length-normalises by the choice texts without the target delimiter
                choice_texts=tuple(doc["choices"]),
                meta=meta,
            )
        )
    return {spec.name: items}


def exemplar(prompt: dict[str, Any], doc: dict[str, Any]) -> str:
    """A solved exemplar: its prompt, the target delimiter, its gold choice, the fewshot delimiter."""
    return (
        prompt["question"].format_map(doc)
        + prompt["target_delimiter"]
        + doc["choices"][doc["gold"]]
        + prompt["fewshot_delimiter"]
    )


def arc_doc(row: dict[str, Any]) -> dict[str, Any]:
    """An allenai/ai2_arc row: labels are "A".."E" or "1".."5"; gold is the answer key's position."""
    labels = list(row["choices"]["label"])
    if row["answerKey"] not in labels:
        raise UserError(f"ARC row {row.get('id')!r}: answerKey {row['answerKey']!r} is not one of its labels {labels}")
    return {"question": row["question"], "choices": list(row["choices"]["text"]), "gold": labels.index(row["answerKey"])}


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``: WikiHow markup out, in this order (the order matters:
    " [title]" becomes ". " before the other brackets are dropped, and "  " is replaced once)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A Rowan/hellaswag row as lm-eval's ``process_docs`` maps it (``label`` is a string there)."""
    if not str(row["label"]).strip().isdigit():
        # Rowan/hellaswag's test split ships without labels.
        raise UserError(f"HellaSwag row {row.get('ind')!r} has no label ({row['label']!r}); evaluate the validation split")
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "query": hellaswag_preprocess(row["activity_label"] + ": " + context),
        "choices": [hellaswag_preprocess(ending) for ending in row["endings"]],
        "gold": int(row["label"]),
    }


_DOCS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"arc": arc_doc, "hellaswag": hellaswag_doc}


def _doc_function(spec: TaskSpec) -> Callable[[dict[str, Any]], dict[str, Any]]:
    dataset = spec.options.get("dataset")
    if dataset not in _DOCS:
        raise ValueError(f"task {spec.name}: options.dataset must be one of {sorted(_DOCS)}, not {dataset!r}")
    return _DOCS[dataset]
