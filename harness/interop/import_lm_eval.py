"""``harness import-lm-eval DIR``: published lm-evaluation-harness results as our results.json files,
so that published curves (Pythia's evals) sit in the same table as our own runs.

Every ``*.json`` under DIR is read (``harness.interop.lm_eval_results``: both lm-eval layouts, v0.3 and
v0.4, and how their model, step, task and metric names become ours); other JSON files are skipped
with a note.

One results.json is written per (model, revision, step) into ``OUT/<model>@<revision>/``; files of the
same checkpoint are merged, and so is an earlier import in the same folder. The same task met twice
with different numbers (say a zero-shot and a five-shot folder of one checkpoint) is an error rather
than a silent overwrite.

It prints what it read and wrote in a few lines (files, models, checkpoints, tasks, metric values,
where); ``--verbose`` lists every file written and every JSON file skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, store
from harness.errors import UserError, check_out_dir
from harness.interop.lm_eval_results import ImportedFile, read_results_file
from harness.pythia import PYTHIA_TOKENS_PER_STEP, pythia_params, pythia_size

SOURCE = "lm-eval-import"
DEFAULT_OUT = Path("results/imported")


def find_json_files(root: Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise UserError(f"{root} is not a .json file; pass a folder of lm-evaluation-harness results JSON files "
                            "(or one of them)")
        return [root]
    if not root.is_dir():
        raise UserError(f"{root} does not exist; pass a folder of lm-evaluation-harness results JSON files")
    return sorted(root.rglob("*.json"))


def folder_name(model: str, revision: str | None) -> str:
    """The folder of one imported checkpoint under OUT: ``store.checkpoint_dirname``, made one plain
    path component whatever the file said (``pretrained=..``, ``/abs/path``, ``a/../../b``, empty):
    names read from a file never choose where we write."""
    name = store.checkpoint_dirname(str(model or ""), revision)
    name = re.sub(r"[^A-Za-z0-9._@+-]+", "_", name.replace("/", "__").replace("\\", "__")).strip("._")
    return name if re.search(r"[A-Za-z0-9]", name) else "model"


def _target(out: Path, model: str, revision: str | None) -> Path:
    target = Path(out) / folder_name(model, revision) / store.RESULTS_NAME
    inside = Path(out).resolve()
    if inside not in target.resolve().parents:  # belt and braces: never outside --out
        raise UserError(f"the model name {model!r} would write outside --out {out}; rename it in the results file")
    return target


def checkpoint_results(files: list[ImportedFile], earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """One results.json (our schema) for the files of one checkpoint, merged with an earlier import."""
    first = files[0]
    params = pythia_params(first.model)
    sources = list(earlier["imported_from"]) if earlier else []
    tasks: dict[str, dict[str, Any]] = dict(earlier["tasks"]) if earlier else {}
    task_source = {task: "an earlier import into the same folder" for task in tasks}
    dtype = earlier["model"]["dtype"] if earlier else None
    for imported in files:
        if dtype is not None and imported.dtype is not None and imported.dtype != dtype:
            raise UserError(
                f"{imported.path} ran {first.model}@{first.revision} in {imported.dtype}, other files in {dtype}; "
                "import them into different --out folders"
            )
        dtype = dtype or imported.dtype
        for task, entry in imported.tasks.items():
            if task in tasks and tasks[task] != entry:
                raise UserError(
                    f"{task} of {first.model}@{first.revision} differs between {task_source[task]} and {imported.path} "
                    "(another shot count or another run); import them into different --out folders"
                )
            tasks[task] = entry
            task_source.setdefault(task, imported.path)
        source = {"path": imported.path, "layout": imported.layout, "lm_eval_version": imported.lm_eval_version,
                  "model_args": imported.model_args}
        if source not in sources:
            sources.append(source)
    results = {
        "schema": store.SCHEMA_VERSION,
        "harness_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "model": first.model, "revision": first.revision, "resolved_revision": None, "content_hash": None,
            "source": SOURCE,
            "params_total": params[0] if params else None, "params_non_embedding": params[1] if params else None,
            "dtype": dtype, "device": None, "architecture": None, "max_length": None,
        },
        "size": pythia_size(first.model),
        "step": first.step,
        # Pythia's schedule is known, so the table can turn the step into tokens seen and compute.
        "tokens_per_step": PYTHIA_TOKENS_PER_STEP if params else None,
        "loss": None,  # published loss curves come in through the sweep's --loss-from, not here
        "config": {"command": "import-lm-eval"},
        "command": " ".join(sys.argv),
        "tasks": dict(sorted(tasks.items())),
        "imported_from": sources,
    }
    exported = next((f.exported for f in files if f.exported is not None), None)
    if exported is not None:
        results.update(exported_fields(exported))
    elif earlier is not None:  # a plain lm-eval file merged into an earlier import of our export: keep what it restored
        results.update({k: earlier[k] for k in _EXPORTED_FIELDS if k in earlier})
    return results


# What a file of ``harness export`` restores beyond lm-eval's fields: the checkpoint as our table
# shows it (its name, size, loss, weights) and the key of the loss unit its rows carry.
_EXPORTED_FIELDS = ("name", "size", "step", "tokens_per_step", "model", "identity", "loss", "units", "provenance",
                    "failures", "exported_from")


def exported_fields(exported: dict[str, Any]) -> dict[str, Any]:
    """The fields of our results.json that an exported file's ``emergence_harness`` block restores."""
    model = {**(exported.get("model") or {}), "source": SOURCE}  # an import, whatever the weights' source was
    fields = {k: exported.get(k) for k in ("name", "size", "step", "tokens_per_step", "identity", "loss", "provenance")}
    fields.update(model=model, failures=exported.get("failures") or [],
                  exported_from={"source": (exported.get("model") or {}).get("source"), "command": exported.get("command")})
    if exported.get("loss_unit_key"):
        fields["units"] = {"loss": {"key": exported["loss_unit_key"], "status": "done"}}
    return fields


@dataclass
class Imported:
    """What an import read and wrote."""

    root: Path
    out: Path
    written: list[Path]  # one results.json per checkpoint
    files: int  # lm-eval results files read
    models: int
    tasks: int  # task rows (subtasks and their parents), over all checkpoints
    values: int  # metric values written: the rows ``harness table`` makes of them
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # other JSON files, and why

    def summary(self, hint: str = "") -> list[str]:
        """A few lines however many files: counts and where (``hint`` ends the second line)."""
        lines = [
            f"read {_count(self.files, 'lm-evaluation-harness results file')} under {self.root}: "
            f"{_count(self.models, 'model')}, {_count(len(self.written), 'checkpoint')}, {_count(self.tasks, 'task')}",
            f"wrote {_count(len(self.written), 'results file')} ({_count(self.values, 'metric value')}) under "
            f"{self.out}; harness table {self.out}{hint}",
        ]
        if self.skipped:
            path, why = self.skipped[0]
            lines.append(f"skipped {_count(len(self.skipped), 'other JSON file')} (e.g. {path}: {why})")
        return lines


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def import_lm_eval(root: Path, out: Path = DEFAULT_OUT, log: Callable[[str], None] = print) -> Imported:
    """Read every lm-eval results file under ``root``; write one results.json per checkpoint under
    ``out``; ``log`` is told of each JSON file skipped."""
    by_checkpoint: dict[tuple[str, str | None, int | None], list[ImportedFile]] = {}
    notes = []
    for path in find_json_files(root):
        imported = read_results_file(path)
        why = "not an lm-evaluation-harness results file" if imported is None else None if imported.tasks else "no numeric metrics in it"
        if why is not None:
            notes.append((path, why))
            log(f"note: skipped {path}: {why}")
        else:
            by_checkpoint.setdefault((imported.model, imported.revision, imported.step), []).append(imported)
    if not by_checkpoint:  # one line: the skipped files are counted, not listed
        skipped = f" ({len(notes)} JSON file(s) skipped, e.g. {notes[0][0]}: {notes[0][1]})" if notes else ""
        raise UserError(f"no lm-evaluation-harness results JSON under {root}{skipped}; pass the folder lm-eval wrote "
                        "(--output_path)")

    def order(key: tuple[str, str | None, int | None]) -> tuple[str, int]:
        return key[0], -1 if key[2] is None else key[2]

    # Everything is merged and checked before the first write, so a conflict leaves OUT untouched.
    planned = []
    for model, revision, step in sorted(by_checkpoint, key=order):
        target = _target(Path(out), model, revision)
        if any(target == other for other, _ in planned):
            raise UserError(f"two checkpoints of the import would share {target} (model names that differ only in "
                            f"characters a folder name cannot hold, e.g. {model!r}); import them into different --out folders")
        try:
            earlier = json.loads(target.read_text(encoding="utf-8")) if target.exists() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{target} is there but not a results file; move it away or pass another --out") from None
        if earlier is not None and (not isinstance(earlier, dict) or not isinstance(earlier.get("model"), dict)
                                    or not isinstance(earlier.get("tasks"), dict)):
            raise UserError(f"{target} is there but not a results file; move it away or pass another --out")
        if earlier is not None and earlier.get("model", {}).get("source") != SOURCE:
            raise UserError(f"{target} holds a run of our own, not an import; pass another --out (default {DEFAULT_OUT})")
        planned.append((target, checkpoint_results(by_checkpoint[(model, revision, step)], earlier)))
    check_out_dir(Path(out))  # after every check of the inputs: a conflict leaves no folder behind
    for target, results in planned:
        store.write_json_atomic(target, results)
    return Imported(
        root=Path(root), out=Path(out), written=[target for target, _ in planned],
        files=sum(len(files) for files in by_checkpoint.values()), models=len({model for model, _, _ in by_checkpoint}),
        tasks=len({task for _, results in planned for task in results["tasks"]}),
        values=sum(len(entry.get("metrics", {})) for _, results in planned for entry in results["tasks"].values()),
        skipped=notes,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, help="folder of lm-evaluation-harness results JSON files (searched recursively), or one file"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the results.json files go (default {DEFAULT_OUT})")
    parser.add_argument("--verbose", action="store_true", help="also list every results file written and every JSON file skipped")


def run(args: argparse.Namespace) -> int:
    """A summary (counts and where); each file only with ``--verbose``: Pythia's evals are 432 files."""
    notes: list[str] = []  # printed once the import succeeds; a failed one is its one error line (which counts them)
    imported = import_lm_eval(args.path, args.out, log=notes.append)
    if args.verbose:
        for path in imported.written:
            print(path)
        for note in notes:
            print(note, file=sys.stderr)
    print("\n".join(imported.summary("" if args.verbose else "; --verbose lists each file")))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="harness import-lm-eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except UserError as error:
        print(f"harness import-lm-eval: error: {error}", file=sys.stderr)
        sys.exit(2)
