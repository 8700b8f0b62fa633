"""Chinese multiple choice from CLUE, prompted as OpenCompass's log-likelihood ("ppl") configs:
C3 reading comprehension (``c3``) and CLUEWSC2020 coreference (``cluewsc2020``).

OpenCompass's templates are two rounds (HUMAN prompt, BOT answer); for a base model without a
meta template it joins rounds with "\\n" (LMTemplateParser.parse_template), so the text a choice
is scored in is ``<human prompt>\\n<bot answer>``.  We put everything but the answer in the
context and score each answer as its continuation, as lm-eval scores choices (OpenCompass's
PPLInferencer instead ranks the mean token loss of each whole string).

Data: the upstream files under ``--data-dir`` (no Hub copy is read: lm-evaluation-harness 0.4.13
has no C3 or CLUEWSC2020 task to take a dataset_path from).

    c3/c3-{d,m}-{train,dev,test}.json   [[paragraphs...], [{"question", "choice": [...], "answer"}...], id]
    cluewsc2020/{train,dev}.json        JSON Lines {"target": {"span1_text", "span2_text", ...}, "idx", "label", "text"}

C3's doc_id is the question's position in the canonical order: files sorted by name
(c3-d-* before c3-m-*), then documents, then questions, in file order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec

C3_LAYOUT = "--data-dir DIR expects c3/c3-{d,m}-{train,dev,test}.json (as released in nlpdata/c3)"
CLUEWSC_LAYOUT = "--data-dir DIR expects cluewsc2020/{train,dev}.json (CLUEWSC2020 JSON Lines as released)"



def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    spec = single_row_spec(selection, opts)
    dataset = spec.options.get("dataset")
    if dataset == "c3":
        return {spec.name: c3_items(spec, opts)}
    if dataset == "cluewsc2020":
        return {spec.name: cluewsc_items(spec, opts)}
    raise ValueError(f"task {spec.name}: options.dataset must be c3 or cluewsc2020, not {dataset!r}")


# --- C3 ------------------------------------------------------------------------------------------


def c3_records(split: str, opts: BuildOptions) -> list[dict[str, Any]]:
    """One record per question, in canonical order, with its document's ``content`` as OpenCompass
    builds it (C3Dataset: the paragraphs joined by a space)."""
    root = _local_root(opts, "c3", C3_LAYOUT)
    paths = sorted(root / f"c3-{genre}-{split}.json" for genre in ("d", "m"))
    sources.require_files(paths, C3_LAYOUT)
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            documents = json.load(f)
        for position, document in enumerate(documents):
            if not (isinstance(document, list) and len(document) == 3):
                raise UserError(f"{path}: document {position} is not [paragraphs, questions, id]; {C3_LAYOUT}")
            paragraphs, questions, document_id = document
            for question in questions:
                if question["answer"] not in question["choice"]:
                    raise UserError(f"{path}: document {document_id}: answer {question['answer']!r} is not one of its choices")
                records.append(
                    {
                        "content": " ".join(paragraphs),
                        "question": question["question"],
                        "choices": list(question["choice"]),
                        "answer": question["answer"],
                        "document": f"{path.name}:{document_id}",
                    }
                )
    return records


def c3_items(spec: TaskSpec, opts: BuildOptions) -> list[Item]:
    """Exemplars: the first k questions of the fewshot split (train) in canonical order, each the
    prompt followed by its answer, every one followed by the delimiter (OpenCompass's retriever
    default: ice_separator = ice_eos_token = "\\n")."""
    prompt = load_prompt(spec.prompt)
    docs = c3_records(spec.split, opts)
    shots = spec.num_fewshot
    train = c3_records(spec.fewshot_split, opts) if shots else []
    pool = [train[i] for i in fewshot.first_k(len(train), shots)]
    if len(pool) < shots:
        raise UserError(f"{spec.name}: {shots} shots asked but the {spec.fewshot_split} split has {len(pool)} questions; lower --num-fewshot")
    header = "".join(prompt["exemplar"].format_map(ex) + prompt["fewshot_delimiter"] for ex in pool)
    items = []
    for doc_id, doc in enumerate(docs[: opts.limit]):
        meta: dict[str, Any] = {"document": doc["document"]}
        if shots:
            meta["fewshot_source"] = f"first {shots} questions of {spec.fewshot_split}"
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=header + prompt["question"].format_map(doc),
                choices=tuple(prompt["choice"].format_map({"choice": c}) for c in doc["choices"]),
                gold=doc["choices"].index(doc["answer"]),
                meta=meta,
            )
        )
    return items


# --- CLUEWSC2020 ---------------------------------------------------------------------------------


def cluewsc_records(split: str, opts: BuildOptions) -> list[dict[str, Any]]:
    root = _local_root(opts, "cluewsc2020", CLUEWSC_LAYOUT)
    path = root / f"{split}.json"
    sources.require_files([path], CLUEWSC_LAYOUT)
    records = []
    for line_no, row in enumerate(sources.read_jsonl(path), start=1):
        if row.get("label") not in ("true", "false") or "target" not in row:
            raise UserError(f"{path}:{line_no}: expected a CLUEWSC2020 row with label true/false and a target; {CLUEWSC_LAYOUT}")
        records.append(row)
    return records


def cluewsc_items(spec: TaskSpec, opts: BuildOptions) -> list[Item]:
    """Choice 0 is "否" (label false), choice 1 "是" (true): OpenCompass's template keys, answer = label == "true"."""
    if spec.num_fewshot:
        raise UserError(f"{spec.name} is zero-shot (OpenCompass's ZeroRetriever); pass --num-fewshot 0")
    prompt = load_prompt(spec.prompt)
    items = []
    for doc_id, row in enumerate(cluewsc_records(spec.split, opts)[: opts.limit]):
        fields = {"text": row["text"], "span1": row["target"]["span1_text"], "span2": row["target"]["span2_text"]}
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=prompt["question"].format_map(fields),
                choices=tuple(prompt["choices"]),
                gold=1 if row["label"] == "true" else 0,
                meta={"idx": row.get("idx")},
            )
        )
    return items


def _local_root(opts: BuildOptions, folder: str, layout: str) -> Path:
    if opts.data_dir is None:
        raise UserError(f"{folder} is read from local files only (no Hub copy); {layout}")
    return Path(opts.data_dir) / folder
