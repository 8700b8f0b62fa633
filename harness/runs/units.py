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
from harness.requests import Item
from harness.spec import BuildOptions, TaskSpec

# 2: generative records carry the continuous companions (harness.scoring.companions)
# 3: acc_norm/acc_bytes of piqa, sciq and logiqa divide by the choice text without the target delimiter
#    (as lm-eval); items key every scored field (units.item_fields), not only the prompts
# 4: BIG-bench answers are read as BIG-bench 1.0.0's postprocess_output reads them (the text kept to
#    max_length characters, cut *after* a stop_string found past position 0, then the regex's first
#    match or its one group; an empty output_regex is none) and exact_match compares them unstripped;
#    the decode no longer stops at the separator or a newline, so an answer after a leading newline
#    counts and stop_string tasks compare BIG-bench's string
SCORING_VERSION = 4

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
    from harness.engine import models

    path = Path(checkpoint.model).expanduser()
    if path.is_dir():
        return CheckpointIdentity(None, None, models.folder_content_hash(path), dtype)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return CheckpointIdentity(None, None, models.file_sha256(path), dtype)  # what load_model records for it
    # the same resolution load_model uses, so the key names the commit that is loaded
    commit, _ = models.resolve_hub_revision(checkpoint.model, checkpoint.revision)
    return CheckpointIdentity(checkpoint.model, commit, None, dtype)


def loaded_model_identity(model: Any, tokenizer: Any) -> CheckpointIdentity:
    """The identity of a model held in memory with no folder behind it (``harness.evaluate_model``
    during training): ``state-dict:`` and the sha256 of its config, its tokenizer and every tensor
    of its state dict (name, dtype, shape, bytes, in name order), read in place, one tensor at a time.

    A saved folder's ``folder_content_hash`` cannot be reproduced from memory (the folder also holds
    the optimizer, scheduler and trainer state files), so weights evaluated both in memory and from
    their saved folder get two identities; pass the folder (``checkpoint_dir=``) when there is one."""
    import torch

    from harness.engine import models

    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer)).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode("utf-8"))
        # the raw bytes as a uint8 view: no copy on the CPU, one tensor at a time from a GPU
        flat = tensor.reshape(-1).contiguous().cpu()
        digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return CheckpointIdentity(None, None, f"state-dict:{digest.hexdigest()}", models.weights_dtype(model))


def item_fields(item: Item) -> dict[str, Any]:
    """What an item contributes to a key: every field but ``meta``.  Scoring reads only typed fields
    (prompt, choices, gold, targets, stops, choice texts, solution, extraction rule, metric list), so
    hashing them all and ``meta`` never keys exactly what decides a score."""
    return {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "meta"}


def items_sha256(rows: dict[str, list[Item]]) -> str:
    """Digest of every rendered item (``item_fields``): pins the data content and how it is scored,
    whichever copy of the data (hub, local folder) it came from."""
    digest = hashlib.sha256()
    for row_name, items in rows.items():
        for item in items:
            fields = [row_name, item_fields(item)]
            digest.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode("utf-8"))
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


def task_unit_record(
    identity: CheckpointIdentity, label: str, spec: TaskSpec, items_digest: str, opts: BuildOptions,
    add_bos_token: bool | None,
) -> TaskUnitRecord:
    """The record of one (checkpoint, task) unit, for ``harness eval`` and ``harness sweep`` alike."""
    return TaskUnitRecord(
        checkpoint=identity, task=label, spec=scoring_spec(spec), limit=opts.limit, bigbench_mode=opts.bigbench_mode,
        data_source="local" if opts.data_dir is not None else "hub", items_sha256=items_digest,
        add_bos_token=add_bos_token,
    )


@dataclass(frozen=True)
class LossUnitRecord:
    """Everything that decides a checkpoint's loss: for a corpus loss the weights and the corpus; for
    a logged loss the log file's content and the step read from it.

    Every loss, a logged one too, is keyed by the weights' identity, as the task units beside it: a
    results row joins a loss to task scores only when both were made for the same weights, so weights
    replaced in a checkpoint folder never borrow the old weights' loss (or the reverse).  Where the
    checkpoint lies on disk is not in the key (a moved run keeps its losses, and ``runs/x`` and
    ``./runs/x/`` are one checkpoint)."""

    checkpoint: CheckpointIdentity
    step: int | None
    source: str  # "corpus" | "trainer-state" | "trainer-state:eval" | "file" | "trainer"
    input_sha256: str  # corpus, trainer_state.json or loss log file; "trainer": the value and its step
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
