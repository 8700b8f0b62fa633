"""Where a checkpoint's pre-training loss comes from, besides computing it on a corpus (``harness.engine.loss``):
the HF Trainer's ``trainer_state.json`` saved in the checkpoint, or a step/loss log file (CSV/TSV).

Every loss carries its ``source`` so a table never mixes a training loss with a held-out one unseen:
``corpus``, ``trainer-state`` (training loss), ``trainer-state:eval`` (``eval_loss``), ``file:<name>``.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError, check_input_file, check_run_values, check_whole_number, not_utf8

TRAINER_STATE_NAME = "trainer_state.json"
_STEP_COLUMNS = ("step", "_step", "global_step", "iteration", "iter", "steps")


@dataclass(frozen=True)
class LossSettings:
    """How a run gets each checkpoint's loss (one of corpus / trainer-state / file / trainer)."""

    kind: str  # "corpus" | "trainer-state" | "trainer-state:eval" | "file" | "trainer"
    corpus: Path | None = None  # kind "corpus"
    window: int = 2048
    tokens: int = 1_000_000
    file: Path | None = None  # kind "file": a .csv or .tsv step/loss log
    smoothing: int = 1  # kind "file": mean over the logged steps in (step - smoothing, step]
    # kind "trainer": the training loss a running Trainer last logged (harness.EvalCallback), and its step
    value: float | None = None
    logged_step: int | None = None

    @property
    def needs_model(self) -> bool:
        return self.kind == "corpus"


def loss_settings(
    *, corpus: Path | None = None, loss_from: str | None = None, window: int = 2048, tokens: int = 1_000_000,
    smoothing: int = 1,
) -> LossSettings | None:
    """Settings from the CLI/config options (``--loss-corpus`` or ``--loss-from``); None when neither is given."""
    if corpus is not None and loss_from is not None:
        raise UserError("pass either --loss-corpus or --loss-from, not both")
    check_whole_number("--loss-smoothing (loss: smoothing:)", smoothing, 1, "the logged steps averaged into one loss")
    check_run_values(loss_window=window, loss_tokens=tokens,
                     names={"loss_window": "--loss-window (loss: window:)", "loss_tokens": "--loss-tokens (loss: tokens:)"})
    if corpus is not None:
        check_corpus(Path(corpus))
        return LossSettings("corpus", corpus=Path(corpus), window=window, tokens=tokens)
    if loss_from is None:
        return None
    if loss_from in ("trainer-state", "trainer-state:eval"):
        return LossSettings(loss_from)
    path = Path(loss_from)
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise UserError(
            f"--loss-from {loss_from!r}: pass trainer-state, trainer-state:eval, or a .csv/.tsv file of step and loss"
        )
    check_input_file(path, "--loss-from", "a .csv/.tsv file of step and loss")
    if not read_loss_log(path).steps:  # its header and every row checked now, before any checkpoint is looked at
        raise UserError(f"--loss-from {path} has a header but no step/loss rows; pass the log with its rows")
    return LossSettings("file", file=path, smoothing=smoothing)


def check_corpus(path: Path) -> None:
    """The loss corpus is usable, checked before any model loads: a readable ``.txt`` or ``.jsonl``
    file in UTF-8, every ``.jsonl`` line an object with a string ``text`` field, and some text in it,
    read by ``engine.loss.read_corpus``, the reader the loss unit uses."""
    check_input_file(path, "--loss-corpus", "a .txt or .jsonl file (one JSON object with a 'text' field per line)")
    from harness.engine.loss import read_corpus

    if not any(doc.strip() for doc in read_corpus(path, "--loss-corpus")):
        raise UserError(f"--loss-corpus {path} holds no text; pass a held-out corpus with text in it")


def trainer_state_loss(checkpoint: Path, step: int | None, *, use_eval: bool = False) -> dict[str, Any]:
    """The loss the HF Trainer logged at ``step`` or, when it logged none there, nearest before it
    (training ``loss``, or ``eval_loss`` with ``use_eval``), read from the checkpoint's
    ``trainer_state.json``.  The step defaults to the state's own ``global_step``."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise UserError(f"{path} does not exist; --loss-from trainer-state needs HF Trainer checkpoints")
    state = json.loads(path.read_text(encoding="utf-8"))
    if step is None:
        step = state.get("global_step")
    field = "eval_loss" if use_eval else "loss"
    logged = [(entry["step"], entry[field]) for entry in state.get("log_history", []) if field in entry and "step" in entry]
    before = [(s, v) for s, v in logged if step is None or s <= step]
    source = "trainer-state:eval" if use_eval else "trainer-state"
    if not before:
        return {"loss": None, "source": source, "note": f"no {field} logged at or before step {step}"}
    logged_step, value = max(before, key=lambda pair: pair[0])
    return {"loss": float(value), "source": source, "logged_step": logged_step}


@dataclass(frozen=True)
class LossLog:
    """A step/loss log: Pythia's ``train/lm_loss<TAB>step`` files, W&B exports, Megatron logs as CSV."""

    path: Path
    column: str  # the loss column read
    steps: tuple[int, ...]  # ascending
    losses: tuple[float, ...]


def read_loss_log(path: Path) -> LossLog:
    """Read a .csv (comma) or .tsv (tab) file with a header: a step column (``step``, ``_step``,
    ``global_step``, ``iteration``, ``iter``) and the first column whose name holds ``loss``."""
    path = Path(path)
    try:
        return _read_loss_log(path)
    except UnicodeDecodeError as error:
        raise not_utf8(f"--loss-from {path}", error) from None


def _read_loss_log(path: Path) -> LossLog:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = [name.strip() for name in next(reader, [])]
        lowered = [name.lower() for name in header]
        step_col = next((lowered.index(n) for n in _STEP_COLUMNS if n in lowered), None)
        loss_col = next((i for i, name in enumerate(lowered) if "loss" in name), None)
        if step_col is None or loss_col is None:
            raise UserError(
                f"{path} header {header} needs a step column ({', '.join(_STEP_COLUMNS)}) and a column "
                "whose name holds 'loss'"
            )
        pairs = []
        for number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            try:
                pairs.append((int(float(row[step_col])), float(row[loss_col])))
            except (ValueError, IndexError):
                raise UserError(f"{path} line {number} is not a step and a loss: {row}; fix or remove it") from None
    pairs.sort()
    return LossLog(path, header[loss_col], tuple(s for s, _ in pairs), tuple(v for _, v in pairs))


def logged_loss(log: LossLog, step: int | None, smoothing: int = 1) -> dict[str, Any]:
    """Mean of the losses logged at steps in ``(step - smoothing, step]``: the training loss is noisy
    step to step, and a window before the checkpoint never looks at steps it had not trained on."""
    source = f"file:{log.path.name}"
    if step is None:
        return {"loss": None, "source": source, "note": "the checkpoint name carries no step"}
    lo = bisect.bisect_right(log.steps, step - smoothing)
    hi = bisect.bisect_right(log.steps, step)
    window = log.losses[lo:hi]
    record: dict[str, Any] = {"source": source, "file": str(log.path), "column": log.column, "smoothing": smoothing}
    if not window:
        return {**record, "loss": None, "note": f"no loss logged in steps {step - smoothing + 1}..{step}"}
    return {**record, "loss": math.fsum(window) / len(window), "steps_averaged": len(window)}
