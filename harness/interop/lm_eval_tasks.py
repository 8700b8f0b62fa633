"""lm-eval tasks as units of our runs: ``--tasks lm_eval:<name>`` (``--include-path DIR`` for a folder
of one's own YAMLs) in ``harness eval``, ``harness sweep``, ``evaluate_model`` and ``EvalCallback``.

    lm-eval's TaskManager ─► Task (YAML, templates, few-shot) ─► its Instances, one LmEvalDoc per document
    ─► our engine (HarnessLM's three methods over the run's Engine) ─► lm-eval's filters and process_results
    ─► per-item records in our store ─► lm-eval's aggregation (and its group aggregation) ─► table rows

Everything lm-eval decides stays lm-eval's (prompts, few-shot sampling and its seed, filters, per-item
metrics, aggregation, stderr), so the numbers are lm-eval's by construction; ours are the engine, the
store (resume, shards, the loss beside each metric) and the key.  A unit is one name given (task, group
or tag): a table row per leaf task, ``lm_eval:<task>``, and one per aggregating group.  Metrics keep
lm-eval's names: ``acc`` under the ``none`` filter, ``exact_match,strict-match`` under another (and
``lm_eval_key``, lm-eval's ``metric,filter``).  The key: the TaskSpec's ``options`` hold each task's
resolved config (``dump_config()``, task functions by their source) and lm-eval's version, the items
each document's requests and digest, the record the limit and the shots.

``!function`` in a YAML outside lm-eval's installed package (a user's task folder) is code from that
folder: it is imported only with ``allow_task_code`` (``--allow-task-code``), else a one-line error
names the flag before anything is imported.  lm-eval's own tasks run their bundled ``utils.py`` as
``lm_eval`` itself does: that code came with the package.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import json
import random
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from harness.errors import UserError
from harness.items.registry import TaskSelection
from harness.items.rows import TaskRows
from harness.spec import BuildOptions, TaskSpec

PREFIX = "lm_eval:"
FAMILY = "lm_eval"
# simple_evaluate's defaults: its stderr bootstrap and its seeds (lm_eval.defaults)
BOOTSTRAP_ITERS = 100000
RANDOM_SEED, OTHER_SEED = 0, 1234


@dataclass(frozen=True)
class LmEvalDoc:
    """One document of an lm-eval task, as its requests: what the unit key hashes (every field) and
    what ``harness prompt`` shows.  The lm-eval ``Instance`` objects themselves stay in ``LmEvalTasks``."""

    task: str  # its row, "lm_eval:<leaf task>"
    doc_id: int  # lm-eval's doc_id: the position in the evaluated split
    context: str  # the first request's first argument: the prompt (the text, for loglikelihood_rolling)
    request_type: str  # "loglikelihood" | "loglikelihood_rolling" | "generate_until"
    arguments: tuple[tuple[str, ...], ...]  # each request's arguments; generation kwargs as canonical JSON
    doc_sha256: str  # the document as process_results reads it (gold answers are not in the requests)


@dataclass
class LmEvalTasks:
    """The lm-eval objects behind one unit's rows (never hashed: the items and the spec are)."""

    tasks: dict[str, Any]  # row -> lm-eval Task
    groups: dict[str, Any]  # lm-eval group name -> Group
    instances: dict[tuple[str, int], list[Any]]  # (row, doc_id) -> its Instances, in request order


def _require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        from harness.interop.lm_eval_cli import LM_EVAL_REQUIREMENT

        raise UserError(f"{PREFIX} tasks need lm-evaluation-harness: pip install -e .[lm-eval]  ({LM_EVAL_REQUIREMENT})")


# ---------------------------------------------------------------------- finding and loading tasks


@lru_cache(maxsize=8)
def _manager(include_path: str | None, defaults: bool) -> Any:
    """lm-eval's TaskManager; indexing its own 10,000+ YAMLs takes seconds, so a user's folder is
    indexed alone first and the full index is built only for a name the folder does not hold."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=defaults)


def _manager_for(name: str, include_path: Path | None) -> Any:
    where = str(include_path) if include_path is not None else None
    if where is not None:
        local = _manager(where, False)
        if name in local.all_tasks:
            return local
    full = _manager(where, True)
    if name not in full.all_tasks:
        close = difflib.get_close_matches(name, full.all_tasks, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(PREFIX + c for c in close)}?" if close else "lm-eval --tasks list lists them"
        where_told = f"lm-eval {_version()} or --include-path {where}" if where else f"lm-eval {_version()}"
        more = "" if where else "; your own YAMLs: --include-path DIR"
        raise UserError(f"unknown lm-eval task {PREFIX}{name} (no task, group or tag of that name in {where_told}); "
                        f"{hint}{more}")
    return full


def _version() -> str:
    return importlib.metadata.version("lm_eval")


@contextmanager
def _task_code(name: str, allowed: bool) -> Iterator[None]:
    """Refuse ``!function`` in a YAML outside lm-eval's package unless ``allowed``: checked where lm-eval
    resolves the tag (``_yaml_loader._import_func_in_yml``), before its module is imported."""
    import lm_eval
    from lm_eval.tasks import _yaml_loader

    package = Path(lm_eval.__file__).resolve().parent
    original = _yaml_loader._import_func_in_yml

    def guarded(qual: str, base_dir: Path) -> Any:
        if not allowed and not Path(base_dir).resolve().is_relative_to(package):
            raise UserError(f"{PREFIX}{name}: a YAML in {base_dir} names task code (!function {qual}), code from that "
                            "folder; pass --allow-task-code (allow_task_code: true in a sweep config) to run it")
        return original(qual, base_dir)

    _yaml_loader._import_func_in_yml = guarded
    try:
        yield
    finally:
        _yaml_loader._import_func_in_yml = original


@contextmanager
def _seeded() -> Iterator[None]:
    """simple_evaluate's seeds while requests are built (a task may shuffle with ``random``), our
    process's random states put back after."""
    import numpy as np

    state, np_state = random.getstate(), np.random.get_state()
    random.seed(RANDOM_SEED)
    np.random.seed(OTHER_SEED)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def _plain(value: Any) -> Any:
    """A config value as stable JSON: a function by its source (lm-eval's own dump does this at the
    top level only), never by its address."""
    if callable(value):
        import inspect

        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(type(value)))}"
    return str(value)


def _config(task: Any) -> dict[str, Any]:
    return json.loads(json.dumps(task.dump_config(), sort_keys=True, default=_plain))


def _set_shots(task: Any, num_fewshot: int | None) -> None:
    """simple_evaluate's rule: ``--num-fewshot`` overrides the YAML's, except a YAML that says 0."""
    if num_fewshot is not None and task.get_config("num_fewshot") != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=OTHER_SEED)


def _doc_item(row: str, doc_id: int, requests: list[Any]) -> LmEvalDoc:
    from lm_eval.utils import handle_non_serializable

    def argument(value: Any) -> str:  # generation kwargs as canonical JSON
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=handle_non_serializable)
    doc = json.dumps(requests[0].doc, sort_keys=True, ensure_ascii=False, default=handle_non_serializable)
    return LmEvalDoc(
        task=row, doc_id=int(doc_id), context=str(requests[0].args[0]), request_type=requests[0].request_type,
        arguments=tuple(tuple(argument(a) for a in r.args) for r in requests),
        doc_sha256=hashlib.sha256(doc.encode("utf-8")).hexdigest(),
    )


def build_task_rows(labels: list[str], opts: BuildOptions) -> list[TaskRows]:
    """Each ``lm_eval:<name>``'s requests, built by lm-eval before any model is loaded: one row per
    leaf task, one ``LmEvalDoc`` per document (the first ``opts.limit`` of each task)."""
    _require_lm_eval()
    return [_build(label, opts) for label in labels]


def _build(label: str, opts: BuildOptions) -> TaskRows:
    from lm_eval.evaluator_utils import get_sample_size

    name = label[len(PREFIX):]
    manager = _manager_for(name, opts.include_path)
    with _task_code(name, opts.allow_task_code):
        loaded = manager.load([name])
    by_row = {PREFIX + leaf: task for leaf, task in loaded["tasks"].items()}
    groups = dict(loaded.get("groups") or {})
    instances: dict[tuple[str, int], list[Any]] = {}
    rows: dict[str, list[LmEvalDoc]] = {}
    with _seeded():
        for row, task in by_row.items():
            _set_shots(task, opts.num_fewshot)
            task.build_all_requests(limit=get_sample_size(task, opts.limit), rank=0, world_size=1)
            by_doc: dict[int, list[Any]] = defaultdict(list)
            for instance in task.instances:
                by_doc[instance.doc_id].append(instance)
            rows[row] = []
            for doc_id in sorted(by_doc):
                requests = sorted(by_doc[doc_id], key=lambda i: i.idx)
                instances[(row, doc_id)] = requests
                rows[row].append(_doc_item(row, doc_id, requests))
    spec = _spec(label, by_row, groups)
    return TaskRows(TaskSelection(spec), spec, rows, lm_eval=LmEvalTasks(by_row, groups, instances))


def _spec(label: str, by_row: dict[str, Any], groups: dict[str, Any]) -> TaskSpec:
    """The unit's TaskSpec: what the key hashes (``options``: every resolved config and lm-eval's
    version) and what the table's configuration columns read (shots, prompt type)."""
    configs = {row: _config(task) for row, task in by_row.items()}
    shots = {int(c.get("num_fewshot") or 0) for c in configs.values()}
    names = [metric_name(m, f.name) for task in by_row.values() for f in task._filters for m in task._metric_fn_list]
    first = next(iter(configs.values()), {})
    return TaskSpec(
        name=label, family=FAMILY, description="", output_type=str(first.get("output_type", "")),
        prompt_type="fewshot" if max(shots, default=0) > 0 else "zeroshot",
        num_fewshot=shots.pop() if len(shots) == 1 else -1,  # -1: the leaf tasks differ (each row says its own)
        split=str(first.get("test_split") or first.get("validation_split") or ""),
        fewshot_split=first.get("fewshot_split"), metrics=tuple(dict.fromkeys(names)),
        primary_metric=names[0] if names else "", prompt="",
        options={"lm_eval_version": _version(), "configs": configs,
                 "groups": {name: {"children": group.child_names, "aggregate_metric_list": str(group.aggregate_metric_list),
                                   "version": group.version} for name, group in sorted(groups.items())}},
    )


def metric_name(metric: str, filter_name: str) -> str:
    """Our row's name of lm-eval's ``metric,filter``: the metric alone under the ``none`` filter."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def _metric_key(name: str) -> tuple[str, str]:
    metric, _, filter_name = name.partition(",")
    return metric, filter_name or "none"


# ---------------------------------------------------------------------- scoring and aggregation


def score_docs(engine: Any, lm: LmEvalTasks, docs: list[LmEvalDoc]) -> list[dict[str, Any]]:
    """Per-item records of ``docs``: their requests through the engine (one call per request type),
    lm-eval's filters, then each filter's ``process_results``.  Records are JSON round-tripped, so a
    unit aggregates the same values whether its items were just scored or read back from its log."""
    from lm_eval.utils import handle_non_serializable

    from harness.interop.lm_eval_model import HarnessLM
    from harness.scoring.records import prompt_sha256

    model = HarnessLM.over_engine(engine)
    chosen = [lm.instances[(doc.task, doc.doc_id)] for doc in docs]
    by_type: dict[str, list[Any]] = defaultdict(list)
    for requests in chosen:
        for instance in requests:
            # the same Instances serve every checkpoint of a sweep: start each scoring afresh
            instance.resps, instance.filtered_resps = [], {}
            by_type[instance.request_type].extend([instance] * instance.repeats)
    for request_type, instances in by_type.items():
        for instance, response in zip(instances, getattr(model, request_type)(instances), strict=True):
            instance.resps.append(response)
    by_row: dict[str, list[Any]] = defaultdict(list)
    for doc, requests in zip(docs, chosen):
        by_row[doc.task].extend(requests)
    for row, instances in by_row.items():
        # lm-eval's filters work document by document, so a chunk of documents filters as the whole task
        for ensemble in lm.tasks[row]._filters:
            ensemble.apply(instances)
    records = []
    for doc, requests in zip(docs, chosen):
        task, metrics, filtered = lm.tasks[doc.task], {}, {}
        for filter_name in requests[0].filtered_resps:
            filtered[filter_name] = [r.filtered_resps[filter_name] for r in requests]
            for metric, value in task.process_results(requests[0].doc, filtered[filter_name]).items():
                metrics[metric_name(metric, filter_name)] = value
        record = {
            "task": doc.task, "doc_id": doc.doc_id, "prompt_sha256": prompt_sha256(doc.context),
            "request_type": doc.request_type, "resps": [r.resps for r in requests], "filtered_resps": filtered,
            "metrics": metrics,
        }
        records.append(json.loads(json.dumps(record, ensure_ascii=False, default=handle_non_serializable)))
    return records


def task_entries(built: TaskRows, records_by_row: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Results entries from per-item records, aggregated by lm-eval (``_process_results``: each
    task's aggregation and stderr, then each group's): one per leaf row, one per aggregating group."""
    from lm_eval.evaluator_utils import _process_results

    lm: LmEvalTasks = built.lm_eval
    accumulated = {}
    for row, records in records_by_row.items():
        raw: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for record in records:
            for name, value in record["metrics"].items():
                raw[_metric_key(name)].append(value)
        accumulated[row[len(PREFIX):]] = {"task": lm.tasks[row], "raw_metrics": raw, "logged_samples": []}
    results = _process_results(accumulated, lm.groups, BOOTSTRAP_ITERS)._to_eval_results()
    parents = {child: group.name for group in lm.groups.values() for child in group.child_names}
    entries = {}
    for name, values in results["results"].items():
        if name in lm.groups and not lm.groups[name].has_aggregation:
            continue  # a group without aggregate_metric_list reports nothing in lm-eval either
        task = lm.tasks.get(PREFIX + name)
        choices = [len(lm.instances[(PREFIX + name, r["doc_id"])]) for r in records_by_row.get(PREFIX + name, [])]
        metrics = _metrics(values, results["higher_is_better"].get(name, {}),
                           choices if task is not None and task.OUTPUT_TYPE == "multiple_choice" else [])
        config = results["configs"].get(name, {})
        entries[PREFIX + name] = {
            "task_family": FAMILY,
            "parent": PREFIX + parents[name] if name in parents else None,
            "output_type": task.OUTPUT_TYPE if task is not None else "group",
            "prompt_type": "fewshot" if results["n-shot"].get(name) else "zeroshot",
            "num_fewshot": results["n-shot"].get(name),
            "split": config.get("test_split") or config.get("validation_split"),
            "primary_metric": next(iter(metrics), None),
            "n": values.get("sample_len"),
            "metrics": metrics,
            "lm_eval": {"task": name, "version": results["versions"].get(name), "alias": values.get("alias")},
        }
        if name in lm.groups:
            entries[PREFIX + name]["subtasks"] = [PREFIX + c for c in lm.groups[name].child_names]
    return entries


def _metrics(values: dict[str, Any], declared: dict[str, Any], num_choices: list[int]) -> dict[str, dict[str, Any]]:
    from harness.interop.lm_eval_results import higher_is_better
    from harness.scoring.metrics import random_baseline

    out = {}
    for key, value in values.items():
        metric, sep, filter_name = key.partition(",")
        if not sep or metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        try:  # chance level where we know it: 1/choices for choice accuracies, 0 for generation metrics
            baseline = random_baseline(metric, num_choices) if filter_name == "none" or not num_choices else None
        except ValueError:
            baseline = None
        flag = declared.get(metric)
        out[metric_name(metric, filter_name)] = {
            "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) and not isinstance(stderr, bool) else None,
            "n": values.get("sample_len"),
            "random_baseline": baseline,
            "higher_is_better": bool(flag) if flag is not None else higher_is_better(metric),
            "lm_eval_key": key,
        }
    return out


# ---------------------------------------------------------------------- harness prompt


def find_doc(label: str, doc_id: int, opts: BuildOptions) -> LmEvalDoc:
    """The document ``doc_id`` of one lm-eval task (``harness prompt``), its requests as a run builds them."""
    import dataclasses

    (built,) = build_task_rows([label], dataclasses.replace(opts, limit=doc_id + 1))
    if len(built.rows) != 1:
        raise UserError(f"{label} has {len(built.rows)} tasks; name one, e.g. {next(iter(built.rows))}")
    (docs,) = built.rows.values()
    for doc in docs:
        if doc.doc_id == doc_id:
            return doc
    raise UserError(f"{label} has no document with doc_id {doc_id} (it has {len(docs)} from 0)")


def doc_answers(doc: LmEvalDoc) -> dict[str, Any]:
    """What ``harness prompt`` prints beside the prompt: each request's other arguments."""
    info: dict[str, Any] = {"task": doc.task, "doc_id": doc.doc_id, "request_type": doc.request_type}
    if doc.request_type == "loglikelihood":
        info["continuations"] = [args[1] for args in doc.arguments]
        if any(args[0] != doc.context for args in doc.arguments):
            info["contexts"] = [args[0] for args in doc.arguments]
    elif doc.request_type == "generate_until":
        info["generation_kwargs"] = json.loads(doc.arguments[0][1])
    return info
