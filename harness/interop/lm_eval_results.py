"""One lm-evaluation-harness results file in our names: the checkpoint it scored and our task entries
(``read_results_file``), for ``harness import-lm-eval`` (``harness.interop.import_lm_eval``) to merge
and write.

Both results layouts are read:

- v0.3 (Pythia's ``evals/pythia-v1/<model>/zero-shot/*.json``): ``results`` {task: {metric: v,
  metric_stderr: se}}, ``versions``, ``config`` {model_args: "pretrained=...,revision=stepN", num_fewshot}.
- v0.4 (``<output_path>/<model>/results_<date>.json``): ``results`` {task: {"metric,filter": v,
  "metric_stderr,filter": se | "N/A"}}, ``groups``, ``group_subtasks``, ``configs``, ``n-shot``,
  ``n-samples``, ``higher_is_better``, ``config.model_args`` (a string or a dict), ``lm_eval_version``.

Model and step come from ``model_args`` (``pretrained=``, ``revision=stepN``). When ``model_args``
has no ``pretrained``, the model is the v0.4 file's ``model_name``, else the name of the nearest
folder above the file that is not a shot folder (``zero-shot``, ``five-shot``, ``5shot``...), with
lm-eval's ``org__name`` turned back into ``org/name``: ``pythia-v1/pythia-160m/zero-shot/x.json`` gives
``pythia-160m``. When there is no ``revision``, the step is parsed (``harness.checkpoints``)
from ``pretrained`` (a local ``checkpoint-500`` folder: revision None, as our own runs of local
folders), else from the file name (``160m_step1000.json``), then from the folders above it, and then
the revision is written ``stepN``, as Pythia's hub revisions are named. The dtype is
``model_args``' ``dtype`` (or ``torch_dtype``), else lm-eval 0.4's ``config.model_dtype``, else unknown.

Names are mapped to ours: Pythia model aliases to today's hub ids (``harness.pythia``),
``hendrycksTest-<s>`` to ``mmlu_pythia_v0:<s>``, a v0.3 file's ``sciq`` and ``wsc`` to the replicas of
their old prompts ``sciq_pythia_v0`` and ``wsc_pythia_v0``, ``ppl`` to ``perplexity``, lm-eval 0.4's
``metric,none`` to ``metric`` and gsm8k's ``exact_match,strict-match`` / ``flexible-extract`` to our
``exact_match_strict`` / ``exact_match_flexible`` (other filters keep lm-eval's ``metric,filter``).
The shot count is each file's own (``n-shot``, else its task config, else ``config.num_fewshot``),
never guessed from the file name: Pythia's ``1b-bf16-5shot_step512.json`` is a 0-shot run.

A file written by ``harness export`` (``harness.interop.export_lm_eval``) is a v0.4 file with one more
top-level field, ``emergence_harness``: there the checkpoint, our metric names and everything lm-eval's
layout has no place for (loss, weights, unit records) are read as written, nothing guessed; values
and stderrs still come from lm-eval's ``results``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.checkpoints import parse_step
from harness.pythia import LM_EVAL_V03_TASK_NAMES, canonical_pythia_name

# Metrics where lower is better and which our HIGHER_IS_BETTER does not know: perplexities and bits
# per byte, and crows_pairs' two bias scores (lm-eval's own tasks declare both higher_is_better: false).
_LOWER_IS_BETTER = {
    "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte",
    "likelihood_difference", "likelihood_diff", "pct_stereotype", "ter",
}
_METRIC_NAMES = {"ppl": "perplexity"}
# lm-eval's gsm8k filters are the extractions our own gsm8k rows are named after.
_FILTERED_METRIC_NAMES = {
    ("exact_match", "strict-match"): "exact_match_strict",
    ("exact_match", "flexible-extract"): "exact_match_flexible",
}
# ours -> lm-eval's "metric,filter" (harness export): the inverse of the rows above
_LM_EVAL_METRIC_KEYS = {ours: f"{metric},{filter_name}" for (metric, filter_name), ours in _FILTERED_METRIC_NAMES.items()}
# The top-level field of a file written by ``harness export`` (harness.interop.export_lm_eval): what
# lm-eval's layout has no place for (the loss, the weights, our metric names, the unit records).
EXPORT_KEY = "emergence_harness"
EXPORT_SCHEMA = 1
_SHOT_FOLDER = re.compile(r"(?:zero|one|two|three|four|five|ten|few|\d+)[-_]?shots?", re.IGNORECASE)
_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class ImportedFile:
    """One lm-eval results file, already in our names: the checkpoint it scored and our task entries."""

    path: str
    layout: str  # "v0.3" | "v0.4"
    model: str
    revision: str | None
    step: int | None
    dtype: str | None
    lm_eval_version: str | None
    model_args: Any  # as written in the file: provenance of the names we mapped
    tasks: dict[str, dict[str, Any]]
    # a file of ``harness export``: its checkpoint fields (name, loss, model, units...), else None
    exported: dict[str, Any] | None = None


def parse_model_args(model_args: str | dict[str, Any] | None) -> dict[str, str]:
    """``"pretrained=EleutherAI/pythia-v1.1-160m,revision=step1000"`` (or lm-eval 0.4's dict) as a dict."""
    if not model_args:
        return {}
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    pairs = (part.split("=", 1) for part in str(model_args).split(",") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def our_task_name(task: str) -> str:
    """lm-eval 0.3's ``hendrycksTest-<subject>`` is the old MMLU prompt: our ``mmlu_pythia_v0:<subject>``."""
    if task.startswith("hendrycksTest-"):
        return "mmlu_pythia_v0:" + task.removeprefix("hendrycksTest-")
    return task


def our_metric_name(metric: str, filter_name: str = "none") -> str:
    """``ppl`` -> ``perplexity``; lm-eval 0.4's ``acc`` with filter ``none`` -> ``acc``."""
    if filter_name != "none":
        return _FILTERED_METRIC_NAMES.get((metric, filter_name), f"{metric},{filter_name}")
    return _METRIC_NAMES.get(metric, metric)


def lm_eval_metric_key(metric: str) -> str:
    """Our metric name as lm-eval 0.4 writes it: ``acc`` -> ``acc,none``, ``exact_match_strict`` ->
    ``exact_match,strict-match``; a name that already holds its filter (an imported one) stays."""
    if metric in _LM_EVAL_METRIC_KEYS:
        return _LM_EVAL_METRIC_KEYS[metric]
    return metric if "," in metric else f"{metric},none"


def higher_is_better(metric: str, declared: bool | None = None) -> bool:
    """Ours when we know the metric, else what the lm-eval file declared, else False only for
    perplexity-like and bias scores."""
    # Imported here: harness.scoring.metrics pulls in numpy and sacrebleu, and the CLI imports this module
    # to build its parser, so every `harness` command would pay for them.
    from harness.scoring.metrics import HIGHER_IS_BETTER

    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if declared is not None:
        return bool(declared)
    return metric.split(",")[0] not in _LOWER_IS_BETTER


def _number(value: Any) -> float | None:
    # lm-eval 0.4 writes "N/A" for a stderr it did not compute (perplexities, groups without one).
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _task_entry(
    task: str, metrics: dict[str, dict[str, Any]], num_fewshot: int | None, n: int | None, parent: str | None
) -> dict[str, Any]:
    prompt_type = None if num_fewshot is None else ("zeroshot" if num_fewshot == 0 else "fewshot")
    return {
        "task_family": task.split(":")[0],
        "parent": parent,
        "output_type": None,
        "prompt_type": prompt_type,
        "num_fewshot": num_fewshot,
        "split": None,
        "primary_metric": "acc" if "acc" in metrics else next(iter(metrics)),
        "n": n,
        "metrics": metrics,
    }


def _metric(value: Any, stderr: Any, n: int | None, higher: bool) -> dict[str, Any]:
    return {"value": _number(value), "stderr": _number(stderr), "n": n, "random_baseline": None, "higher_is_better": higher}


# Items in each MMLU test file (hendrycks/test data.tar, 14,042 in all): lm-eval 0.3's hendrycksTest
# evaluated the whole test split, so these are the n of Pythia's imported MMLU rows, which its
# v0.3 results files do not record.
MMLU_TEST_SIZES: dict[str, int] = {
    "abstract_algebra": 100, "anatomy": 135, "astronomy": 152, "business_ethics": 100,
    "clinical_knowledge": 265, "college_biology": 144, "college_chemistry": 100,
    "college_computer_science": 100, "college_mathematics": 100, "college_medicine": 173,
    "college_physics": 102, "computer_security": 100, "conceptual_physics": 235, "econometrics": 114,
    "electrical_engineering": 145, "elementary_mathematics": 378, "formal_logic": 126, "global_facts": 100,
    "high_school_biology": 310, "high_school_chemistry": 203, "high_school_computer_science": 100,
    "high_school_european_history": 165, "high_school_geography": 198,
    "high_school_government_and_politics": 193, "high_school_macroeconomics": 390,
    "high_school_mathematics": 270, "high_school_microeconomics": 238, "high_school_physics": 151,
    "high_school_psychology": 545, "high_school_statistics": 216, "high_school_us_history": 204,
    "high_school_world_history": 237, "human_aging": 223, "human_sexuality": 131, "international_law": 121,
    "jurisprudence": 108, "logical_fallacies": 163, "machine_learning": 112, "management": 103,
    "marketing": 234, "medical_genetics": 100, "miscellaneous": 783, "moral_disputes": 346,
    "moral_scenarios": 895, "nutrition": 306, "philosophy": 311, "prehistory": 324,
    "professional_accounting": 282, "professional_law": 1534, "professional_medicine": 272,
    "professional_psychology": 612, "public_relations": 110, "security_studies": 245, "sociology": 201,
    "us_foreign_policy": 100, "virology": 166, "world_religions": 171,
}
MMLU_PYTHIA_V0 = "mmlu_pythia_v0"


def _v03_tasks(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shots = data.get("config", {}).get("num_fewshot")
    tasks = {}
    for task, values in data["results"].items():
        # lm-eval 0.3's sciq and wsc prompts differ from today's: they are our *_pythia_v0 replicas
        name = LM_EVAL_V03_TASK_NAMES.get(task) or our_task_name(task)
        subject = name.removeprefix(MMLU_PYTHIA_V0 + ":") if name.startswith(MMLU_PYTHIA_V0 + ":") else None
        n = MMLU_TEST_SIZES.get(subject) if subject else None
        metrics = {
            our_metric_name(key): _metric(value, values.get(f"{key}_stderr"), n, higher_is_better(our_metric_name(key)))
            for key, value in values.items()
            if not key.endswith("_stderr") and _number(value) is not None
        }
        if metrics:
            tasks[name] = _task_entry(name, metrics, shots, n, MMLU_PYTHIA_V0 if subject else None)
    return _with_mmlu_parent(tasks, shots)


def _with_mmlu_parent(tasks: dict[str, dict[str, Any]], shots: int | None) -> dict[str, dict[str, Any]]:
    """The ``mmlu_pythia_v0`` row over the imported subjects, aggregated as our own parent rows are
    (item-weighted metrics and ``<metric>_macro``), so it lines up with our run of ``mmlu_pythia_v0``."""
    from harness.scoring.records import aggregate_group

    subjects = {name: entry for name, entry in tasks.items() if entry["parent"] == MMLU_PYTHIA_V0}
    if not subjects or MMLU_PYTHIA_V0 in tasks or any(entry["n"] is None for entry in subjects.values()):
        return tasks
    group = aggregate_group({name: entry["metrics"] for name, entry in subjects.items()},
                            {name: entry["n"] for name, entry in subjects.items()})
    entry = _task_entry(MMLU_PYTHIA_V0, group, shots, sum(e["n"] for e in subjects.values()), None)
    entry["subtasks"] = sorted(subjects)
    return {**tasks, MMLU_PYTHIA_V0: entry}


def _v04_tasks(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {**data.get("groups", {}), **data["results"]}
    default_shots = data["config"].get("num_fewshot")
    parents = {child: group for group, children in data.get("group_subtasks", {}).items() for child in children}
    tasks = {}
    for task, values in rows.items():
        samples = data.get("n-samples", {}).get(task, {})
        n = samples.get("effective", values.get("sample_len"))
        shots = data.get("n-shot", {}).get(task, data.get("configs", {}).get(task, {}).get("num_fewshot", default_shots))
        declared = data.get("higher_is_better", {}).get(task, {})
        counts = values.get("sample_count", {})
        metrics = {}
        for key, value in values.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr") or _number(value) is None:
                continue
            name = our_metric_name(metric, filter_name)
            metrics[name] = _metric(
                value, values.get(f"{metric}_stderr,{filter_name}"), counts.get(key, n),
                higher_is_better(name, declared.get(metric)),
            )
        if metrics:
            name = our_task_name(task)
            parent = our_task_name(parents[task]) if task in parents else None
            tasks[name] = _task_entry(name, metrics, None if shots is None else int(shots), n, parent)
    for group, children in data.get("group_subtasks", {}).items():
        if our_task_name(group) in tasks:
            tasks[our_task_name(group)]["subtasks"] = [our_task_name(c) for c in children if our_task_name(c) in tasks]
    return tasks


def _exported_tasks(data: dict[str, Any], block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The task entries of a ``harness export`` file: every field from its ``emergence_harness`` block
    but value and stderr, which are read from lm-eval's own ``results`` (the numbers lm-eval's readers
    see are the numbers we import)."""
    tasks = {}
    for task, entry in block["tasks"].items():
        values = data["results"].get(task, {})
        metrics = {}
        for metric, m in entry["metrics"].items():
            base, _, filter_name = m["key"].partition(",")
            metrics[metric] = {"value": values.get(m["key"]), "stderr": _number(values.get(f"{base}_stderr,{filter_name}")),
                               "n": m["n"], "random_baseline": m["random_baseline"], "higher_is_better": m["higher_is_better"]}
        config = block.get("units", {}).get(entry.get("unit_key"))
        tasks[task] = {**{k: v for k, v in entry.items() if k != "metrics"}, "metrics": metrics,
                       **({"config": config} if config is not None else {})}
    return tasks


def _export_block(data: dict[str, Any]) -> dict[str, Any] | None:
    block = data.get(EXPORT_KEY)
    if isinstance(block, dict) and block.get("schema") == EXPORT_SCHEMA and isinstance(block.get("tasks"), dict):
        return block
    return None  # none, or of a schema this version does not know: read as any lm-eval file


def _layout(data: Any) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not isinstance(data.get("config"), dict):
        return None
    if any(key in data for key in ("n-shot", "configs", "n-samples", "lm_eval_version")):
        return "v0.4"
    if "versions" in data:
        return "v0.3"
    return None


def _normalise_dtype(dtype: str | None) -> str | None:
    if not dtype or dtype == "auto":
        return None
    dtype = dtype.removeprefix("torch.")
    return _DTYPE_NAMES.get(dtype, dtype)


def _model_from_path(path: Path) -> str:
    for folder in path.parents:
        if folder.name and not _SHOT_FOLDER.fullmatch(folder.name):
            return folder.name.replace("__", "/")  # lm-eval 0.4 names its output folder org__name
    return path.stem


def _step_from_path(path: Path) -> int | None:
    for name in (path.stem, *(folder.name for folder in path.parents)):
        step = parse_step(name)
        if step is not None:
            return step
    return None


def read_results_file(path: Path) -> ImportedFile | None:
    """One lm-eval results file in our names, or None when the JSON is not an lm-eval results file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    layout = _layout(data)
    if layout is None:
        return None
    config = data["config"]
    args = parse_model_args(config.get("model_args"))
    block = _export_block(data) if layout == "v0.4" else None
    if block is not None:  # our own export: the checkpoint as we recorded it, no name guessed
        checkpoint = block.get("checkpoint") or {}
        return ImportedFile(
            path=str(path), layout=layout, model=str(checkpoint.get("model") or block.get("name") or "model"),
            revision=checkpoint.get("revision"), step=block.get("step"),
            dtype=_normalise_dtype((block.get("model") or {}).get("dtype")), lm_eval_version=data.get("lm_eval_version"),
            model_args=config.get("model_args"), tasks=_exported_tasks(data, block),
            exported={k: v for k, v in block.items() if k not in ("tasks", "units")},
        )
    pretrained = args.get("pretrained") or data.get("model_name") or _model_from_path(Path(path))
    revision = args.get("revision")
    if revision:
        step = parse_step(revision)
    else:
        step = parse_step(pretrained)
        if step is None:
            step = _step_from_path(Path(path))
            revision = None if step is None else f"step{step}"
    return ImportedFile(
        path=str(path),
        layout=layout,
        model=canonical_pythia_name(pretrained),
        revision=revision,
        step=step,
        dtype=_normalise_dtype(args.get("dtype") or args.get("torch_dtype") or config.get("model_dtype")),
        lm_eval_version=data.get("lm_eval_version"),
        model_args=config.get("model_args"),
        tasks=_v03_tasks(data) if layout == "v0.3" else _v04_tasks(data),
    )
