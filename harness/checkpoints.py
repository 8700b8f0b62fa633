"""Checkpoints to evaluate: the training step parsed from a name, local checkpoint folders found on
disk, and hub revision lists (``pythia``, ``step1000:143000:1000``, ``step1,step2``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

# step-N, stepN (Pythia revisions), checkpoint-N (HF Trainer), global_stepN (DeepSpeed), iter_N (Megatron)
_STEP_PATTERN = re.compile(r"(?:^|[^a-z])(?:step[-_]?|checkpoint[-_]|global_step|iter_)(\d+)$", re.IGNORECASE)
# a revision range: START:STOP:STEP, the prefix ("step") written on START and optionally on STOP
_RANGE_PATTERN = re.compile(r"^([A-Za-z_-]*?)(\d+):(?:\1)?(\d+):(\d+)$")


def parse_step(name: str | None) -> int | None:
    """``"step33000"`` → 33000, ``"runs/x/checkpoint-500"`` → 500; None when the name carries no step."""
    if not name:
        return None
    match = _STEP_PATTERN.search(Path(str(name).rstrip("/\\")).name)
    return int(match.group(1)) if match else None


def canonical_location(model: str) -> str:
    """A local checkpoint as one absolute path however it was spelled (relative, ``./``, a trailing
    slash, a symlink): what a checkpoint's folder, shard and name derive from.  A hub id is kept as is."""
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def default_model_name(model: str) -> str:
    """The table's model for a checkpoint named without ``--name``, the same for ``harness eval``,
    ``harness sweep`` and ``EvalCallback``: a local checkpoint named by its step (``runs/my-run/checkpoint-20``)
    belongs to its run (``my-run``, as the callback names the run by its output folder); any other
    local folder or file is its own name; a hub id is itself."""
    path = Path(str(model)).expanduser()
    if not path.exists():
        return str(model)
    path = path.resolve()
    return path.parent.name if parse_step(path.name) is not None and path.parent.name else path.name


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a sweep: what ``load_model`` takes (a local folder, or a hub id at a revision)."""

    model: str  # local folder path or hub id
    revision: str | None  # hub revision; None for a local folder
    step: int | None

    @property
    def label(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model


@dataclass(frozen=True)
class Discovery:
    checkpoints: tuple[Checkpoint, ...]
    notes: tuple[str, ...]  # folders passed over, and why


def is_checkpoint_folder(folder: Path) -> bool:
    """An HF checkpoint folder has a config.json; whether its weights load is found out later."""
    return (folder / "config.json").is_file()


def by_step(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """Ordered by step; checkpoints whose name carries no step keep their order, after the others."""
    return sorted(checkpoints, key=lambda c: (c.step is None, c.step if c.step is not None else 0))


def discover_checkpoints(paths: list[Path]) -> Discovery:
    """Each path is a checkpoint folder itself, or a folder whose subfolders are checkpoints named
    ``step-N``, ``stepN``, ``checkpoint-N``, ``global_stepN`` or ``iter_N``.  Subfolders that are
    not checkpoints are passed over with a note."""
    found: list[Checkpoint] = []
    notes: list[str] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise UserError(f"checkpoint folder {str(path)!r} does not exist; pass a checkpoint folder or a folder of them")
        if is_checkpoint_folder(path):
            found.append(Checkpoint(str(path), None, parse_step(path.name)))
            continue
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            step = parse_step(child.name)
            if step is None:
                notes.append(f"skipped {child}: not a checkpoint name (step-N, stepN, checkpoint-N, global_stepN, iter_N)")
            elif not is_checkpoint_folder(child):
                notes.append(f"skipped {child}: no config.json (not a Hugging Face checkpoint)")
            else:
                found.append(Checkpoint(str(child), None, step))
    if not found:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise UserError(
            f"no checkpoints found in {', '.join(map(str, paths))}{detail}; pass folders holding config.json "
            "or named like checkpoint-N"
        )
    unique = list(dict.fromkeys(found))
    return Discovery(tuple(by_step(unique)), tuple(notes))


def parse_revisions(spec: str, preset: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """``pythia`` (the 154 published Pythia steps), ``pythia-v1-evals`` (the 27 steps of Pythia v1's
    published evaluations), ``step1000:143000:1000`` (STOP included) or a comma list such as
    ``step1000,step2000,main``; ordered by step."""
    if preset is None:
        from harness.pythia import PYTHIA_REVISIONS, PYTHIA_V1_EVAL_REVISIONS

        preset = {"pythia": PYTHIA_REVISIONS, "pythia-v1-evals": PYTHIA_V1_EVAL_REVISIONS}
    revisions: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in preset:
            revisions.extend(preset[part])
            continue
        match = _RANGE_PATTERN.match(part)
        if match:
            prefix, start, stop, step = match.group(1), *map(int, match.group(2, 3, 4))
            if step < 1 or stop < start:
                raise UserError(f"revision range {part!r} needs START <= STOP and STEP >= 1, e.g. step1000:143000:1000")
            revisions.extend(f"{prefix}{n}" for n in range(start, stop + 1, step))
        elif ":" in part:
            raise UserError(f"cannot read revision range {part!r}; write START:STOP:STEP, e.g. step1000:143000:1000")
        else:
            revisions.append(part)
    if not revisions:
        raise UserError(f"--revisions {spec!r} names no revision; pass pythia, step1000:143000:1000 or a comma list")
    unique = list(dict.fromkeys(revisions))
    steps = {r: parse_step(r) for r in unique}
    return tuple(sorted(unique, key=lambda r: (steps[r] is None, steps[r] or 0)))


def hub_checkpoints(model: str, revisions: tuple[str, ...] | None) -> Discovery:
    """A hub model at each revision (or at its default branch when no revisions are given)."""
    if not revisions:
        return Discovery((Checkpoint(model, None, None),), ())
    return Discovery(tuple(Checkpoint(model, r, parse_step(r)) for r in revisions), ())
