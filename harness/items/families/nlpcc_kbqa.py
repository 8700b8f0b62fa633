"""NLPCC-KBQA: Chinese open-domain questions answered closed book by greedy generation, exact match.

The release is plain text (CRLF line ends), four lines per question::

    <question id=N>\t<question>
    <triple id=N>\t<subject> ||| <predicate> ||| <object>
    <answer id=N>\t<answer>
    ==================================================

read from ``--data-dir``/nlpcc_kbqa/nlpcc-iccpol-2016.kbqa.{training,testing}-data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.items import fewshot, sources
from harness.items.registry import TaskSelection, load_prompt, single_row_spec
from harness.requests import Item
from harness.spec import BuildOptions

LAYOUT = "--data-dir DIR expects nlpcc_kbqa/nlpcc-iccpol-2016.kbqa.{training,testing}-data (as released by NLPCC-ICCPOL 2016)"
_FIELD = re.compile(r"<(question|triple|answer) id=(\d+)>\t(.*)")


def read_kbqa(path: Path) -> list[dict[str, Any]]:
    """Records ``{"id", "question", "triple", "answer"}`` in file order."""
    records: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with open(path, encoding="utf-8") as f:  # universal newlines: the release's CRLF become "\n"
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("==="):
                if set(current) != {"id", "question", "triple", "answer"}:
                    raise UserError(f"{path}:{line_no}: an item without its question, triple and answer lines; {LAYOUT}")
                records.append(current)
                current = {}
                continue
            match = _FIELD.fullmatch(line)
            if match is None:
                raise UserError(f"{path}:{line_no}: expected <question|triple|answer id=N><TAB>text; {LAYOUT}")
            field, number, text = match.group(1), int(match.group(2)), match.group(3)
            if current.setdefault("id", number) != number:
                raise UserError(f"{path}:{line_no}: id {number} inside item {current['id']}; {LAYOUT}")
            current[field] = text
    if current:
        raise UserError(f"{path}: the last item has no closing line of '=' signs; {LAYOUT}")
    return records


def kbqa_records(split: str, opts: BuildOptions) -> list[dict[str, Any]]:
    if opts.data_dir is None:
        raise UserError(f"nlpcc_kbqa is read from local files only (no Hub copy); {LAYOUT}")
    path = Path(opts.data_dir) / "nlpcc_kbqa" / f"nlpcc-iccpol-2016.kbqa.{split}-data"
    sources.require_files([path], LAYOUT)
    return read_kbqa(path)


def build_rows(selection: TaskSelection, opts: BuildOptions) -> dict[str, list[Item]]:
    spec = single_row_spec(selection, opts)
    prompt = load_prompt(spec.prompt)
    shots = spec.num_fewshot
    training = kbqa_records(spec.fewshot_split, opts) if shots else []
    pool = [training[i] for i in fewshot.first_k(len(training), shots)]
    if len(pool) < shots:
        raise UserError(f"{spec.name}: {shots} shots asked but the {spec.fewshot_split} file has {len(pool)} questions; lower --num-fewshot")
    header = "".join(prompt["exemplar"].format_map(_fields(ex)) + prompt["fewshot_delimiter"] for ex in pool)
    items = []
    for doc_id, record in enumerate(kbqa_records(spec.split, opts)[: opts.limit]):
        fields = _fields(record)
        items.append(
            Item(
                task=spec.name,
                doc_id=doc_id,
                context=header + prompt["question"].format_map(fields),
                targets=(fields["answer"],),
                stop=tuple(prompt["stop"]),
                max_new_tokens=spec.max_new_tokens,
                meta={"id": record["id"], "triple": record["triple"]},
            )
        )
    return {spec.name: items}


def _fields(record: dict[str, Any]) -> dict[str, str]:
    return {"question": record["question"].strip(), "answer": record["answer"].strip()}
