"""Pythia's zero-shot tasks, as lm-evaluation-harness 0.4.13 prompts and scores them: one table row
per task, one item per document of the evaluation split, in file order.

The prompt file decides the item's shape:

    text + choices         multiple choice: every choice scored after the same context (PIQA, SciQ, WSC, LogiQA)
    contexts + continuation  per-choice contexts: one continuation scored after each (WinoGrande)
    text + continuation    one continuation, no choices (LAMBADA: acc = greedy, perplexity)

Every template is filled from the document's fields (``_FIELDS``), and every scored continuation
carries lm-eval's ``target_delimiter``.  A prompt file with ``strip_context: true`` strips the filled
context, as lm-eval 0.3.0's SciQ strips its ``doc_to_text`` (``sciq_pythia_v0``).  Documents are read
in the Hub's columns (lm-eval's dataset_path/dataset_name) from the Hub or, with ``--data-dir``, from
the upstream files, converted here to the same columns exactly as the Hub's loading scripts convert
them (``wsc_as_released``: super_glue's ``wsc`` config, the spans lm-eval 0.3.0 read, uncorrected).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.errors import UserError
from harness.items import sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import CHOICE_CONTEXTS_SEPARATOR, Item
from harness.spec import BuildOptions, TaskSpec


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    """The single row ``spec.name``: the split's documents in file order, each rendered zero-shot."""
    spec = single_row_spec(selection, opts)
    if spec.num_fewshot or spec.prompt_type != "zeroshot":
        # Pythia's evaluations are zero-shot, and the few-shot (train) splits have no local copy.
        raise UserError(
            f"{spec.name} is zero-shot only (as in Pythia's evaluations); pass --num-fewshot 0 and no --prompt"
            " other than zeroshot, or evaluate it in a separate run"
        )
    dataset = _dataset(spec)
    prompt = load_prompt(spec.prompt)
    docs = load_docs(spec, opts)
    return {spec.name: [render(prompt, spec.name, doc_id, *_FIELDS[dataset](doc)) for doc_id, doc in enumerate(docs[: opts.limit])]}


def render(prompt: dict[str, Any], row: str, doc_id: int, fields: dict[str, str], gold: int | None) -> Item:
    """One item from a prompt file's templates and one document's fields (see the module docstring)."""
    delimiter = prompt.get("target_delimiter", " ")
    if "contexts" in prompt:
        contexts = tuple(template.format_map(fields) for template in prompt["contexts"])
        continuation = delimiter + prompt["continuation"].format_map(fields)
        return Item(
            task=row,
            doc_id=doc_id,
            context=CHOICE_CONTEXTS_SEPARATOR.join(contexts),
            contexts=contexts,
            choices=(continuation,) * len(contexts),
            gold=gold,
        )
    context = prompt["text"].format_map(fields)
    if prompt.get("strip_context", False):
        context = context.strip()
    if "continuation" in prompt:
        return Item(task=row, doc_id=doc_id, context=context, choices=(delimiter + prompt["continuation"].format_map(fields),))
    texts = [template.format_map(fields) for template in prompt["choices"]]
    # lm-eval length-normalises acc_norm by the choice text without the target delimiter
    return Item(task=row, doc_id=doc_id, context=context, choices=tuple(delimiter + text for text in texts), gold=gold,
                choice_texts=tuple(texts))


# --- documents: local upstream files or the Hub, in the Hub's columns ------------------------------


@dataclass(frozen=True)
class LocalFiles:
    """Where a dataset's splits lie under ``--data-dir`` and how to read them."""

    layout: str  # the hint of a missing-file error
    files: dict[str, tuple[str, ...]]  # lm-eval split name -> paths under the data dir
    read: Callable[..., list[dict[str, Any]]]  # (*paths) -> documents in the Hub's columns


def load_docs(spec: TaskSpec, opts: BuildOptions) -> list[dict[str, Any]]:
    """The evaluation split's documents in file (row) order, so doc_id is the same from either source."""
    dataset = _dataset(spec)
    if opts.data_dir is None:
        rows = sources.hub_split_records(spec.hub_path, spec.hub_name, spec.split, opts.hub_revision)
        return [_HUB_ROW.get(dataset, dict)(row) for row in rows]
    local = _LOCAL[dataset]
    if spec.split not in local.files:
        raise UserError(f"{spec.name}: no local copy of split {spec.split!r} (local splits: {', '.join(local.files)})")
    paths = [Path(opts.data_dir) / relative for relative in local.files[spec.split]]
    sources.require_files(paths, local.layout)
    return local.read(*paths)


def read_lambada(path: Path) -> list[dict[str, Any]]:
    return [{"text": doc["text"]} for doc in sources.read_jsonl(path)]


def read_piqa(questions: Path, labels: Path) -> list[dict[str, Any]]:
    """``valid.jsonl`` beside ``valid-labels.lst`` (one 0/1 per line) as baber/piqa's rows."""
    docs = sources.read_jsonl(questions)
    answers = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(answers) != len(docs):
        raise UserError(f"{labels} has {len(answers)} labels for the {len(docs)} questions of {questions}; use the files as released")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(a)} for d, a in zip(docs, answers)]


def read_sciq(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_winogrande(path: Path) -> list[dict[str, Any]]:
    return [{key: doc[key] for key in ("sentence", "option1", "option2", "answer")} for doc in sources.read_jsonl(path)]


def read_wsc(path: Path) -> list[dict[str, Any]]:
    """SuperGLUE's ``val.jsonl`` as the Hub's ``wsc.fixed`` rows: spans flattened, fixed, label 0/1."""
    return [fix_wsc_spans(doc) for doc in read_wsc_as_released(path)]


def read_wsc_as_released(path: Path) -> list[dict[str, Any]]:
    """SuperGLUE's ``val.jsonl`` as the Hub's super_glue ``wsc`` rows (lm-eval 0.3.0's config): spans
    flattened as released, never corrected, label 0/1."""
    return [
        {"text": row["text"], **{key: row["target"][key] for key in _WSC_SPANS}, "idx": row["idx"], "label": int(bool(row["label"]))}
        for row in sources.read_jsonl(path)
    ]


_WSC_SPANS = ("span1_index", "span2_index", "span1_text", "span2_text")


def fix_wsc_spans(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``wsc.fixed`` correction of the Hub's super_glue loader (``_fix_wst``), quirks included:
    a span that is not a substring of the text gets the case of the word at its index, loses a
    trailing "." and newlines.  The text's "theyscold" is left as it is (the loader's replace is a
    no-op) but span2_index becomes 10."""
    doc = dict(doc)
    for span in ("span1", "span2"):
        text, index = doc[f"{span}_text"], doc[f"{span}_index"]
        if text in doc["text"] or text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
            continue
        if "theyscold" in text:
            doc["span2_index"] = 10
        first_word = doc["text"].split()[index]
        text = (text[0].lower() if first_word[0].islower() else text[0].upper()) + text[1:]
        doc[f"{span}_text"] = text.rstrip(".").replace("\n", " ")
        if doc[f"{span}_text"] not in doc["text"]:  # the loader asserts here
            raise UserError(f"WSC item {doc.get('idx')}: {span}_text {text!r} is not in its text even after wsc.fixed's correction")
    return doc


def read_logiqa(path: Path) -> list[dict[str, Any]]:
    """LogiQA's 8-line text records as EleutherAI/logiqa's loader reads them: records split on blank
    lines, then label, context, question and options (their "A." cut off), each with every "."
    followed by a space and stripped (so "3.5" becomes "3. 5", as on the Hub)."""
    with open(path, encoding="utf-8") as f:  # text mode: CRLF files read as LF, as the loader's open()
        records = f.read().strip().split("\n\n")
    docs = []
    for number, record in enumerate(records):
        lines = record.split("\n")
        if len(lines) < 4:
            raise UserError(f"{path}: record {number} has {len(lines)} lines; expected label, context, question, options")
        docs.append({
            "label": lines[0].strip(),
            "context": _logiqa_normalize(lines[1]),
            "question": _logiqa_normalize(lines[2]),
            "options": [_logiqa_normalize(option[2:]) for option in lines[3:]],
        })
    return docs


def _logiqa_normalize(text: str) -> str:
    return text.replace(".", ". ").strip()


_LOCAL: dict[str, LocalFiles] = {
    "lambada_openai": LocalFiles(
        "--data-dir DIR expects lambada_openai/lambada_test.jsonl (OpenAI's LAMBADA test set)",
        {"test": ("lambada_openai/lambada_test.jsonl",)},
        read_lambada,
    ),
    "piqa": LocalFiles(
        "--data-dir DIR expects piqa/valid.jsonl and piqa/valid-labels.lst (the PIQA authors' release)",
        {"validation": ("piqa/valid.jsonl", "piqa/valid-labels.lst")},
        read_piqa,
    ),
    "sciq": LocalFiles(
        "--data-dir DIR expects sciq/SciQ dataset-2 3/{test,valid}.json (the contents of AI2's SciQ.zip)",
        {"test": ("sciq/SciQ dataset-2 3/test.json",), "validation": ("sciq/SciQ dataset-2 3/valid.json",)},
        read_sciq,
    ),
    "winogrande": LocalFiles(
        "--data-dir DIR expects winogrande/dev.jsonl (WinoGrande 1.1 as released)",
        {"validation": ("winogrande/dev.jsonl",)},
        read_winogrande,
    ),
    "wsc": LocalFiles(
        "--data-dir DIR expects wsc/val.jsonl (SuperGLUE WSC as released)",
        {"validation": ("wsc/val.jsonl",)},
        read_wsc,
    ),
    "wsc_as_released": LocalFiles(
        "--data-dir DIR expects wsc/val.jsonl (SuperGLUE WSC as released)",
        {"validation": ("wsc/val.jsonl",)},
        read_wsc_as_released,
    ),
    "logiqa": LocalFiles(
        "--data-dir DIR expects logiqa/{Test,Eval}.txt (lgw863/LogiQA-dataset as released)",
        {"test": ("logiqa/Test.txt",), "validation": ("logiqa/Eval.txt",)},
        read_logiqa,
    ),
}

# Hub rows whose parquet types differ from the local documents' (arrays come back as lists already).
_HUB_ROW: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "piqa": lambda row: {**row, "label": int(row["label"])},
    "wsc": lambda row: {**row, "label": int(row["label"])},
    "wsc_as_released": lambda row: {**row, "label": int(row["label"])},
    "logiqa": lambda row: {**row, "options": list(row["options"])},
}


# --- template fields and gold, per dataset (lm-eval's doc_to_text / doc_to_choice / doc_to_target) --


def lambada_fields(doc: dict[str, Any]) -> tuple[dict[str, str], None]:
    words = doc["text"].split(" ")
    return {"before_last_word": " ".join(words[:-1]), "last_word": words[-1]}, None


def piqa_fields(doc: dict[str, Any]) -> tuple[dict[str, str], int]:
    return {"goal": doc["goal"], "sol1": doc["sol1"], "sol2": doc["sol2"]}, doc["label"]


def sciq_fields(doc: dict[str, Any]) -> tuple[dict[str, str], int]:
    keys = ("question", "distractor1", "distractor2", "distractor3", "correct_answer")
    return {"support": doc["support"].lstrip(), **{key: doc[key] for key in keys}}, 3


def winogrande_fields(doc: dict[str, Any]) -> tuple[dict[str, str], int]:
    sentence = doc["sentence"]
    if "_" not in sentence:
        raise UserError(f"a WinoGrande sentence has no blank '_': {sentence[:60]!r}")
    blank = sentence.index("_")
    fields = {
        "before_blank": sentence[:blank],
        "after_blank": sentence[blank + 1 :].strip(),
        "option1": doc["option1"],
        "option2": doc["option2"],
    }
    return fields, {"1": 0, "2": 1}[doc["answer"]]


def wsc_fields(doc: dict[str, Any]) -> tuple[dict[str, str], int]:
    # lm-eval's default_doc_to_text: span2_index counts words, so the pronoun is starred after
    # joining the first span2_index words with single spaces.
    text = doc["text"]
    before = " ".join(text.split()[: doc["span2_index"]])
    after = text[len(before) + len(doc["span2_text"]) + 1 :]
    passage = general_detokenize(before + f" *{doc['span2_text']}*" + after)
    return {"passage": passage, "pronoun": doc["span2_text"], "noun": doc["span1_text"]}, doc["label"]


def general_detokenize(text: str) -> str:
    """lm-evaluation-harness 0.4.13's ``utils.general_detokenize``."""
    text = text.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", text)


def logiqa_fields(doc: dict[str, Any]) -> tuple[dict[str, str], int]:
    options = doc["options"]
    if len(options) != 4:
        raise UserError(f"a LogiQA record has {len(options)} options instead of 4: {doc['question'][:60]!r}")
    label = doc["label"].strip()
    if label not in ("a", "b", "c", "d"):
        raise UserError(f"a LogiQA record has answer {label!r} instead of a-d: {doc['question'][:60]!r}")
    return {"context": doc["context"], "question": doc["question"], **dict(zip("ABCD", options))}, "abcd".index(label)


_FIELDS: dict[str, Callable[[dict[str, Any]], tuple[dict[str, str], int | None]]] = {
    "lambada_openai": lambada_fields,
    "piqa": piqa_fields,
    "sciq": sciq_fields,
    "winogrande": winogrande_fields,
    "wsc": wsc_fields,
    "wsc_as_released": wsc_fields,  # the same prompt over spans that wsc.fixed did not correct
    "logiqa": logiqa_fields,
}


def _dataset(spec: TaskSpec) -> str:
    dataset = spec.options.get("dataset")
    if dataset not in _FIELDS:
        raise ValueError(f"task {spec.name}: options.dataset must be one of {sorted(_FIELDS)}, not {dataset!r}")
    return dataset
