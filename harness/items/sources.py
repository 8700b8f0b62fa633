"""Where evaluation rows come from: local copies under ``--data-dir`` or the Hugging Face Hub.

Local copies are laid out exactly like the upstream releases (the ``../shared/data`` layout)::

    mmlu/{dev,val,test}/<subject>_{dev,val,test}.csv     headerless: question,A,B,C,D,answer-letter
    ceval/{dev,val,test}/<subject>_{dev,val,test}.csv    header id,question,A,B,C,D,answer[,explanation]
    ceval/subject_mapping.json                           subject -> [English, Chinese, category]
    gsm8k/{train,test}.jsonl                             {"question", "answer"}

Without ``--data-dir`` the rows come from the Hub datasets lm-evaluation-harness 0.4.13 reads
(``cais/mmlu``, ``ceval/ceval-exam``, ``openai/gsm8k``), resolved through the normal Hub cache so
``HF_HUB_OFFLINE=1`` works once they are cached.  Either way a loader returns the same record
dicts, in file (row) order, so ``doc_id`` is the same position whichever source was used:

    mmlu   {"question", "subject", "choices": [4 str], "answer": int 0-3}   (cais/mmlu columns)
    ceval  {"id": int, "question", "A", "B", "C", "D", "answer": letter, "explanation"}
    gsm8k  {"question", "answer"}
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.spec import BuildOptions, TaskSpec

MMLU_LAYOUT = "--data-dir DIR expects mmlu/{dev,val,test}/<subject>_{dev,val,test}.csv (headerless CSV as released)"
CEVAL_LAYOUT = (
    "--data-dir DIR expects ceval/{dev,val,test}/<subject>_{dev,val,test}.csv and ceval/subject_mapping.json"
    " (as released by C-Eval)"
)
GSM8K_LAYOUT = "--data-dir DIR expects gsm8k/{train,test}.jsonl (as released in openai/grade-school-math)"

_LETTERS = ("A", "B", "C", "D")
_CEVAL_COLUMNS = ("id", "question", "A", "B", "C", "D", "answer", "explanation")
_SHOWN_MISSING = 3  # how many missing paths a one-line error names before "+N more"
# How a Hub error ends: the way around a missing cache.  Datasets with no --data-dir layout (ARC,
# HellaSwag, TriviaQA) can only be cached from the Hub, so --data-dir is no advice for them.
LOCAL_COPY_FIX = "pass --data-dir DIR with local copies"
HUB_ONLY_FIX = "connect to the Hub once to cache it (it has no --data-dir copy)"


# --- checks ------------------------------------------------------------------------------------


def require_files(paths: list[Path], hint: str) -> None:
    """Raise a one-line ``UserError`` naming the missing ``paths`` (first few and a count), then ``hint``.

    Call it with every file a task will read before reading any, so one run reports all of them.
    """
    missing = [p for p in paths if not Path(p).is_file()]
    if not missing:
        return
    shown = ", ".join(str(p) for p in missing[:_SHOWN_MISSING])
    more = f" (+{len(missing) - _SHOWN_MISSING} more)" if len(missing) > _SHOWN_MISSING else ""
    raise UserError(f"missing {len(missing)} of {len(paths)} data files: {shown}{more}; {hint}")


# --- local readers -----------------------------------------------------------------------------


def read_mmlu_csv(path: Path, subject: str) -> list[dict[str, Any]]:
    """Rows of a headerless MMLU CSV as cais/mmlu records (``choices`` list, ``answer`` index)."""
    records = []
    # csv (not pandas): cells such as "None", "1.0" or "True" must stay the exact strings.
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if len(row) != 6 or row[5].strip() not in _LETTERS:
                raise UserError(f"{path}:{line_no}: expected question,A,B,C,D,answer-letter; got {len(row)} cells")
            records.append(
                {"question": row[0], "subject": subject, "choices": row[1:5], "answer": _LETTERS.index(row[5].strip())}
            )
    return records


def read_ceval_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a C-Eval CSV as ceval-exam records; columns a split lacks (explanation, answer) are ""."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        absent = {"id", "question", "A", "B", "C", "D"} - set(reader.fieldnames or ())
        if absent:
            raise UserError(f"{path}: missing C-Eval column(s) {', '.join(sorted(absent))}")
        return [_ceval_record(row) for row in reader]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line, in file order; a malformed line is a one-line UserError."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{line_no}: not valid JSON ({error.msg}); the file needs one JSON object per line") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{line_no}: a {type(record).__name__}, not a JSON object; the file needs one object per line")
            records.append(record)
    return records


def _ceval_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {column: ("" if row.get(column) is None else row[column]) for column in _CEVAL_COLUMNS}
    record["id"] = int(record["id"])
    return record


# --- the Hub -----------------------------------------------------------------------------------


def hub_split_records(repo_id: str, config: str | None, split: str, revision: str | None) -> list[dict[str, Any]]:
    """Rows of one config/split of a Hub dataset, read from its parquet files in row order.

    Files are ``<config>/<split>-*.parquet`` (the Hub's standard parquet layout) or, for a
    dataset without config folders, ``data/<split>-*.parquet``.  Column names are the Hub's.
    """
    return hub_splits_records(repo_id, [(config, split)], revision)[(config, split)]


def hub_splits_records(
    repo_id: str, wanted: list[tuple[str | None, str]], revision: str | None, fix: str = LOCAL_COPY_FIX
) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """``hub_split_records`` for several (config, split) pairs with a single snapshot resolution.

    One ``snapshot_download`` for all of MMLU's 57 subjects avoids 114 Hub round trips.  ``fix``
    ends the error when the data cannot be had (``HUB_ONLY_FIX`` for datasets with no local layout).
    """
    patterns = sorted({p for config, split in wanted for p in _split_patterns(config, split)})
    folder = _hub_snapshot(repo_id, patterns, revision, fix)
    if revision is None and not all(_split_files(folder, config, split) for config, split in wanted):
        # A dataset whose main branch holds a loading script (EleutherAI/logiqa, older super_glue):
        # the Hub's own parquet conversion of it lives on this branch, as <config>/<split>/NNNN.parquet.
        try:
            folder = _hub_snapshot(repo_id, patterns, PARQUET_BRANCH, fix)
        except UserError:
            pass  # not converted (or not cached): the error below names the main branch's folder
    tables = {}
    for config, split in wanted:
        files = _split_files(folder, config, split)
        if not files:
            raise UserError(
                f"dataset {repo_id} (config {config}, split {split}) has no cached parquet files in {folder};"
                f" {'connect to the Hub once, or ' + fix if fix == LOCAL_COPY_FIX else fix}"
            )
        tables[(config, split)] = _read_parquet_rows(files)
    return tables


PARQUET_BRANCH = "refs/convert/parquet"


def hub_rows_and_shot_pool(spec: TaskSpec, opts: BuildOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A Hub-only task's evaluation rows and the rows its ``spec.num_fewshot`` shots are drawn from
    (empty for zero-shot), in Hub order."""
    shots = spec.num_fewshot
    if shots and not spec.fewshot_split:
        raise UserError(f"{spec.name} has no split to draw {shots} shots from; pass --num-fewshot 0")
    splits = [spec.split] + ([spec.fewshot_split] if shots and spec.fewshot_split != spec.split else [])
    tables = hub_splits_records(spec.hub_path, [(spec.hub_name, split) for split in splits], opts.hub_revision, HUB_ONLY_FIX)
    rows = tables[(spec.hub_name, spec.split)]
    pool = tables[(spec.hub_name, spec.fewshot_split)] if shots else []
    if shots > len(pool):
        raise UserError(
            f"{spec.name}: {shots} shots asked but the {spec.fewshot_split} split has {len(pool)} rows; lower --num-fewshot"
        )
    return rows, pool


def _split_patterns(config: str | None, split: str) -> list[str]:
    patterns = [f"data/{split}-*.parquet", f"{config or 'default'}/{split}/*.parquet"]
    if config:
        patterns.insert(0, f"{config}/{split}-*.parquet")
    return patterns


def _split_files(folder: Path, config: str | None, split: str) -> list[Path]:
    # Shards are named <split>-00000-of-0000N.parquet (or NNNN.parquet on the parquet branch):
    # sorting the names keeps row order.
    candidates = [folder / "data", folder / (config or "default") / split]
    if config:
        candidates.insert(0, folder / config)
    for place in candidates:
        pattern = "*.parquet" if place.name == split else f"{split}-*.parquet"
        files = sorted(place.glob(pattern))
        if files:
            return files
    return []


def _hub_snapshot(repo_id: str, patterns: list[str], revision: str | None, fix: str = LOCAL_COPY_FIX) -> Path:
    # Imported here: runs on local copies never need the Hub client.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, ConnectionError) as error:
        at = f" at revision {revision}" if revision else ""
        raise UserError(
            f"dataset {repo_id}{at} is not in the Hub cache and the Hub could not be reached"
            f" ({type(error).__name__}); {fix}"
        ) from error


def _read_parquet_rows(files: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for file in files:
        rows.extend(pq.read_table(file).to_pylist())
    return rows


# --- one loader per dataset: local or Hub, same records ------------------------------------------


def mmlu_records(
    subjects: list[str], splits: list[str], opts: BuildOptions, hub_path: str = "cais/mmlu", hub_name: str = "{subject}"
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """MMLU records keyed by (subject, split); split names are the local ones ("dev", "val", "test").

    On the Hub each subject is the config ``hub_name.format(subject=...)``.
    """
    if opts.data_dir is not None:
        root = Path(opts.data_dir) / "mmlu"
        paths = {(s, sp): root / sp / f"{s}_{sp}.csv" for s in subjects for sp in splits}
        require_files(list(paths.values()), MMLU_LAYOUT)
        return {key: read_mmlu_csv(path, key[0]) for key, path in paths.items()}
    hub_split = {"val": "validation"}  # cais/mmlu names the local "val" split "validation"
    keys = {(s, sp): (hub_name.format(subject=s), hub_split.get(sp, sp)) for s in subjects for sp in splits}
    tables = hub_splits_records(hub_path, list(keys.values()), opts.hub_revision)
    return {key: [_mmlu_hub_record(r) for r in tables[hub_key]] for key, hub_key in keys.items()}


def _mmlu_hub_record(row: dict[str, Any]) -> dict[str, Any]:
    return {"question": row["question"], "subject": row["subject"], "choices": list(row["choices"]), "answer": int(row["answer"])}


def ceval_subject_names(opts: BuildOptions, hub_table: dict[str, str]) -> dict[str, str]:
    """Subject -> Chinese name: from ``ceval/subject_mapping.json`` when local, else ``hub_table``."""
    if opts.data_dir is None:
        return dict(hub_table)
    path = Path(opts.data_dir) / "ceval" / "subject_mapping.json"
    require_files([path], CEVAL_LAYOUT)
    with open(path, encoding="utf-8") as f:
        mapping = json.load(f)
    return {subject: names[1] for subject, names in mapping.items()}


def ceval_records(
    subjects: list[str],
    splits: list[str],
    opts: BuildOptions,
    hub_path: str = "ceval/ceval-exam",
    hub_name: str = "{subject}",
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """C-Eval records keyed by (subject, split); the Hub and local split names agree (dev, val, test)."""
    if opts.data_dir is not None:
        root = Path(opts.data_dir) / "ceval"
        paths = {(s, sp): root / sp / f"{s}_{sp}.csv" for s in subjects for sp in splits}
        require_files(list(paths.values()), CEVAL_LAYOUT)
        return {key: read_ceval_csv(path) for key, path in paths.items()}
    keys = {(s, sp): (hub_name.format(subject=s), sp) for s in subjects for sp in splits}
    tables = hub_splits_records(hub_path, list(keys.values()), opts.hub_revision)
    return {key: [_ceval_record(r) for r in tables[hub_key]] for key, hub_key in keys.items()}


def gsm8k_records(
    splits: list[str], opts: BuildOptions, hub_path: str = "openai/gsm8k", hub_name: str = "main"
) -> dict[str, list[dict[str, Any]]]:
    """GSM8K records keyed by split ("train", "test")."""
    if opts.data_dir is not None:
        paths = {sp: Path(opts.data_dir) / "gsm8k" / f"{sp}.jsonl" for sp in splits}
        require_files(list(paths.values()), GSM8K_LAYOUT)
        return {sp: read_jsonl(path) for sp, path in paths.items()}
    tables = hub_splits_records(hub_path, [(hub_name, sp) for sp in splits], opts.hub_revision)
    return {sp: [{"question": r["question"], "answer": r["answer"]} for r in tables[(hub_name, sp)]] for sp in splits}


# --- data the user supplies (no public copy to bundle: ClozeT, GSM8K-Chinese) ---------------------


def user_task_records(task: str, split: str, opts: BuildOptions, fields_doc: str) -> list[dict[str, Any]]:
    """Rows of ``--task-file TASK=SOURCE``: a local ``.jsonl`` file (one JSON object per line), or a Hub
    dataset ``OWNER/NAME`` or ``OWNER/NAME:CONFIG`` whose ``split`` is read like any Hub split."""
    given = dict(opts.task_files)
    if task not in given:
        raise UserError(
            f"{task} has no bundled data (no public copy); pass --task-file {task}=PATH.jsonl"
            f" or --task-file {task}=OWNER/NAME (a Hub dataset) with rows {fields_doc}"
        )
    source = given[task]
    path = Path(source).expanduser()
    if path.is_file():
        return read_jsonl(path)
    if source.endswith(".jsonl") or "/" not in source or source.count("/") > 1:
        raise UserError(f"--task-file {task}={source}: no such file, and not a Hub id OWNER/NAME[:CONFIG]")
    repo_id, _, config = source.partition(":")
    return hub_split_records(repo_id, config or None, split, opts.hub_revision)
