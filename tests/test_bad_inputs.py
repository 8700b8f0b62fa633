"""Bad input, table-driven, through the ``harness`` command: each case must end with exit 2, one line
on stderr that names the problem (the expected words below), no traceback, and no model loaded.

Most cases run in-process (``harness.cli.main``); a few run the real command as a subprocess.  Beside
the table: the typed Python API, folder names taken from imported files, and the mode of written files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import FIXTURES

DATA = FIXTURES / "data"
LM_EVAL_V04 = FIXTURES / "lm_eval_results" / "v0.4"
LATIN1 = "caf\xe9 na\xefve \xe0 la carte\n".encode("latin-1")  # not UTF-8


def _results_json(model: str = "org/m", step: int = 1000) -> dict:
    return {
        "schema": 1, "model": {"model": model, "revision": f"step{step}", "params_non_embedding": 1000},
        "step": step, "loss": {"loss": 3.0, "source": "corpus"},
        "tasks": {"mmlu": {"parent": None, "primary_metric": "acc", "metrics": {"acc": {
            "value": 0.3, "stderr": 0.01, "n": 100, "random_baseline": 0.25, "higher_is_better": True}}}},
    }


def _table(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"model": ["org/m"] * rows, "task": ["mmlu"] * rows, "metric": ["acc"] * rows,
                         "value": [0.25, 0.3, 0.5][:rows], "loss": [4.0, 3.0, 2.0][:rows], "step": [1, 2, 3][:rows]})


def _unwritable(world: Path) -> Path:
    """A folder this process cannot write to: a read-only one, or (as root, who may write anywhere
    permissions say no) /sys, which no one may write files into."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/sys")
    folder = world / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Every bad file the table names, built once; the placeholders of the cases."""
    w = tmp_path_factory.mktemp("bad-inputs")
    tiny = Path(tiny_model_dir)
    config_and_tokenizer = [p for p in tiny.iterdir() if p.suffix in (".json", ".txt") and p.name != "model.safetensors"]

    def model_folder(name: str, *, config=True, tokenizer=True, weights: bytes | None = None, weights_name="model.safetensors"):
        folder = w / name
        folder.mkdir()
        for path in config_and_tokenizer:
            if (path.name == "config.json" and config) or (path.name != "config.json" and tokenizer):
                shutil.copy(path, folder / path.name)
        if weights is not None:
            (folder / weights_name).write_bytes(weights)
        return folder

    real_weights = (tiny / "model.safetensors").read_bytes()
    (w / "empty-model").mkdir()
    model_folder("no-config", config=False, weights=real_weights)
    (model_folder("bad-config", weights=real_weights) / "config.json").write_text("{not json", encoding="utf-8")
    model_folder("no-weights")
    model_folder("garbage-weights", weights=b"this is not a safetensors file at all" * 10)
    model_folder("truncated-weights", weights=real_weights[: len(real_weights) // 2])
    model_folder("empty-weights", weights=b"")
    model_folder("no-tokenizer", tokenizer=False, weights=real_weights)
    sharded = model_folder("missing-shard")
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(real_weights)
    (w / "fake.gguf").write_text("not a gguf\n", encoding="utf-8")
    (w / "model.csv").write_text("a,b\n1,2\n", encoding="utf-8")

    # loss corpora
    (w / "empty.jsonl").write_text("", encoding="utf-8")
    (w / "blank.txt").write_text("  \n\n \t\n", encoding="utf-8")
    (w / "no-text.jsonl").write_text('{"content": "hello"}\n{"content": "world"}\n', encoding="utf-8")
    (w / "not-json.jsonl").write_text('{"text": "fine"}\n{oops\n', encoding="utf-8")
    (w / "text-number.jsonl").write_text('{"text": 5}\n', encoding="utf-8")
    (w / "latin1.jsonl").write_bytes(b'{"text": "' + LATIN1.strip() + b'"}\n')
    (w / "corpus.csv").write_text("text\nhello\n", encoding="utf-8")
    (w / "a-folder").mkdir()
    (w / "good.jsonl").write_text('{"text": "hello world, some text"}\n', encoding="utf-8")
    # loss logs
    (w / "bad-header.csv").write_text("when,value\n1,2\n", encoding="utf-8")
    (w / "bad-row.csv").write_text("step,loss\n1,2.5\n2,lots\n", encoding="utf-8")
    (w / "header-only.csv").write_text("step,loss\n", encoding="utf-8")
    (w / "latin1-log.csv").write_bytes(b"step,loss\n1,2.5\n" + LATIN1)
    (w / "losses.json").write_text("{}", encoding="utf-8")

    # --out that cannot be a folder
    (w / "a-file").write_text("x", encoding="utf-8")

    # task data that is not UTF-8
    latin_bb = w / "data-latin" / "bigbench" / "benchmark_tasks" / "latin_task"
    latin_bb.mkdir(parents=True)
    (latin_bb / "task.json").write_bytes(b'{"name": "latin", "description": "' + LATIN1.strip() + b'", "examples": []}')
    mmlu = w / "data-mmlu"
    shutil.copytree(DATA / "mmlu", mmlu / "mmlu")
    for path in (mmlu / "mmlu").rglob("abstract_algebra_*.csv"):
        path.write_bytes(LATIN1.strip() + b",A,B,C,D,A\n")
    gsm = w / "data-gsm8k" / "gsm8k"
    gsm.mkdir(parents=True)
    for split in ("train", "test"):
        (gsm / f"{split}.jsonl").write_bytes(b'{"question": "' + LATIN1.strip() + b'", "answer": "#### 1"}\n')
    (w / "clozet-latin1.jsonl").write_bytes(b'{"question": "' + LATIN1.strip() + b'"}\n')

    # results and tables
    good = w / "results-good" / "org__m@step1000"
    good.mkdir(parents=True)
    (good / "results.json").write_text(json.dumps(_results_json()), encoding="utf-8")
    for name, text in {"garbage": "this is not json {", "list": "[1, 2, 3]",
                       "tasks-list": json.dumps({**_results_json(), "tasks": [1, 2]})}.items():
        folder = w / f"results-{name}" / "ckpt"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(text, encoding="utf-8")
    latin_results = w / "results-latin1" / "ckpt"
    latin_results.mkdir(parents=True)
    (latin_results / "results.json").write_bytes(b'{"name": "' + LATIN1.strip() + b'"}')
    _table().to_csv(w / "table.csv", index=False)
    _table().to_parquet(w / "table.parquet", index=False)
    bad_value = _table().astype({"value": "object"})
    bad_value.loc[1, "value"] = "abc"
    bad_value.to_csv(w / "table-bad-value.csv", index=False)
    bad_loss = _table().astype({"loss": "object"})
    bad_loss.loc[2, "loss"] = "three"
    bad_loss.to_csv(w / "table-bad-loss.csv", index=False)
    bad_value.astype({"value": "string"}).to_parquet(w / "table-bad-value.parquet", index=False)
    (w / "table-latin1.csv").write_bytes(b"model,task,metric,value\n" + LATIN1.strip() + b",mmlu,acc,0.5\n")
    (w / "notes.txt").write_text("hello\n", encoding="utf-8")
    not_lm_eval = w / "not-lm-eval"
    not_lm_eval.mkdir()
    (not_lm_eval / "other.json").write_text('{"hello": 1}', encoding="utf-8")
    (w / "no-json").mkdir()
    # a run's folder as harness eval leaves it (one finished unit), for harness export
    units = w / "store-one" / "org__m" / "step1000" / "units"
    units.mkdir(parents=True)
    entry = {**_results_json()["tasks"]["mmlu"], "n": 100, "num_fewshot": 5}
    (units / "k1.json").write_text(json.dumps({
        "schema": 1, "kind": "task", "key": "k1", "task": "mmlu", "status": "done", "finished": "2026-01-01T00:00:00+00:00",
        "items": "k1.items.jsonl", "name": "org/m", "checkpoint": {"model": "org/m", "revision": "step1000"}, "step": 1000,
        "tasks": {"mmlu": entry}, "stats": {}, "record": {"limit": None}}), encoding="utf-8")

    # sweep configs
    def sweep_yaml(name: str, text: str) -> None:
        (w / f"{name}.yaml").write_text(f"tasks: bigbench:modified_arithmetic\ndata_dir: {DATA}\nout: {w / 'sweep-out'}\n"
                                        f"models:\n  - model: org/m\n    revisions: main\n{text}", encoding="utf-8")

    for key, value in {"trust_remote_code": '"false"', "prefix_cache": '"false"', "prefetch": "1",
                       "add_bos_token": '"yes"', "limit": '"10"', "limit_float": "2.5", "batch_size": "big",
                       "save_every": "true", "num_fewshot": "-1", "device": "1", "data_revision": "123",
                       "prompt": "fancy", "bigbench_mode": "xx", "unknown_key": "1"}.items():
        sweep_yaml(f"sweep-{key}", f"{key.removesuffix('_float')}: {value}\n")
    sweep_yaml("sweep-loss-window", "loss: {corpus: " + str(w / "good.jsonl") + ", window: x}\n")
    sweep_yaml("sweep-task-files", "task_files: {clozet: 5}\n")
    (w / "sweep-models-map.yaml").write_text("tasks: mmlu\nmodels: {model: org/m}\n", encoding="utf-8")
    (w / "sweep-models-empty.yaml").write_text("tasks: mmlu\nmodels: []\n", encoding="utf-8")
    (w / "sweep-name-number.yaml").write_text("tasks: mmlu\nmodels:\n  - model: org/m\n    revisions: main\n    name: 5\n",
                                              encoding="utf-8")
    (w / "sweep-tasks-number.yaml").write_text("tasks: 5\nmodels:\n  - model: org/m\n    revisions: main\n",
                                               encoding="utf-8")
    (w / "sweep-syntax.yaml").write_text("tasks: [mmlu\nmodels: :\n", encoding="utf-8")
    (w / "sweep-latin1.yaml").write_bytes(b"tasks: mmlu\n# " + LATIN1)

    return {"w": str(w), "tiny": str(tiny), "data": str(DATA), "unwritable": str(_unwritable(w))}


EVAL = ["eval", "--tasks", "bigbench:modified_arithmetic", "--data-dir", "{data}", "--out", "{w}/out", "--device", "cpu",
        "--no-progress"]
SWEEP = ["sweep", "--model", "org/m", "--revisions", "main", "--tasks", "bigbench:modified_arithmetic",
         "--data-dir", "{data}", "--no-progress"]
LOSS = ["loss", "--device", "cpu"]
CORPUS_EVAL = ["eval", "--model", "{tiny}", *EVAL[1:]]
REPORT_OUT = ["report", "{w}/table.csv", "--no-figures", "--bootstrap", "100"]
EXPORT = ["--format", "lm-eval", "--out", "{w}/exp"]

# (id, arguments, words the one line must hold)
CASES = [
    # -- the model folder's shape, before anything is planned or loaded
    ("empty model folder", [*EVAL, "--model", "{w}/empty-model"], ["no config.json", "empty"]),
    ("model folder without config", [*EVAL, "--model", "{w}/no-config"], ["no config.json", "model.safetensors"]),
    ("config.json not JSON", [*EVAL, "--model", "{w}/bad-config"], ["config.json is not valid JSON"]),
    ("no weights", [*EVAL, "--model", "{w}/no-weights"], ["no weights"]),
    ("garbage safetensors", [*EVAL, "--model", "{w}/garbage-weights"], ["not a readable safetensors"]),
    ("truncated safetensors", [*EVAL, "--model", "{w}/truncated-weights"], ["truncated"]),
    ("empty safetensors", [*EVAL, "--model", "{w}/empty-weights"], ["is empty"]),
    ("no tokenizer files", [*EVAL, "--model", "{w}/no-tokenizer"], ["no tokenizer files"]),
    ("missing weight shard", [*EVAL, "--model", "{w}/missing-shard"], ["model-00002-of-00002.safetensors"]),
    ("gguf that is not one", [*EVAL, "--model", "{w}/fake.gguf"], ["not a GGUF file"]),
    ("missing gguf", [*EVAL, "--model", "{w}/nope.gguf"], ["no such GGUF file"]),
    ("model is a csv", [*EVAL, "--model", "{w}/model.csv"], ["is a file but not a .gguf"]),
    ("missing model folder", [*EVAL, "--model", "{w}/nope/checkpoint-1"], ["no such folder"]),
    ("empty model name", [*EVAL, "--model", ""], ["--model is empty"]),
    ("sweep: checkpoints a file", [*SWEEP[:1], "--checkpoints", "{w}/table.csv", *SWEEP[5:]], ["--checkpoints", "is a file"]),
    ("sweep: empty checkpoints folder", [*SWEEP[:1], "--checkpoints", "{w}/a-folder", *SWEEP[5:]], ["no checkpoints found"]),
    ("revision with a local folder", [*EVAL, "--model", "{tiny}", "--revision", "step1"], ["--revision", "local folder"]),
    ("revision with a gguf", [*EVAL, "--model", "{w}/fake.gguf", "--revision", "main"], ["--revision", "GGUF"]),
    ("loss: empty model folder", [*LOSS, "--model", "{w}/empty-model", "--loss-corpus", "{w}/good.jsonl"], ["no config.json"]),
    ("loss: revision with a folder", [*LOSS, "--model", "{tiny}", "--revision", "x", "--loss-corpus", "{w}/good.jsonl"],
     ["--revision"]),
    # -- the loss corpus's content, before any model loads
    ("empty corpus", [*CORPUS_EVAL, "--loss-corpus", "{w}/empty.jsonl"], ["holds no text"]),
    ("blank txt corpus", [*CORPUS_EVAL, "--loss-corpus", "{w}/blank.txt"], ["holds no text"]),
    ("corpus without text field", [*CORPUS_EVAL, "--loss-corpus", "{w}/no-text.jsonl"], ['"text" field', "'content'"]),
    ("corpus line not JSON", [*CORPUS_EVAL, "--loss-corpus", "{w}/not-json.jsonl"], ["line 2 is not JSON"]),
    ("corpus text a number", [*CORPUS_EVAL, "--loss-corpus", "{w}/text-number.jsonl"], ['"text" field']),
    ("corpus not UTF-8", [*CORPUS_EVAL, "--loss-corpus", "{w}/latin1.jsonl"], ["latin1.jsonl", "not UTF-8"]),
    ("corpus is a folder", [*CORPUS_EVAL, "--loss-corpus", "{w}/a-folder"], ["is a folder"]),
    ("corpus missing", [*CORPUS_EVAL, "--loss-corpus", "{w}/nope.jsonl"], ["does not exist"]),
    ("corpus csv", [*CORPUS_EVAL, "--loss-corpus", "{w}/corpus.csv"], ["neither .txt nor .jsonl"]),
    ("loss: corpus without text", [*LOSS, "--model", "{tiny}", "--loss-corpus", "{w}/no-text.jsonl"], ['"text" field']),
    ("loss: no corpus", [*LOSS, "--model", "{tiny}"], ["needs --loss-corpus"]),
    ("sweep: empty corpus", [*SWEEP, "--loss-corpus", "{w}/empty.jsonl"], ["holds no text"]),
    ("sweep: loss log missing", [*SWEEP, "--loss-from", "{w}/nope.csv"], ["does not exist"]),
    ("sweep: loss log json", [*SWEEP, "--loss-from", "{w}/losses.json"], ["trainer-state", ".csv/.tsv"]),
    ("sweep: loss log header", [*SWEEP, "--loss-from", "{w}/bad-header.csv"], ["needs a step column"]),
    ("sweep: loss log row", [*SWEEP, "--loss-from", "{w}/bad-row.csv"], ["line 3 is not a step and a loss"]),
    ("sweep: loss log not UTF-8", [*SWEEP, "--loss-from", "{w}/latin1-log.csv"], ["not UTF-8"]),
    ("sweep: loss log without rows", [*SWEEP, "--loss-from", "{w}/header-only.csv"], ["no step/loss rows"]),
    # -- --out: a folder this process can write, for every command that writes
    ("eval: out is a file", [*CORPUS_EVAL, "--out", "{w}/a-file"], ["--out", "is a file"]),
    ("eval: out under a file", [*CORPUS_EVAL, "--out", "{w}/a-file/sub"], ["is under the file"]),
    ("eval: out unwritable", [*CORPUS_EVAL, "--out", "{unwritable}"], ["not a folder you can write to"]),
    ("sweep: out is a file", [*SWEEP, "--out", "{w}/a-file"], ["is a file"]),
    ("loss: out is a file", [*LOSS, "--model", "{tiny}", "--loss-corpus", "{w}/good.jsonl", "--out", "{w}/a-file"],
     ["is a file"]),
    ("report: out is a file", [*REPORT_OUT, "--out", "{w}/a-file"], ["is a file"]),
    ("report: out under a file", [*REPORT_OUT, "--out", "{w}/a-file/report"], ["is under the file"]),
    ("report: out unwritable", [*REPORT_OUT, "--out", "{unwritable}"], ["not a folder you can write to"]),
    ("import: out is a file", ["import-lm-eval", str(LM_EVAL_V04), "--out", "{w}/a-file"], ["is a file"]),
    ("import: out unwritable", ["import-lm-eval", str(LM_EVAL_V04), "--out", "{unwritable}"], ["not a folder you can write"]),
    ("compare: out is a file", ["compare", "{w}/results-good", "{w}/results-good", "--out", "{w}/a-file"], ["is a file"]),
    ("table: output is a folder", ["table", "{w}/results-good", "--output", "{w}/a-folder"], ["is a folder"]),
    ("table: output under a file", ["table", "{w}/results-good", "--output", "{w}/a-file/t.csv"], ["a-file is a file"]),
    ("demo: out is a file", ["demo", "--quick", "--out", "{w}/a-file"], ["is a file"]),
    ("train-tiny: out is a file", ["train-tiny", "--quick", "--out", "{w}/a-file"], ["is a file"]),
    ("log-to under a file", [*CORPUS_EVAL, "--log-to", "tensorboard:{w}/a-file/tb"], ["under the file"]),
    # -- files that are not UTF-8
    ("task.json not UTF-8", [*EVAL, "--model", "{tiny}", "--tasks", "bigbench:latin_task", "--data-dir", "{w}/data-latin"],
     ["task.json", "not UTF-8"]),
    ("mmlu csv not UTF-8", [*EVAL, "--model", "{tiny}", "--tasks", "mmlu:abstract_algebra", "--data-dir", "{w}/data-mmlu"],
     ["abstract_algebra", "not UTF-8"]),
    ("gsm8k jsonl not UTF-8", [*EVAL, "--model", "{tiny}", "--tasks", "gsm8k", "--data-dir", "{w}/data-gsm8k"],
     ["gsm8k", "not UTF-8"]),
    ("task file not UTF-8", [*EVAL, "--model", "{tiny}", "--tasks", "clozet", "--task-file", "clozet={w}/clozet-latin1.jsonl"],
     ["clozet-latin1.jsonl", "not UTF-8"]),
    ("sweep yaml not UTF-8", ["sweep", "--config", "{w}/sweep-latin1.yaml"], ["sweep-latin1.yaml", "not UTF-8"]),
    ("report table not UTF-8", ["report", "{w}/table-latin1.csv", "--out", "{w}/r"], ["not UTF-8"]),
    ("table: results not UTF-8", ["table", "{w}/results-latin1"], ["results.json", "not UTF-8"]),
    # -- a table where a folder is expected, and the reverse
    ("table of a csv", ["table", "{w}/table.csv"], ["is a table", "harness report"]),
    ("table of a parquet", ["table", "{w}/table.parquet"], ["is a table"]),
    ("table of garbage results.json", ["table", "{w}/results-garbage/ckpt/results.json"], ["not a results file", "not JSON"]),
    ("table of a folder of garbage", ["table", "{w}/results-garbage"], ["not a results file"]),
    ("table of a JSON list", ["table", "{w}/results-list"], ["not a results file", "list"]),
    ("table of tasks as a list", ["table", "{w}/results-tasks-list"], ["'tasks' is a list"]),
    ("table of a txt", ["table", "{w}/notes.txt"], ["not a results folder"]),
    ("table of nothing", ["table", "{w}/nope"], ["does not exist"]),
    ("compare: ours a csv", ["compare", "{w}/table.csv", "{w}/results-good"], ["OURS", "is a table"]),
    ("compare: reference a parquet", ["compare", "{w}/results-good", "{w}/table.parquet"], ["REFERENCE", "is a table"]),
    ("compare: missing", ["compare", "{w}/results-good", "{w}/nope"], ["does not exist"]),
    ("compare: empty folder", ["compare", "{w}/a-folder", "{w}/results-good"], ["holds no results.json"]),
    ("table of an empty folder", ["table", "{w}/a-folder"], ["holds no results.json"]),
    ("task file missing", [*CORPUS_EVAL, "--tasks", "clozet", "--task-file", "clozet={w}/nope.jsonl"], ["does not exist"]),
    ("compare: garbage results", ["compare", "{w}/results-good", "{w}/results-garbage"], ["not a results file"]),
    ("report of garbage results", ["report", "{w}/results-garbage", "--out", "{w}/r"], ["not a results file"]),
    ("report of a txt", ["report", "{w}/notes.txt", "--out", "{w}/r"], ["neither a results folder nor a table"]),
    ("report of nothing", ["report", "{w}/nope", "--out", "{w}/r"], ["does not exist"]),
    ("data dir is a file", [*CORPUS_EVAL, "--data-dir", "{w}/table.csv"], ["--data-dir", "is a file"]),
    ("sweep: data dir is a file", [*SWEEP, "--data-dir", "{w}/table.csv"], ["--data-dir", "is a file"]),
    ("prompt: data dir is a file", ["prompt", "--task", "mmlu:anatomy", "--data-dir", "{w}/a-file"], ["is a file"]),
    ("config is a folder", ["sweep", "--config", "{w}/a-folder"], ["--config", "is a folder"]),
    ("config missing", ["sweep", "--config", "{w}/nope.yaml"], ["--config", "does not exist"]),
    ("task file is a folder", [*CORPUS_EVAL, "--tasks", "clozet", "--task-file", "clozet={w}/a-folder"], ["is a folder"]),
    ("import a csv", ["import-lm-eval", "{w}/table.csv", "--out", "{w}/imp"], ["not a .json file"]),
    ("import a folder of other json", ["import-lm-eval", "{w}/not-lm-eval", "--out", "{w}/imp"],
     ["no lm-evaluation-harness results", "1 JSON file(s) skipped"]),
    ("import an empty folder", ["import-lm-eval", "{w}/no-json", "--out", "{w}/imp"], ["no lm-evaluation-harness results"]),
    ("import nothing", ["import-lm-eval", "{w}/nope", "--out", "{w}/imp"], ["does not exist"]),
    ("export nothing", ["export", "{w}/nope", *EXPORT], ["RESULTS_DIR", "does not exist"]),
    ("export a file", ["export", "{w}/notes.txt", *EXPORT], ["RESULTS_DIR", "is a file"]),
    ("export an empty folder", ["export", "{w}/a-folder", *EXPORT], ["no finished results"]),
    ("export imported results", ["export", "{w}/results-good", *EXPORT], ["no finished results"]),
    ("export: out is a file", ["export", "{w}/store-one", "--format", "lm-eval", "--out", "{w}/a-file"], ["is a file"]),
    ("export: out under a file", ["export", "{w}/store-one", "--format", "lm-eval", "--out", "{w}/a-file/x"],
     ["is under the file"]),
    ("export: out unwritable", ["export", "{w}/store-one", "--format", "lm-eval", "--out", "{unwritable}"],
     ["not a folder you can write"]),
    ("export: unknown format", ["export", "{w}/store-one", "--format", "csv", "--out", "{w}/exp"], ["--format", "csv"]),
    ("export: no format", ["export", "{w}/store-one", "--out", "{w}/exp"], ["--format"]),
    # -- report: cells of value / loss that are not numbers
    ("report: value not a number", ["report", "{w}/table-bad-value.csv", "--out", "{w}/r"],
     ["1 cell(s)", "'value'", "'abc'", "line 3"]),
    ("report: loss not a number", ["report", "{w}/table-bad-loss.csv", "--out", "{w}/r"], ["1 cell(s)", "'loss'", "line 4"]),
    ("report: parquet value not a number", ["report", "{w}/table-bad-value.parquet", "--out", "{w}/r"], ["'value'", "row 2"]),
    # -- numeric flags, range-checked before any work
    ("limit 0", [*CORPUS_EVAL, "--limit", "0"], ["--limit 0"]),
    ("limit -3", [*CORPUS_EVAL, "--limit", "-3"], ["--limit -3"]),
    ("num-fewshot -1", [*CORPUS_EVAL, "--num-fewshot", "-1"], ["--num-fewshot -1"]),
    ("batch-size 0", [*CORPUS_EVAL, "--batch-size", "0"], ["--batch-size 0"]),
    ("loss-window 1", [*CORPUS_EVAL, "--loss-window", "1"], ["--loss-window 1"]),
    ("loss-tokens 0", [*CORPUS_EVAL, "--loss-tokens", "0"], ["--loss-tokens 0"]),
    ("save-every 0", [*CORPUS_EVAL, "--save-every", "0"], ["--save-every"]),
    ("shard 3/2", [*CORPUS_EVAL, "--shard", "3/2"], ["--shard"]),
    ("shard text", [*CORPUS_EVAL, "--shard", "half"], ["--shard"]),
    ("sweep: loss-smoothing 0", [*SWEEP, "--loss-from", "{w}/bad-row.csv", "--loss-smoothing", "0"], ["--loss-smoothing"]),
    ("sweep: tokens-per-step 0", [*SWEEP, "--tokens-per-step", "0"], ["tokens per step"]),
    ("sweep: tokens-per-step word", [*SWEEP, "--tokens-per-step", "lots"], ["tokens per step", "pythia"]),
    ("sweep: limit 0", [*SWEEP, "--limit", "0"], ["--limit"]),
    ("table: tokens-per-step -5", ["table", "{w}/results-good", "--tokens-per-step", "-5"], ["tokens per step"]),
    ("report: bootstrap 5", ["report", "{w}/table.csv", "--bootstrap", "5", "--out", "{w}/r"], ["--bootstrap"]),
    ("report: cut-quantile 1.5", ["report", "{w}/table.csv", "--cut-quantile", "1.5", "--out", "{w}/r"], ["--cut-quantile"]),
    ("report: max-loss -1", ["report", "{w}/table.csv", "--max-loss", "-1", "--out", "{w}/r"], ["--max-loss"]),
    ("report: max-loss inf", ["report", "{w}/table.csv", "--max-loss", "inf", "--out", "{w}/r"], ["--max-loss"]),
    ("report: cut nan", ["report", "{w}/table.csv", "--cut", "nan", "--out", "{w}/r"], ["--cut"]),
    ("report: seed -1", ["report", "{w}/table.csv", "--seed", "-1", "--out", "{w}/r"], ["--seed -1"]),
    ("compare: tolerance 0", ["compare", "{w}/results-good", "{w}/results-good", "--tolerance", "0"], ["--tolerance"]),
    ("compare: float-tolerance -1", ["compare", "{w}/results-good", "{w}/results-good", "--float-tolerance", "-1"],
     ["--float-tolerance"]),
    ("compare: tolerance-items -1", ["compare", "{w}/results-good", "{w}/results-good", "--tolerance-items", "-1"],
     ["--tolerance-items"]),
    ("prompt: index -1", ["prompt", "--task", "mmlu:abstract_algebra", "--index", "-1", "--data-dir", "{data}"],
     ["--index -1", ">= 0"]),
    ("prompt: index too large", ["prompt", "--task", "mmlu:abstract_algebra", "--index", "100000", "--data-dir", "{data}"],
     ["no item with doc_id 100000"]),
    ("prompt: num-fewshot -2", ["prompt", "--task", "mmlu:abstract_algebra", "--num-fewshot", "-2", "--data-dir", "{data}"],
     ["--num-fewshot -2"]),
    ("demo: threads 0", ["demo", "--quick", "--threads", "0", "--out", "{w}/demo"], ["--threads 0"]),
    ("demo: seed -1", ["demo", "--quick", "--seed", "-1", "--out", "{w}/demo"], ["--seed -1"]),
    ("train-tiny: threads -2", ["train-tiny", "--quick", "--threads", "-2", "--out", "{w}/suite"], ["--threads -2"]),
    ("loss: loss-window 1", [*LOSS, "--model", "{tiny}", "--loss-corpus", "{w}/good.jsonl", "--loss-window", "1"],
     ["--loss-window 1"]),
    ("loss: batch-size 0", [*LOSS, "--model", "{tiny}", "--loss-corpus", "{w}/good.jsonl", "--batch-size", "0"],
     ["--batch-size 0"]),
    # -- argparse's own errors: one line too
    ("limit not a number", [*CORPUS_EVAL, "--limit", "abc"], ["--limit", "invalid int value"]),
    ("batch size a word", [*CORPUS_EVAL, "--batch-size", "many"], ["must be an integer or 'auto'"]),
    ("table: unknown format", ["table", "{w}/results-good", "--format", "xml"], ["--format", "xml"]),
    ("eval without --tasks", ["eval", "--model", "{tiny}"], ["--tasks"]),
    ("unknown flag", [*CORPUS_EVAL, "--limmit", "3"], ["unrecognized arguments: --limmit"]),
    ("unknown command", ["evaluate"], ["invalid choice: 'evaluate'"]),
    # -- tasks, data and the rest
    ("unknown task", [*CORPUS_EVAL, "--tasks", "mmlu,nosuchtask"], ["nosuchtask", "gsm8k"]),
    ("unknown bigbench task", [*CORPUS_EVAL, "--tasks", "bigbench:nosuch"], ["unknown BIG-bench task", "modified_arithmetic"]),
    ("missing data", [*CORPUS_EVAL, "--tasks", "mmlu:anatomy", "--data-dir", "{w}/a-folder"], ["anatomy", "--data-dir"]),
    ("bigbench without data dir", ["eval", "--model", "{tiny}", "--tasks", "bigbench:modified_arithmetic", "--out", "{w}/o"],
     ["--data-dir"]),
    ("prompt: unknown task", ["prompt", "--task", "nosuchtask", "--data-dir", "{data}"], ["nosuchtask"]),
    ("sweep: no model", ["sweep", "--tasks", "mmlu"], ["needs a model"]),
    ("sweep: unknown preset", ["sweep", "--preset", "nosuch"], ["unknown preset", "pythia-v1"]),
    ("sweep: nothing to do", ["sweep", "--model", "org/m", "--revisions", "main"], ["nothing to do"]),
    ("log-to bogus", [*CORPUS_EVAL, "--log-to", "mlflow"], ["--log-to", "tensorboard:DIR"]),
    ("sweep: sizes without config", [*SWEEP, "--sizes", "70m"], ["--sizes"]),
    # -- sweep YAML: every value checked by type, one line naming the key and the type
    ("yaml trust_remote_code string", ["sweep", "--config", "{w}/sweep-trust_remote_code.yaml"],
     ["trust_remote_code", "a boolean", "string 'false'"]),
    ("yaml prefix_cache string", ["sweep", "--config", "{w}/sweep-prefix_cache.yaml"], ["prefix_cache", "a boolean"]),
    ("yaml prefetch number", ["sweep", "--config", "{w}/sweep-prefetch.yaml"], ["prefetch", "a boolean", "whole number 1"]),
    ("yaml add_bos_token string", ["sweep", "--config", "{w}/sweep-add_bos_token.yaml"], ["add_bos_token", "a boolean"]),
    ("yaml limit string", ["sweep", "--config", "{w}/sweep-limit.yaml"], ["limit", "a whole number", "string '10'"]),
    ("yaml limit float", ["sweep", "--config", "{w}/sweep-limit_float.yaml"], ["limit", "a whole number", "2.5"]),
    ("yaml batch_size word", ["sweep", "--config", "{w}/sweep-batch_size.yaml"], ["batch_size", "'auto'"]),
    ("yaml save_every boolean", ["sweep", "--config", "{w}/sweep-save_every.yaml"], ["save_every", "a whole number"]),
    ("yaml num_fewshot negative", ["sweep", "--config", "{w}/sweep-num_fewshot.yaml"], ["num_fewshot", ">= 0"]),
    ("yaml device number", ["sweep", "--config", "{w}/sweep-device.yaml"], ["device", "a string"]),
    ("yaml data_revision number", ["sweep", "--config", "{w}/sweep-data_revision.yaml"], ["data_revision", "quote it"]),
    ("yaml prompt unknown", ["sweep", "--config", "{w}/sweep-prompt.yaml"], ["prompt 'fancy'", "zeroshot"]),
    ("yaml bigbench_mode unknown", ["sweep", "--config", "{w}/sweep-bigbench_mode.yaml"], ["bigbench_mode 'xx'"]),
    ("yaml unknown key", ["sweep", "--config", "{w}/sweep-unknown_key.yaml"], ["unknown setting", "unknown_key"]),
    ("yaml loss window word", ["sweep", "--config", "{w}/sweep-loss-window.yaml"], ["loss.window", "a whole number"]),
    ("yaml task_files number", ["sweep", "--config", "{w}/sweep-task-files.yaml"], ["task_files.clozet", "a string"]),
    ("yaml models a mapping", ["sweep", "--config", "{w}/sweep-models-map.yaml"], ["models must be a list"]),
    ("yaml models empty", ["sweep", "--config", "{w}/sweep-models-empty.yaml"], ["lists no models"]),
    ("yaml name number", ["sweep", "--config", "{w}/sweep-name-number.yaml"], ["models[0].name", "a string"]),
    ("yaml tasks number", ["sweep", "--config", "{w}/sweep-tasks-number.yaml"], ["tasks", "a string or a list"]),
    ("yaml syntax", ["sweep", "--config", "{w}/sweep-syntax.yaml"], ["not valid YAML"]),
]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: every bad input is caught before one."""
    from harness.engine import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


def _argv(arguments: list[str], world: dict[str, str]) -> list[str]:
    return [argument.format(**world) for argument in arguments]


def _one_clean_line(code: int, err: str, expected: list[str]) -> str:
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, stderr:\n{err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err[-2000:]}"
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("arguments, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_2(arguments, expected, world, no_model_load, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.chdir(world["w"])  # a command's default folders (results/, report/) land in the test's folder
    try:
        code = main(_argv(arguments, world))
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    _one_clean_line(code, capsys.readouterr().err, expected)


def test_the_table_is_large_and_covers_every_command():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    commands = {case[1][0] for case in CASES}
    assert commands >= {"eval", "sweep", "loss", "prompt", "table", "report", "compare", "import-lm-eval", "export", "demo", "train-tiny"}


# a few through the real command: what a user sees, from a fresh process
SUBPROCESS_CASES = ["empty model folder", "yaml trust_remote_code string", "table of garbage results.json"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_through_the_real_command(name, world, tmp_path):
    (arguments, expected), = [case[1:] for case in CASES if case[0] == name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *_argv(arguments, world)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    _one_clean_line(proc.returncode, proc.stderr, expected)


def test_empty_model_folder_writes_no_failure_records(world, tmp_path, capsys):
    """Found before planning: no results folder, no failure record, exit 2 (the README's promise)."""
    from harness.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--model", f"{world['w']}/empty-model", "--tasks", "bigbench:modified_arithmetic",
                 "--data-dir", str(DATA), "--out", str(out)]) == 2
    assert not list(out.rglob("*.json")) and not list(out.rglob("failed-*"))


# -- typed configuration: the Python API ---------------------------------------------------------------


@pytest.mark.parametrize("arguments, words", [
    ({"prefix_cache": "false"}, ["evaluate_model: prefix_cache", "a boolean", "string 'false'"]),
    ({"limit": "10"}, ["evaluate_model: limit", "a whole number"]),
    ({"limit": True}, ["evaluate_model: limit", "a whole number", "boolean True"]),
    ({"batch_size": 2.0}, ["evaluate_model: batch_size", "'auto'"]),
    ({"add_bos_token": "no"}, ["add_bos_token", "a boolean"]),
    ({"progress": 1}, ["progress", "a boolean"]),
    ({"loss_window": "2048"}, ["loss_window", "a whole number"]),
    ({"step": 1.5}, ["step", "a whole number"]),
    ({"train_loss": "2.3"}, ["train_loss", "a number"]),
    ({"name": 5}, ["name", "a string"]),
    ({"tasks": [1, 2]}, ["tasks", "a string or a list of strings"]),
    ({"data_dir": 5}, ["data_dir", "a path"]),
])
def test_evaluate_model_checks_argument_types_first(arguments, words, model_and_tokenizer):
    from harness import evaluate_model
    from harness.errors import UserError

    model, tokenizer = model_and_tokenizer
    kwargs = {"tasks": "bigbench:modified_arithmetic", "data_dir": DATA, "limit": 1, **arguments}
    with pytest.raises(UserError) as error:
        evaluate_model(model, tokenizer, **kwargs)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("arguments, words", [
    ({"limit": "10"}, ["EvalCallback: limit", "a whole number"]),
    ({"batch_size": "big"}, ["EvalCallback: batch_size", "'auto'"]),
    ({"loss_window": 1}, ["loss_window 1", ">= 2"]),
    ({"tokens_per_step": "2048"}, ["tokens_per_step", "a whole number"]),
    ({"num_fewshot": -1}, ["num_fewshot -1"]),
    ({"name": ["a"]}, ["name", "a string"]),
])
def test_eval_callback_checks_argument_types_when_made(arguments, words, tmp_path):
    from harness import EvalCallback
    from harness.errors import UserError

    with pytest.raises(UserError) as error:
        EvalCallback(["bigbench:modified_arithmetic"], tmp_path, data_dir=DATA, **arguments)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_sweep_yaml_booleans_are_taken_as_written(tmp_path):
    """Real YAML booleans pass through unchanged (never bool()-ed): false stays off."""
    from harness.runs.sweep_config import load_sweep_config

    path = tmp_path / "sweep.yaml"
    path.write_text("tasks: mmlu\ntrust_remote_code: false\nprefix_cache: false\nprefetch: true\nadd_bos_token: null\n"
                    "models:\n  - model: org/m\n    revisions: main\n", encoding="utf-8")
    config = load_sweep_config(path)
    assert config.trust_remote_code is False and config.prefix_cache is False and config.prefetch is True
    assert config.add_bos_token is None


# -- no write outside --out --------------------------------------------------------------------------


@pytest.mark.parametrize("pretrained", ["..", "../..", "/tmp/elsewhere", "a/../../b", "", ".", "./", "..\\..\\x"])
def test_imported_model_names_never_leave_out(pretrained, tmp_path, capsys):
    """``model_args`` naming ``..``, an absolute path, a climbing path or nothing: the results land in
    one plain folder under --out, and nothing is written anywhere else."""
    from harness.cli import main

    source = json.loads(next(LM_EVAL_V04.rglob("*.json")).read_text(encoding="utf-8"))
    source["config"]["model_args"] = f"pretrained={pretrained},revision=step1000"
    source.pop("model_name", None)
    inputs = tmp_path / "in" / "deep" / "er"
    inputs.mkdir(parents=True)
    (inputs / "results.json").write_text(json.dumps(source), encoding="utf-8")
    out = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}
    assert main(["import-lm-eval", str(inputs), "--out", str(out)]) == 0
    written = {p for p in tmp_path.rglob("*")} - before
    files = [p for p in written if p.is_file()]
    assert len(files) == 1 and files[0].name == "results.json"
    assert files[0].parent.parent == out and files[0].parent.name not in ("", ".", "..")
    assert all(out in p.parents or p == out or p in out.parents for p in written)  # out itself made on the way


def test_folder_names_from_model_ids_are_one_plain_component():
    from harness.interop.import_lm_eval import folder_name

    for model in ["..", "../../etc", "/etc/passwd", "", ".", "a/../b", "C:\\x\\..\\y", "\x00", "~/x"]:
        name = folder_name(model, None)
        assert name and "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")
    assert folder_name("EleutherAI/pythia-160m", "step1000") == "EleutherAI__pythia-160m@step1000"


# -- files written with the user's umask ---------------------------------------------------------------


def test_written_files_follow_the_umask(tmp_path):
    from harness import store

    previous = os.umask(0o022)
    try:
        store.write_json_atomic(tmp_path / "a" / "results.json", {"x": 1})
        store.write_text_atomic(tmp_path / "b.txt", "x")
        os.umask(0o027)
        store.write_jsonl_atomic(tmp_path / "c.jsonl", [{"x": 1}])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a" / "results.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c.jsonl").stat().st_mode) == 0o640
    assert json.loads((tmp_path / "a" / "results.json").read_text(encoding="utf-8")) == {"x": 1}


def test_model_names_from_the_user_never_leave_out(tiny_model_dir, tmp_path, capsys, one_torch_thread):
    """A sweep's model names become folder names: ``..``-climbing and absolute ones stay under --out."""
    from harness.cli import main

    work = tmp_path / "work"
    work.mkdir()
    config = work / "sweep.yaml"
    config.write_text(
        f"tasks: bigbench:modified_arithmetic/three_digit_addition_control\ndata_dir: {DATA}\nlimit: 1\nbatch_size: 1\n"
        f"device: cpu\ndtype: float32\nprefetch: false\nout: {work / 'out'}\nmodels:\n"
        f"  - {{checkpoints: {tiny_model_dir}, name: ../../escape}}\n  - {{checkpoints: {tiny_model_dir}, name: {tmp_path}/abs}}\n",
        encoding="utf-8")
    before = set(tmp_path.rglob("*"))
    assert main(["sweep", "--config", str(config), "--no-progress"]) == 0, capsys.readouterr().err
    written = set(tmp_path.rglob("*")) - before
    out = work / "out"
    assert len(list(out.rglob("results.json"))) == 2
    assert written and all(out in p.parents or p == out for p in written), sorted(map(str, written))


def test_checking_out_leaves_nothing_behind_and_table_makes_its_folder(world, tmp_path, capsys):
    """The --out check tries the folder for real and removes what it made: a command refused later
    (here an unknown task) leaves no empty folders; one that runs makes them (table --output)."""
    from harness.cli import main

    out = tmp_path / "new" / "deeper"
    assert main(["eval", "--model", world["tiny"], "--tasks", "nosuchtask", "--out", str(out)]) == 2
    assert "nosuchtask" in capsys.readouterr().err and not (tmp_path / "new").exists()
    target = tmp_path / "tables" / "t.csv"
    assert main(["table", f"{world['w']}/results-good", "--output", str(target)]) == 0
    assert pd.read_csv(target)["value"].tolist() == [0.3]
