"""Capture the exact requests and scoring of Pythia's eight zero-shot tasks as lm-eval 0.3.0 builds them.

Pythia's published evaluations (EleutherAI/pythia ``evals/pythia-v1``, ``../shared/data/pythia_evals``)
say ``"model": "hf-causal"``, some with ``use_accelerate=True``, and task version 0 throughout.  No
lm-eval *release* has that model name: 0.3.0 (2022-12-08) registers only ``hf``, and 0.4.0 came in
December 2023.  ``hf-causal`` was ``huggingface.AutoCausalLM`` (which takes ``use_accelerate``) on
lm-evaluation-harness ``master`` from db1f55ff0 (2023-01-17, on the bigscience_refactor branch,
merged as 2e522e2cb on 2023-03-08) until 6179fdf5b (2023-04-23, "hotfix-hf-causal", which pointed it
back at ``gpt2.HFLM``, which rejects ``use_accelerate``); the Pythia repository added these files in
March 2023.  Across that whole window the task files of the eight tasks (arc, lambada, piqa, sciq,
winogrande, superglue, logiqa), ``base.py``, ``evaluator.py`` and ``metrics.py`` are byte for byte
0.3.0's, except ``lambada.py``, which reads the same OpenAI ``lambada_test.jsonl`` as the Hub dataset
``EleutherAI/lambada_openai`` (split ``test``) instead of 0.3.0's bundled loader (split
``validation``).  So the released 0.3.0 wheel builds the same strings and scores them the same way,
and it is the version pinned here.

Run it with a Python that has lm-eval 0.3.0 (not this project's environment, which has 0.4.13),
from the repository root::

    python -m venv --system-site-packages /tmp/lm030
    /tmp/lm030/bin/pip install --no-deps lm-eval==0.3.0
    /tmp/lm030/bin/python scripts/capture_pythia_v0.py

For every task it builds 0.3.0's own task class, feeds it the fixture documents, runs 0.3.0's
evaluator logic zero-shot (``fewshot_context`` with no description, then ``construct_requests``)
and writes, per document in file order, every request's (context, continuation) in 0.3.0's order,
the gold, and ``process_results`` on probe log-likelihoods (ties, and lengths with and without the
leading space disagreeing) to tests/fixtures/lm_eval_030/pythia_tasks.json.  When
``../shared/data`` is there it also records, per task, a sha256 of the requests and golds of the
whole evaluation split (ARC excepted: no copy at hand), which tests/items/test_tasks_pythia_v0.py compares
with our items when it finds the same data.

Three things are bypassed because they need the network or packages 0.3.0 pinned to old versions:
``lm_eval.tasks`` (its __init__ imports every task), so each task file is loaded from its path;
``transformers.data.metrics.squad_metrics`` (imported by superglue.py for ReCoRD only, gone from
today's transformers), stubbed; and ``Task.download`` (the Hub loading scripts), replaced by the
rows those scripts yield: LogiQA and LAMBADA through 0.3.0's own bundled loaders
(``lm_eval/datasets/{logiqa,lambada_openai}``, called on the fixture files), the others converted
here exactly as the Hub scripts of early 2023 convert their upstream files (``piqa``: the labels
file as int ``label``; ``sciq``: the JSON rows as they are; ``winogrande``: ``sentence``,
``option1``, ``option2``, ``answer``; ``super_glue`` config ``wsc`` -- not ``wsc.fixed`` -- the
``target`` spans flattened, ``label`` 0/1, spans *not* corrected; ``ai2_arc``: the Hub rows).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import random
import sys
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import lm_eval
from lm_eval.base import Request

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DATA = FIXTURES / "data"
EDGE = DATA / "pythia_v0_edge"  # edge cases written for these tests, laid out like --data-dir
ARC_HUB = FIXTURES / "hub" / "allenai" / "ai2_arc"
SHARED = ROOT.parent / "shared" / "data"
OUT = FIXTURES / "lm_eval_030" / "pythia_tasks.json"
PIN = "0.3.0"


# --- 0.3.0's modules, loaded from their files --------------------------------------------------


def task_module(name: str):
    if name == "superglue":
        # superglue.py imports squad_metrics for ReCoRD; WSC never calls it
        metrics = types.ModuleType("transformers.data.metrics")
        metrics.squad_metrics = types.ModuleType("transformers.data.metrics.squad_metrics")
        sys.modules.setdefault("transformers.data.metrics", metrics)
        sys.modules.setdefault("transformers.data.metrics.squad_metrics", metrics.squad_metrics)
    path = Path(lm_eval.__file__).parent / "tasks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_030", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundled_loader_rows(loader: str, builder: str, path: Path) -> list[dict]:
    """Rows of 0.3.0's own dataset script (``_generate_examples`` reads nothing from ``self``)."""
    module = importlib.import_module(f"lm_eval.datasets.{loader}.{loader}")
    return [row for _, row in getattr(module, builder)._generate_examples(None, str(path), "test")]


# --- the Hub scripts' rows, from upstream files --------------------------------------------------


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def piqa_rows(root: Path) -> list[dict]:
    labels = [line.strip() for line in (root / "piqa/valid-labels.lst").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(a)}
            for d, a in zip(jsonl(root / "piqa/valid.jsonl"), labels)]


def sciq_rows(root: Path) -> list[dict]:
    return json.loads((root / "sciq/SciQ dataset-2 3/test.json").read_text(encoding="utf-8"))


def winogrande_rows(root: Path) -> list[dict]:
    return [{k: d[k] for k in ("sentence", "option1", "option2", "answer")} for d in jsonl(root / "winogrande/dev.jsonl")]


def wsc_rows(root: Path) -> list[dict]:
    """super_glue config ``wsc`` (0.3.0's DATASET_NAME): the spans as SuperGLUE released them."""
    return [{"text": r["text"], **{k: r["target"][k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")},
             "idx": r["idx"], "label": int(bool(r["label"]))} for r in jsonl(root / "wsc/val.jsonl")]


def logiqa_rows(root: Path) -> list[dict]:
    return bundled_loader_rows("logiqa", "Logiqa", root / "logiqa/Test.txt")


def lambada_rows(root: Path) -> list[dict]:
    return bundled_loader_rows("lambada_openai", "LambadaOpenAI", root / "lambada_openai/lambada_test.jsonl")


def arc_rows(config: str) -> Callable[[Path], list[dict]]:
    return lambda root: jsonl(root / config / "test.jsonl")


# task -> (0.3.0 module, class, split 0.3.0's evaluator reads, reader of that split from a data dir)
TASKS: dict[str, tuple[str, str, str, Callable[[Path], list[dict]]]] = {
    "lambada_openai": ("lambada", "LambadaOpenAI", "validation", lambada_rows),
    "piqa": ("piqa", "PiQA", "validation", piqa_rows),
    "sciq": ("sciq", "SciQ", "test", sciq_rows),
    "winogrande": ("winogrande", "Winogrande", "validation", winogrande_rows),
    "wsc": ("superglue", "SGWinogradSchemaChallenge", "validation", wsc_rows),
    "logiqa": ("logiqa", "LogiQA", "test", logiqa_rows),
    "arc_easy": ("arc", "ARCEasy", "test", arc_rows("ARC-Easy")),
    "arc_challenge": ("arc", "ARCChallenge", "test", arc_rows("ARC-Challenge")),
}
# Where each task's fixture documents are (ARC: the Hub rows the tests put in an offline cache).
FIXTURE_SETS: dict[str, dict[str, Path]] = {
    **{name: {"data": DATA} for name in ("lambada_openai", "piqa", "sciq", "logiqa")},
    "winogrande": {"data": DATA, "edge": EDGE},
    "wsc": {"data": DATA, "edge": EDGE},
    "arc_easy": {"hub": ARC_HUB},
    "arc_challenge": {"hub": ARC_HUB},
}


def build_task(name: str, rows: list[dict]):
    module_name, class_name, split, _ = TASKS[name]
    cls = getattr(task_module(module_name), class_name)
    task = cls.__new__(cls)  # Task.__init__ would download
    task._training_docs = None
    task._fewshot_docs = None
    task.dataset = {split: rows}
    return task, split


def eval_docs(task, split: str) -> list[dict]:
    """lm_eval/evaluator.py 0.3.0: test docs when the task has them, else validation docs."""
    return list(task.test_docs() if split == "test" else task.validation_docs())


def gold_of(name: str, task, doc: dict) -> int | None:
    if name == "lambada_openai":
        return None
    if name == "winogrande":
        return task.answer_to_num[doc["answer"]]
    if name == "wsc":
        return int(doc["label"])  # 1 = " yes"
    return doc["gold"]


def requests_of(task, doc: dict) -> list[list[str]]:
    """0.3.0's evaluator loop for one doc, zero-shot: every distinct request's (context, continuation)."""
    ctx = task.fewshot_context(doc=doc, num_fewshot=0, rnd=random.Random(42), description="")
    reqs = task.construct_requests(doc, ctx)
    reqs = reqs if isinstance(reqs, (list, tuple)) else [reqs]
    # A Request's index picks one of the call's return values: LAMBADA takes both (loglikelihood,
    # is_greedy) of one call, index 0 and 1; the multiple-choice tasks take index 0 of one call per choice
    # (duplicate choices, as some SciQ distractors are, stay two requests)
    return [list(req.args) for req in reqs if isinstance(req, Request) and not req.index]


def probes(name: str, task, doc: dict, pairs: list[list[str]]) -> list[dict[str, Any]]:
    """``process_results`` on log-likelihoods chosen to tell the scoring rules apart: a tie, two
    generic vectors, and (with choices of different lengths) one where dividing by the length with
    or without the leading space picks different choices."""
    n = len(pairs)
    texts = [cont[1:] for _, cont in pairs]
    vectors = [[-1.0] * n]
    for weights in ([1.0, 1.1, 0.9, 1.2, 1.0], [0.5, 2.0, 1.0, 1.0, 0.7]):
        vectors.append([-(len(t) + 1) * w for t, w in zip(texts, weights)])
    short = min(range(n), key=lambda j: len(texts[j]))
    long = max(range(n), key=lambda j: len(texts[j]))
    if len(texts[short]) < len(texts[long]):
        a, b = len(texts[short]), len(texts[long])
        vector = [-1000.0] * n
        vector[long], vector[short] = -float(b), -(a + (a + 1) * b / (b + 1)) / 2
        vectors.append(vector)
    out = []
    for vector in vectors:
        if name == "lambada_openai":  # one request: its log-likelihood and whether it is greedy
            for greedy in (True, False):
                scored = task.process_results(doc, (vector[0], greedy))
                out.append({"logprobs": vector, "is_greedy": [greedy],
                            "process_results": {k: float(v) for k, v in scored.items()}})
            continue
        # the log-likelihoods in request order (WSC: ll_yes, ll_no)
        scored = task.process_results(doc, vector)
        out.append({"logprobs": vector, "is_greedy": [False] * n,
                    "process_results": {k: float(v) for k, v in scored.items()}})
    return out


def capture_set(name: str, rows: list[dict]) -> list[dict[str, Any]]:
    task, split = build_task(name, rows)
    captured = []
    for doc_id, doc in enumerate(eval_docs(task, split)):
        pairs = requests_of(task, doc)
        captured.append({"doc_id": doc_id, "requests": pairs, "gold": gold_of(name, task, doc),
                         "probes": probes(name, task, doc, pairs)})
    return captured


def scoring_rule(name: str, task) -> dict[str, Any]:
    """What 0.3.0 reports and how it aggregates (the per-doc rule is pinned by the probes)."""
    rule = {"aggregation": {k: f"{v.__module__.split('.')[-1]}.{v.__name__}" for k, v in task.aggregation().items()},
            "higher_is_better": task.higher_is_better(), "version": task.VERSION}
    if name == "lambada_openai":
        aggregate = task.aggregation()["ppl"]
        rule["ppl_of"] = {"lls": [-1.0, -2.0, -4.5], "ppl": aggregate([-1.0, -2.0, -4.5])}
    return rule


def full_split_digest(name: str) -> dict[str, Any] | None:
    """sha256 over [requests, gold] of every doc of the evaluation split in ../shared/data."""
    if not SHARED.is_dir() or name.startswith("arc_"):
        return None
    rows = TASKS[name][3](SHARED)
    task, split = build_task(name, rows)
    entries = [[requests_of(task, doc), gold_of(name, task, doc)] for doc in eval_docs(task, split)]
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    return {
        "n": len(entries),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        # 0.3.0 tokenizes context and continuation apart; 0.4.13 (and our engine) moves a context's
        # trailing whitespace onto the continuation: the two agree when no context ends in whitespace
        "contexts_ending_in_whitespace": sum(ctx != ctx.rstrip() for reqs, _ in entries for ctx, _ in reqs),
    }


def quirks() -> dict[str, Any]:
    """0.3.0 behaviours the fixtures do not meet, recorded so the tests can say why they are not replicated."""
    task, _ = build_task("winogrande", [])
    doc = {"sentence": "First line.\n\nThen _ left.", "option1": "Ann", "option2": "Bo", "answer": "1"}
    return {
        "winogrande_blank_line_in_sentence": {
            "doc": doc, "requests": requests_of(task, doc),
            "note": "append_context splits the prompt on blank lines to drop the gold context, so a sentence"
                    " holding one repeats its first part; WinoGrande's 1,267 dev sentences hold none",
        }
    }


def main() -> None:
    if version("lm_eval") != PIN:
        raise SystemExit(f"this script needs lm-eval {PIN} (found {version('lm_eval')}); see its docstring")
    fixture: dict[str, Any] = {
        "lm_eval_version": PIN,
        "source": "lm_eval/tasks/{arc,lambada,piqa,sciq,winogrande,superglue,logiqa}.py + base.py + evaluator.py (0.3.0)",
        "written_by": "scripts/capture_pythia_v0.py",
        "tasks": {},
        "quirks": quirks(),
    }
    for name, (module_name, class_name, split, reader) in TASKS.items():
        task, _ = build_task(name, [])
        entry: dict[str, Any] = {"class": f"{module_name}.{class_name}", "split": split,
                                 "scoring": scoring_rule(name, task), "sets": {}}
        for label, root in FIXTURE_SETS[name].items():
            entry["sets"][label] = capture_set(name, reader(root))
        digest = full_split_digest(name)
        if digest is not None:
            entry["full_split"] = digest
        fixture["tasks"][name] = entry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
