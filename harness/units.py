"""Units of work of a sweep and their keys.

A unit is one (checkpoint, task) evaluation, or one checkpoint's loss.  Its key is the sha256 of a
frozen record of everything that decides its numbers (HELM's idea: hash the run spec), so a finished
unit is recognised on any rerun, by any shard, and a change to any input gives a new key.

``SCORING_VERSION`` is part of every key.  Bump it only when a change to the code changes scores
(a tokenization rule, a metric formula), not on every release: bumping it re-runs every sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.checkpoints import Checkpoint
from harness.errors import UserError
from harness.registry import TaskSpec
from harness.requests import Item

SCORING_VERSION = 2  # 2: generative records carry the continuous companions (harness.companions)

LOSS_UNIT = "loss"  # the task label of a checkpoint's loss unit


@dataclass(frozen=True)
class CheckpointIdentity:
    """The exact weights behind a checkpoint, independent of where they lie on disk: a hub model
    by its resolved commit, a local folder by its content hash (so a moved run keeps its results)."""

    model: str | None  # hub id; None for a local folder
    resolved_revision: str | None  # hub: 40-hex commit
    content_hash: str | None  # local: sha256 of the weight, config and tokenizer files
    dtype: str  # resolved: "float32", "bfloat16"...


def checkpoint_identity(checkpoint: Checkpoint, dtype: str) -> CheckpointIdentity:
    """Resolve a checkpoint's identity without loading its weights (hub: config.json only; local:
    hashes the files, which reads them once)."""
    from harness import models

    if Path(checkpoint.model).expanduser().is_dir():
        return CheckpointIdentity(None, None, models.folder_content_hash(Path(checkpoint.model).expanduser()), dtype)
    # the same resolution load_model uses, so the key names the commit that is loaded
    commit, _ = models.resolve_hub_revision(checkpoint.model, checkpoint.revision)
    return CheckpointIdentity(checkpoint.model, commit, None, dtype)


def items_sha256(rows: dict[str, list[Item]]) -> str:
    """Digest of every rendered item (prompt, choices, gold, targets, stops): pins the data content,
    whichever copy of the data (hub, local folder) it came from."""
    digest = hashlib.sha256()
    for row_name, items in rows.items():
        for item in items:
            fields = [row_name, item.doc_id, item.context, item.choices, item.gold, item.targets, item.stop, item.max_new_tokens]
            digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()


def scoring_spec(spec: TaskSpec) -> TaskSpec:
    """The spec as it enters a key: its description is documentation, and rewording it must not
    re-run finished work."""
    return dataclasses.replace(spec, description="")


@dataclass(frozen=True)
class TaskUnitRecord:
    """Everything that decides a (checkpoint, task) unit's numbers."""

    checkpoint: CheckpointIdentity
    task: str  # selection label: "mmlu", "mmlu:anatomy", "gsm8k:fewshot"
    spec: TaskSpec  # after --num-fewshot/--prompt overrides: shots, prompt type, max tokens, metrics, options
    limit: int | None
    bigbench_mode: str
    data_source: str  # "hub" or "local": where the data came from; items_sha256 pins the content
    items_sha256: str
    add_bos_token: bool | None
    scoring_version: int = SCORING_VERSION


@dataclass(frozen=True)
class LossUnitRecord:
    """Everything that decides a checkpoint's loss: for a corpus loss the weights and the corpus; for
    a logged loss the log file's content and the step read from it."""

    checkpoint: CheckpointIdentity | None  # None for losses read from logs (no weights are needed)
    checkpoint_ref: str  # folder or hub id@revision, for logged losses (the log belongs to that run)
    step: int | None
    source: str  # "corpus" | "trainer-state" | "trainer-state:eval" | "file"
    input_sha256: str  # corpus, trainer_state.json or loss log file
    window: int | None = None
    tokens: int | None = None
    smoothing: int | None = None
    scoring_version: int = SCORING_VERSION


def record_json(record: TaskUnitRecord | LossUnitRecord) -> dict[str, Any]:
    """The record as plain JSON data (a TaskSpec's options dict included)."""
    return json.loads(json.dumps(dataclasses.asdict(record), sort_keys=True, default=str))


def unit_key(record: TaskUnitRecord | LossUnitRecord) -> str:
    """sha256 of the record's canonical JSON, shortened: 24 hex digits leave collisions out of reach."""
    text = json.dumps(record_json(record), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{type(record).__name__}:{text}".encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class Shard:
    """``--shard i/n``: this process runs the units whose plan id hashes to ``i`` modulo ``n``."""

    index: int = 0
    count: int = 1

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}" if self.count > 1 else "all"

    def owns(self, plan_id: str) -> bool:
        # A hash of the unit's name, not its position in a list: shards that list checkpoints at
        # different moments (a run still writing new ones) still agree on who owns each unit.
        return int(hashlib.sha256(plan_id.encode("utf-8")).hexdigest()[:16], 16) % self.count == self.index


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise UserError(f"--shard {text!r}: write i/n with 0 <= i < n, e.g. 0/4 ... 3/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def plan_id(model_name: str, checkpoint: Checkpoint, task: str) -> str:
    """The unit's name in the sweep plan (what shards split on): model, checkpoint, task."""
    return f"{model_name}\0{checkpoint.label}\0{task}"
