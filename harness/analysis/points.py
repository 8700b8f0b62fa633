"""The report's input: one row per checkpoint × task × metric, from a results folder or a table file.

    results folder ─► ``table.results_table`` ┐
    TABLE.csv / TABLE.parquet (``harness table``, or hand-made) ┴─► ``prepare_points`` ─► points + series

A *series* is one model's curve: every checkpoint of one model (``EleutherAI/pythia-160m`` and
``EleutherAI/pythia-160m-deduped`` are two series, although they share the size ``160m``). The
size decides a series' colour and its place in the order; variants of one size are told apart by
line style.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.table import COLUMNS, one_configuration, results_table

# A folder that is only a checkpoint name (HF Trainer, Pythia, DeepSpeed, Megatron), nothing else in it
CHECKPOINT_FOLDER = re.compile(r"^(?:step[-_]?|checkpoint[-_]|global_step|iter_)\d+$", re.IGNORECASE)
POINT_COLUMNS = ["task", "parent", "metric", "series", "series_label", "size_group", "model", "revision", "step",
                 "params_non_embedding", "loss", "loss_source", "compute", "value", "stderr", "n", "random_baseline", "higher_is_better"]
# What the analysis cannot do without; every other column of `harness table` may be absent from a table file.
REQUIRED_COLUMNS = ("model", "task", "metric", "value")
TABLE_SUFFIXES = (".csv", ".parquet")
POOLED = "all models"  # the scope of a number computed over every model's checkpoints together


@dataclass(frozen=True)
class Points:
    frame: pd.DataFrame  # POINT_COLUMNS
    order: tuple[str, ...]  # series, smallest size first; variants of a size by name
    notes: tuple[str, ...]


# Columns of a table file that must hold numbers (or nothing: a value not measured, a failed row)
NUMERIC_COLUMNS = ("value", "loss")


def read_results(path: Path) -> pd.DataFrame:
    """What ``harness report PATH`` analyses: a results folder, or a table file with ``harness table``'s columns."""
    path = Path(path)
    if path.is_dir():
        check_results_files(path)
        return results_table(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a results folder or a table written by `harness table`")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"{path} is neither a results folder nor a table: pass a folder, or a .csv / .parquet "
                        "written by `harness table --format csv|parquet`")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save the table as UTF-8") from None
    except Exception as error:  # noqa: BLE001 - any parse failure is the user's file, said in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"{path} could not be read as a table ({type(error).__name__}: {first})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; a table needs at least "
                        f"{', '.join(REQUIRED_COLUMNS)} (the columns of `harness table`)")
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            _check_numeric(path, frame, column)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


def _check_numeric(path: Path, frame: pd.DataFrame, column: str) -> None:
    """Every non-empty cell of ``column`` is a number: a typo must not become a silent NaN (a value
    that was never measured), so the count and the first bad row are named."""
    cells = frame[column]
    numbers = pd.to_numeric(cells, errors="coerce")
    blank = cells.isna() | cells.astype("string").str.strip().eq("").fillna(False)
    bad = numbers.isna() & ~blank
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        row = f"line {first + 2}" if path.suffix.lower() == ".csv" else f"row {first + 1}"
        raise UserError(f"{path}: {int(bad.sum())} cell(s) of column {column!r} are not numbers, the first "
                        f"{cells.iloc[first]!r} at {row}; fix them or leave them empty (not measured)")


def check_results_files(root: Path) -> int:
    """Every results file under ``root`` (and every unit file a sweep left there) is a readable JSON
    object of our schema: a garbage file is one line naming it, not a traceback half-way through a table.
    Returns how many files were checked."""
    import json

    from harness import store

    root = Path(root)
    # a run's unit files, and the results.json view rebuilt from them, are the store's to judge: a
    # damaged one counts as missing there (store.read_unit_files), and the table lists it as unreadable
    paths = store.find_results(root) if root.is_file() else [
        p for p in root.rglob(store.RESULTS_NAME) if not (p.parent / store.UNITS_DIR).is_dir()]
    for file in paths:
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise UserError(f"{file} is not UTF-8 text (byte {error.start}: {error.reason}); "
                            "rerun the command that wrote it, or move the file away") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{file} is not a results file (not JSON: {error.msg} at line {error.lineno}); "
                            "rerun the command that wrote it, or move the file away") from None
        except OSError as error:
            raise UserError(f"{file} cannot be read ({error.strerror}); check its permissions") from None
        shape = _results_shape_problem(data)
        if shape:
            raise UserError(f"{file} is not a results file ({shape}); rerun the command that wrote it, or move it away")
    # a run's folders count too: one still running (or killed) may have no readable results.json yet
    return len(paths) if root.is_file() else len(store.find_checkpoint_dirs(root))


def _results_shape_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key in ("tasks", "model", "loss"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"its {key!r} is a {type(data[key]).__name__}, not an object"
    if "failures" in data and not isinstance(data["failures"], list):
        return "its 'failures' is not a list"
    for name, entry in (data.get("tasks") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics", {}), dict):
            return f"its task {name!r} is not an object with metrics"
    return None


def series_of(model: str, revision: str | None) -> str:
    """The model a checkpoint belongs to. A local checkpoint folder named by its step
    (``runs/tiny/checkpoint-500``, no revision) belongs to its run folder (``runs/tiny``), so that a
    sweep over one run's folders draws one line, not one per checkpoint."""
    path = Path(str(model).rstrip("/\\"))
    if (revision is None or pd.isna(revision)) and CHECKPOINT_FOLDER.match(path.name) and str(path.parent) not in ("", "."):
        return str(path.parent)
    return str(model)


def short_name(model: str) -> str:
    return re.split(r"[\\/]", str(model).rstrip("/\\"))[-1] or str(model)


def params_label(count: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:.0f}"


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    # float64, not the table's nullable Int64: numpy turns pd.NA into nan only from a float column
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _size_groups(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per series: its size group (the size label, else its parameter count, else itself) and its parameters."""
    params = frame.groupby("series")["params_non_embedding"].median()
    sizes = frame.groupby("series")["size"].agg(lambda s: next((str(v) for v in s if pd.notna(v)), None))
    groups = {}
    for series in params.index:
        if sizes[series] is not None:
            groups[series] = sizes[series]
        elif np.isfinite(params[series]):
            groups[series] = params_label(params[series])
        else:
            groups[series] = series
    return pd.Series(groups), params


def prepare_points(frame: pd.DataFrame) -> Points:
    """Rows of successful checkpoints with their series (model), size group and training compute."""
    notes: list[str] = []
    frame = frame.copy()
    if "status" in frame.columns:
        status = frame["status"].astype("string").str.lower()
        failed = status.eq("failed").fillna(False)
        if failed.any():
            notes.append(f"{int(failed.sum())} failed evaluations (checkpoint × task) are ignored")
        # a unit a time budget cut scored only some of its items: not the checkpoint's number
        partial = status.isin(["partial", "unreadable"]).fillna(False)
        if partial.any():
            notes.append(f"{int(partial.sum())} rows of partial or unreadable units are ignored (rerun to finish them)")
        frame = frame[~failed & ~partial]
    cells = [c for c in ("model", "revision", "step", "task", "metric") if c in frame.columns]
    kept = one_configuration(frame, cells)
    if len(kept) < len(frame):
        notes.append(f"{len(frame) - len(kept)} rows of other configurations (shots, limit, task data) of the same "
                     "checkpoint and task are left out: each curve shows the one its folder's last run asked for; "
                     "filter the table (latest, unit_key) to report another")
        frame = kept
    for column in ("loss", "value", "stderr", "n", "random_baseline", "params_non_embedding", "step"):
        frame[column] = _numbers(frame, column)
    for column in ("size", "loss_source"):
        if column not in frame.columns:
            frame[column] = None
    frame = frame[frame["value"].notna()]
    if frame.empty:
        raise UserError("the results hold no metric values to report (every checkpoint failed?); rerun the sweep")
    frame["higher_is_better"] = frame["higher_is_better"].map(
        lambda v: True if pd.isna(v) else str(v).strip().lower() not in ("false", "0", "0.0"))

    frame["series"] = [series_of(model, revision) for model, revision in zip(frame["model"], frame["revision"])]
    groups, params = _size_groups(frame)
    frame["size_group"] = frame["series"].map(groups)
    order = tuple(sorted(params.index, key=lambda s: (np.nan_to_num(params[s], nan=np.inf), groups[s], s)))
    labels = {s: short_name(s) + (f" ({params_label(params[s])})" if np.isfinite(params[s]) else "") for s in order}
    if len(set(labels.values())) < len(labels):  # two runs whose folders end alike: the whole path tells them apart
        labels = {s: s + (f" ({params_label(params[s])})" if np.isfinite(params[s]) else "") for s in order}
    frame["series_label"] = frame["series"].map(labels)

    if _numbers(frame, "compute").notna().any():
        frame["compute"] = _numbers(frame, "compute")
    elif _numbers(frame, "tokens_seen").notna().any():
        # 6·N·D with N the non-embedding parameters (Kaplan et al.'s convention) and D the tokens seen
        frame["compute"] = 6.0 * frame["params_non_embedding"] * _numbers(frame, "tokens_seen")
    else:
        frame["compute"] = np.nan
        notes.append("no tokens_seen or compute in the results: the figure against training compute is skipped")

    proxies = sorted({str(s) for s in frame["loss_source"].dropna() if str(s).startswith("task:")})
    if proxies:
        notes.append(f"the loss axis is a proxy, ln({proxies[0].removeprefix('task:')}) at each checkpoint, not the "
                     "pre-training loss: it orders checkpoints by how well they model that text")
    if frame["loss"].isna().all():
        notes.append("no pre-training loss in these results (results imported with `harness import-lm-eval` have none): "
                     "figures are drawn against step and compute, and no threshold or loss correlation is computed")
    elif frame["loss"].isna().any():
        missing = frame.loc[frame["loss"].isna(), ["series", "revision", "step"]].drop_duplicates()
        notes.append(f"{len(missing)} checkpoints without a pre-training loss are left out of the loss figure, "
                     "correlations and thresholds")
    return Points(frame[POINT_COLUMNS].reset_index(drop=True), order, tuple(notes))
