"""Getting one checkpoint ready, in the background while the previous one is evaluated: its
identity, its folder, each unit's key, which units are finished, and the model when a pending unit
needs it.  What a run reads or computes once (loss corpora hashed, loss logs, tokenizers, prompt
encodings) is kept in ``RunInputs``."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.runs.loss_sources import TRAINER_STATE_NAME, LossLog, LossSettings, read_loss_log
from harness.runs.plan import PlannedCheckpoint, SweepPlan, check_folder_owner
from harness.runs.sweep_config import SweepConfig
from harness.runs.unit_files import is_finished
from harness.runs.units import (
    LOSS_UNIT,
    CheckpointIdentity,
    LossUnitRecord,
    checkpoint_identity,
    task_unit_record,
    unit_key,
)


@dataclass(frozen=True)
class InMemory:
    """A model already loaded (``harness.evaluate_model``): scored where it lies, never reloaded."""

    loaded: tuple[Any, Any, Any]  # (model, tokenizer, ModelInfo)
    # prompt encodings by tokenizer fingerprint, kept by the caller across calls (RunInputs)
    encodings: dict[str, dict[str, tuple[int, ...]]] | None = None

    @property
    def device(self) -> str:
        return model_device(self.loaded[0])


def model_device(model: Any) -> str:
    """Where a loaded model's weights are (its first parameter's device)."""
    first = next(model.parameters(), None)
    return str(first.device) if first is not None else "cpu"


@dataclass
class Prepared:
    """What the loader produced for one checkpoint."""

    planned: PlannedCheckpoint
    keys: dict[str, str]  # unit label -> key
    records: dict[str, Any]  # unit label -> its frozen record
    record_errors: dict[str, Exception]  # unit label -> why its record could not be made (it fails alone)
    pending: list[str]  # labels not finished yet
    skipped: list[str]
    loaded: tuple[Any, Any, Any] | None  # (model, tokenizer, ModelInfo) when a pending unit needs it
    load_error: Exception | None  # the weights could not be loaded: every pending unit fails with it
    load_seconds: float = 0.0
    request: dict[str, str] = field(default_factory=dict)  # label -> key of every unit of the run here, all shards'
    warnings: list[str] = field(default_factory=list)  # unreadable unit files found (counted as missing)


class RunInputs:
    """What a run reads or computes once, not once per checkpoint: loss corpora hashed, loss logs
    read (a Pythia loss log has 143,000 lines), tokenizers loaded and prompts tokenized (one of each
    per distinct tokenizer)."""

    def __init__(self, encodings: dict[str, dict[str, tuple[int, ...]]] | None = None) -> None:
        self._digests: dict[Path, str] = {}
        self._logs: dict[Path, LossLog] = {}
        self._encodings = encodings if encodings is not None else {}
        # tokenizers by the digest of their files: checkpoints of one run share one tokenizer object
        self.tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()  # the loader thread and the main thread both ask

    def encode_cache(self, tokenizer: Any, add_bos_token: bool | None) -> dict[str, tuple[int, ...]] | None:
        from harness.engine import tokenizer_fingerprint

        fingerprint = tokenizer_fingerprint(tokenizer, add_bos_token)
        if fingerprint is None:
            return None
        with self._lock:
            return self._encodings.setdefault(fingerprint, {})

    def digest(self, path: Path) -> str:
        with self._lock:
            if path not in self._digests:
                from harness.engine.models import file_sha256

                self._digests[path] = file_sha256(path)
            return self._digests[path]

    def log(self, path: Path) -> LossLog:
        with self._lock:
            if path not in self._logs:
                self._logs[path] = read_loss_log(path)
            return self._logs[path]


def loss_record(
    settings: LossSettings, planned: PlannedCheckpoint, identity: CheckpointIdentity, inputs: RunInputs,
) -> LossUnitRecord:
    from harness.engine.models import file_sha256

    checkpoint = planned.checkpoint
    common = {"checkpoint": identity, "step": checkpoint.step, "source": settings.kind}
    if settings.kind == "corpus":
        return LossUnitRecord(
            input_sha256=inputs.digest(settings.corpus), window=settings.window, tokens=settings.tokens, **common,
        )
    if settings.kind == "file":
        return LossUnitRecord(input_sha256=inputs.digest(settings.file), smoothing=settings.smoothing, **common)
    if settings.kind == "trainer":
        given = f"{settings.value!r}@{settings.logged_step}".encode("utf-8")
        return LossUnitRecord(input_sha256=hashlib.sha256(given).hexdigest(), **common)
    state = Path(checkpoint.model) / TRAINER_STATE_NAME
    if not state.is_file():
        raise UserError(f"{state} does not exist; --loss-from trainer-state needs HF Trainer checkpoints")
    return LossUnitRecord(input_sha256=file_sha256(state), **common)


def prepare(
    config: SweepConfig, plan: SweepPlan, planned: PlannedCheckpoint, dtype: str, inputs: RunInputs,
    memory: InMemory | None = None,
) -> Prepared:
    """Keys of the checkpoint's units, which are finished, and the model if any pending unit needs it."""
    from harness.engine.models import load_model

    started = time.perf_counter()
    loss = planned.model.loss
    # every unit, a logged loss too, is keyed by the weights' identity (units.LossUnitRecord)
    identity = planned.identity if planned.identity is not None else checkpoint_identity(planned.checkpoint, dtype)
    check_folder_owner(planned.out_dir, planned.checkpoint, identity)
    opts = config.build_options()
    records: dict[str, Any] = {}
    record_errors: dict[str, Exception] = {}
    # the keys of every unit of the run at this checkpoint, other shards' too: the view shows the
    # request as a whole, whichever shard finishes its part last
    for label in planned.labels:
        if label == LOSS_UNIT:
            try:
                records[label] = loss_record(loss, planned, identity, inputs)
            except Exception as error:  # noqa: BLE001 - e.g. no trainer_state.json: the loss unit fails, tasks go on
                record_errors[label] = error
            continue
        built = plan.task_rows[label]
        records[label] = task_unit_record(identity, label, built.spec, plan.items_sha256[label], opts, config.add_bos_token)
    request = {label: unit_key(record) for label, record in records.items()}
    keys = {label: key for label, key in request.items() if label in planned.units}
    # a unit whose record could not be made has no key; its failure still belongs to the request
    request.update({label: "" for label in record_errors})
    warnings: list[str] = []
    finished = [label for label, key in keys.items() if is_finished(planned.out_dir, key, warnings.append)]
    pending = [label for label in planned.units if label not in finished]
    needs_model = any(label != LOSS_UNIT or (loss.needs_model and label not in record_errors) for label in pending)
    loaded, load_error = None, None
    if needs_model and memory is not None:
        loaded = memory.loaded
    elif needs_model:
        try:
            loaded = load_model(
                planned.checkpoint.model, revision=planned.checkpoint.revision, dtype=config.dtype,
                device=config.device, trust_remote_code=config.trust_remote_code, tokenizers=inputs.tokenizers,
                content_hash=identity.content_hash if identity is not None else None,
            )
        except Exception as error:  # noqa: BLE001 - corrupt or missing weights fail this checkpoint only
            load_error = error
    return Prepared(
        planned, keys, records, record_errors, pending, finished, loaded, load_error, time.perf_counter() - started,
        request, warnings,
    )
