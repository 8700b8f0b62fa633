"""Errors meant for users: the CLI prints their message as one line (problem and fix), no traceback."""

import os


class UserError(Exception):
    """Bad input from the user (unknown task, missing data, bad model path...)."""


class NonFiniteOutput(RuntimeError):
    """The model produced NaN or infinite logits or log-probabilities (diverged or corrupt weights).

    Raised wherever model outputs become numbers (scoring, generation, companions, the loss), so the
    unit fails with this reason: a score that was not measured is never reported, least of all as 0."""


def require_finite(values, what: str) -> None:
    """Raise ``NonFiniteOutput`` naming ``what`` when any of ``values`` is NaN or infinite."""
    import math

    bad = sum(1 for value in values if not math.isfinite(value))
    if bad:
        raise NonFiniteOutput(f"{bad} non-finite {what} (NaN or inf): diverged or corrupt weights; check the checkpoint")


def check_whole_number(flag: str, value, minimum: int, fix: str) -> None:
    """A count the user gave (``--limit``, ``--loss-window``...) must be a whole number >= ``minimum``:
    checked before any model is loaded, so a bad value costs nothing and never runs half-right
    (``--limit -3`` would slice off the last three items)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{flag} {value!r}: must be a whole number >= {minimum}; {fix}")


def check_run_values(
    *, limit=None, num_fewshot=None, batch_size=None, loss_window=None, loss_tokens=None, names: dict | None = None
) -> None:
    """The counts ``harness eval`` and ``harness sweep`` share.  ``names``: how the user wrote each
    (a sweep config says ``limit:``), default the flag."""
    names = {"limit": "--limit", "num_fewshot": "--num-fewshot", "batch_size": "--batch-size",
             "loss_window": "--loss-window", "loss_tokens": "--loss-tokens", **(names or {})}
    check_whole_number(names["limit"], limit, 1, "it is the number of items per task; leave it out to score every item")
    check_whole_number(names["num_fewshot"], num_fewshot, 0, "0 is zero-shot; leave it out for the task's own number of shots")
    if batch_size != "auto":
        check_whole_number(names["batch_size"], batch_size, 1, "pass a positive number of sequences per forward, or auto")
    check_whole_number(names["loss_window"], loss_window, 2, "a window needs a token to predict the next from, e.g. 2048")
    check_whole_number(names["loss_tokens"], loss_tokens, 2, "the corpus tokens to score, e.g. 1000000")


# ---------------------------------------------------------------------- typed settings
#
# A sweep YAML or a Python API argument whose type is wrong is refused with one line naming the key
# and the type it needs: bool("false") is True, so a quoted "false" must never reach the run.

_KIND_NAMES = {
    "boolean": "a boolean (true or false, unquoted)",
    "boolean or null": "a boolean (true or false, unquoted) or null",
    "count": "a whole number",
    "count or auto": "a whole number or 'auto'",
    "string": "a string",
    "string list": "a string or a list of strings",
    "number": "a number",
    "path": "a path (a string)",
}


def describe_value(value) -> str:
    """How a message shows a wrong value: its repr and, where the repr hides it, its type."""
    kind = {bool: "boolean", int: "whole number", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if not isinstance(value, (list, dict)) else kind


def check_type(key: str, value, kind: str, where: str = "") -> None:
    """Raise a one-line ``UserError`` unless ``value`` is of ``kind`` (a key of ``_KIND_NAMES``); None
    always passes (a setting left out).  ``where``: the file or call it came from, e.g. ``sweep.yaml: ``."""
    if value is None:
        return
    ok = {
        "boolean": lambda v: isinstance(v, bool),
        "boolean or null": lambda v: isinstance(v, bool),
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "count or auto": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or v == "auto",
        "string": lambda v: isinstance(v, str),
        "string list": lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "path": lambda v: isinstance(v, (str, os.PathLike)),
    }[kind](value)
    if not ok:
        hint = ("; write true or false without quotes" if kind.startswith("boolean")
                else "; quote it" if kind in ("string", "path") and isinstance(value, (int, float)) else "")
        raise UserError(f"{where}{key} must be {_KIND_NAMES[kind]}, got {describe_value(value)}{hint}")


# ---------------------------------------------------------------------- paths given by the user


def check_out_dir(path, flag: str = "--out") -> None:
    """``path`` is, or can become, a folder this process can write to: checked before any work, so a
    bad ``--out`` costs nothing.  Tried for real (permission bits do not tell root, or a read-only
    mount, apart): the missing folders are made, a temporary file is opened in it, and what the check
    made is removed again, so a command that fails later leaves nothing behind."""
    import tempfile
    from pathlib import Path

    path = Path(path).expanduser()
    missing = []
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file" if parent == path else f"is under the file {parent}"
                raise UserError(f"{flag} {path} {where}; pass a folder (it is created when missing)")
            break
        missing.append(parent)
    try:
        for attempt in range(5):
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path, prefix=".harness-write-check-"):
                    pass
                break
            except FileNotFoundError:  # another process of a launch removed its own check's folder meanwhile
                if attempt == 4:
                    raise
    except OSError as error:
        raise UserError(f"{flag} {path} is not a folder you can write to ({error.strerror or error}); "
                        "pass another folder") from None
    finally:
        for folder in missing:  # deepest first; one another process has written into meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                break


def check_output_file(path, flag: str = "--output") -> None:
    """``path`` is a file to write (not a folder) whose folder is writable."""
    from pathlib import Path

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file name, e.g. {path / 'table.csv'}")
    check_out_dir(path.parent if str(path.parent) else Path("."), f"{flag} {path}: its folder")


def check_input_file(path, flag: str, what: str) -> None:
    """``path`` is an existing, readable file (not a folder): ``what`` says what it should be."""
    from pathlib import Path

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass {what}")
    if not path.is_file():
        raise UserError(f"{flag} {path} does not exist; pass {what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag} {path} cannot be read (permission denied); pass {what}")


def check_input_dir(path, flag: str, what: str) -> None:
    """``path`` is an existing folder (not a file)."""
    from pathlib import Path

    path = Path(path).expanduser()
    if path.is_file():
        raise UserError(f"{flag} {path} is a file; pass {what}")
    if not path.is_dir():
        raise UserError(f"{flag} {path} does not exist; pass {what}")


def not_utf8(path, error: UnicodeDecodeError, fix: str = "save it as UTF-8") -> UserError:
    """The one-line error of a text file that is not UTF-8: the file, the byte offset, the fix."""
    return UserError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); {fix}")
