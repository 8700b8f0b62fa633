"""Capture lm-evaluation-harness 0.3.0's exact hendrycksTest strings into a fixture.

Run it with a Python that has lm-eval 0.3.0 installed (not this project's environment, which has
0.4.13), from the repository root::

    python -m venv --system-site-packages /tmp/lmeval030
    /tmp/lmeval030/bin/pip install --no-deps lm-eval==0.3.0
    /tmp/lmeval030/bin/python scripts/capture_mmlu_pythia_v0.py

It builds 0.3.0's ``GeneralHendrycksTest`` for two subjects from the MMLU excerpts in
tests/fixtures/data/mmlu, runs 0.3.0's own evaluator logic (shuffle with Random(42), then
``fewshot_context`` and ``construct_requests`` per doc) zero-shot and 2-shot, and writes every
request's (context, continuation) and the gold index of the first three test rows (in file order)
to tests/fixtures/lm_eval_030/hendrycks_test.json.  tests/items/test_tasks_mmlu_pythia_v0.py asserts that
our items equal them.  scripts/capture_pythia_v0.py does the same for Pythia's other eight tasks, and
its docstring gives the evidence that 0.3.0 is the task code Pythia's published files were made with.

Two things are bypassed because they need the network or packages 0.3.0 pins to old versions:
``lm_eval.tasks`` (its __init__ imports every task, some needing transformers 4.x internals), so
hendrycks_test.py is loaded from its file; and ``Task.download`` (the ``hendrycks_test`` hub
script), replaced by the same rows read from the CSVs as that script yields them:
{"question": row[0], "choices": row[1:5], "answer": ClassLabel index of row[5]}.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import lm_eval
from lm_eval.base import Request

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "data" / "mmlu"
OUT = ROOT / "tests" / "fixtures" / "lm_eval_030" / "hendrycks_test.json"
SUBJECTS = ("abstract_algebra", "anatomy")
SHOTS = (0, 2)
ITEMS = 3  # first test rows, in file order


def hendrycks_module():
    path = Path(lm_eval.__file__).parent / "tasks" / "hendrycks_test.py"
    spec = importlib.util.spec_from_file_location("hendrycks_test_030", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hub_script_rows(path: Path) -> list[dict]:
    """The rows the ``hendrycks_test`` hub script yields for one CSV (answer: ClassLabel A-D -> 0-3)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])} for r in csv.reader(f)]


def build_task(module, subject: str):
    task = module.GeneralHendrycksTest.__new__(module.GeneralHendrycksTest)
    task.DATASET_NAME = subject
    task._training_docs = None
    task._fewshot_docs = None
    task.dataset = {
        "test": hub_script_rows(DATA / "test" / f"{subject}_test.csv"),
        "validation": hub_script_rows(DATA / "val" / f"{subject}_val.csv"),
        "dev": hub_script_rows(DATA / "dev" / f"{subject}_dev.csv"),
    }
    return task


def capture(task, num_fewshot: int) -> list[dict]:
    """lm_eval/evaluator.py 0.3.0's loop for one task, recording each doc's requests."""
    docs = list(task.test_docs())
    position = {id(doc): i for i, doc in enumerate(docs)}  # file order, before the shuffle
    rnd = random.Random()
    rnd.seed(42)
    rnd.shuffle(docs)
    captured = {}
    for doc in docs:
        ctx = task.fewshot_context(doc=doc, num_fewshot=num_fewshot, rnd=rnd, description="")
        requests = task.construct_requests(doc, ctx)
        captured[position[id(doc)]] = {
            "doc_id": position[id(doc)],
            "requests": [[req.args[0], req.args[1]] for req in requests if isinstance(req, Request)],
            "choices": list(doc["choices"]),
            "gold": doc["gold"],
        }
    return [captured[i] for i in range(ITEMS)]


def main() -> None:
    module = hendrycks_module()
    fixture = {
        "lm_eval_version": "0.3.0",
        "source": "lm_eval/tasks/hendrycks_test.py + lm_eval/base.py + lm_eval/evaluator.py (0.3.0)",
        "data": "tests/fixtures/data/mmlu",
        "tasks": {},
    }
    for subject in SUBJECTS:
        for shots in SHOTS:
            fixture["tasks"][f"hendrycksTest-{subject}/{shots}-shot"] = capture(build_task(module, subject), shots)
    # acc_norm divides by len(answer text) without the leading space: on this probe the two
    # readings disagree (-1.0/1 < -1.9/2 but -1.0/2 > -1.9/3).
    probe = {"choices": ["a", "bb"], "gold": 1, "logprobs": [-1.0, -1.9]}
    task = build_task(module, SUBJECTS[0])
    probe["process_results"] = task.process_results({"choices": probe["choices"], "gold": 1}, probe["logprobs"])
    fixture["acc_norm_probe"] = probe
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
