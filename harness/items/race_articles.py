"""RACE articles in one record shape, from the released files or from lm-eval's Hub dataset.

Local (``--data-dir DIR``): ``race/test/{high,middle}/<n>.txt`` exactly as in ``RACE.tar.gz``, one
JSON object per file: ``{"article", "questions", "options" (4 per question), "answers" (letters),
"id"}``.  The canonical order is the files sorted by name (as strings: ``10001.txt`` < ``1006.txt``),
then the questions in file order.

Hub: ``EleutherAI/race``, the dataset lm-eval 0.4.13's ``race`` reads.  It holds only the ``high``
test set, one row per article: ``{"article", "problems"}`` where ``problems`` is the Python repr of
the article's questions ``[{"question", "answer", "options"}, ...]`` in file order.  It was made from
the per-question Hub ``race`` dataset by grouping questions on the article text, in the order
articles came out of the release tarball, and it keeps no file names.  So an article's questions,
options and answers are the same either way (no two RACE test files share an article text, so none
are merged), but the article order differs: from the Hub, ``doc_id`` follows the Hub's row order.

Every reader returns, per article: ``{"file": "high/1412.txt" | None, "article", "questions",
"options", "answers"}``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.items import sources
from harness.spec import BuildOptions

RACE_LAYOUT = "--data-dir DIR expects race/test/{high,middle}/*.txt (RACE's released files)"
_LETTERS = ("A", "B", "C", "D")


def race_articles(
    level: str,
    split: str,
    opts: BuildOptions,
    hub_path: str = "EleutherAI/race",
    hub_name: str = "{level}",
    hub_levels: tuple[str, ...] = ("high",),
) -> list[dict[str, Any]]:
    """The articles of one level and split, in canonical (local) or Hub order."""
    if opts.data_dir is not None:
        return read_race_folder(Path(opts.data_dir) / "race" / split / level)
    if level not in hub_levels:
        raise UserError(
            f"{hub_path} (lm-eval's RACE data) has no {level} level, only {', '.join(hub_levels)};"
            f" evaluate race:{level} with --data-dir DIR ({RACE_LAYOUT.removeprefix('--data-dir DIR expects ')})"
        )
    config = hub_name.format(level=level)
    rows = sources.hub_splits_records(hub_path, [(config, split)], opts.hub_revision)[(config, split)]
    return [hub_article(row) for row in rows]


def read_race_folder(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.txt`` of one RACE folder, sorted by file name."""
    files = sorted(folder.glob("*.txt"), key=lambda p: p.name) if folder.is_dir() else []
    if not files:
        raise UserError(f"no RACE files in {folder}; {RACE_LAYOUT}")
    return [read_race_file(path, f"{folder.name}/{path.name}") for path in files]


def read_race_file(path: Path, name: str) -> dict[str, Any]:
    """One released RACE file, checked: as many options lists and answers as questions, 4 options each."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not a RACE file (invalid JSON: {error.msg}); {RACE_LAYOUT}") from error
    return _checked({"file": name, **{key: data.get(key) for key in ("article", "questions", "options", "answers")}}, str(path))


def hub_article(row: dict[str, Any]) -> dict[str, Any]:
    """An EleutherAI/race row.  ``problems`` is a Python literal (single-quoted strings), read with
    ``ast.literal_eval`` as lm-eval does: it accepts literals only and runs no code."""
    problems = ast.literal_eval(row["problems"])
    return _checked(
        {
            "file": None,
            "article": row["article"],
            "questions": [p["question"] for p in problems],
            "options": [list(p["options"]) for p in problems],
            "answers": [p["answer"] for p in problems],
        },
        "EleutherAI/race row",
    )


def _checked(record: dict[str, Any], where: str) -> dict[str, Any]:
    questions, options, answers = record["questions"], record["options"], record["answers"]
    if not isinstance(record["article"], str) or not isinstance(questions, list) or not questions:
        raise UserError(f"{where}: expected an article and a list of questions; {RACE_LAYOUT}")
    if not (isinstance(options, list) and isinstance(answers, list) and len(options) == len(answers) == len(questions)):
        raise UserError(f"{where}: {len(questions)} questions need as many options lists and answers")
    for index, (choices, answer) in enumerate(zip(options, answers)):
        if len(choices) != 4 or answer not in _LETTERS:
            raise UserError(f"{where}: question {index} needs 4 options and an answer letter A-D")
    return record


def gold_index(record: dict[str, Any], question: int) -> int:
    return _LETTERS.index(record["answers"][question])
