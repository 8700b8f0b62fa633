"""Regenerate tests/fixtures/lm_eval_results/v0.4/: real lm-evaluation-harness 0.4.13 results files.

    python scripts/make_lm_eval_v04_fixture.py

What it does, top to bottom:
1. builds two tiny random GPT-NeoX checkpoints (tests/conftest.py::build_tiny_gpt_neox, seeds 0 and 1,
   matrices redrawn with a larger spread so that the two score differently) and lays them out as a
   real Hugging Face hub cache, repo ``harness-test/tiny-neox`` with the refs ``step100`` and
   ``step200`` pointing at their snapshots, so lm-eval loads them offline with
   ``pretrained=harness-test/tiny-neox,revision=stepN`` exactly as it would load Pythia;
2. writes three tiny local tasks (two multiple-choice tasks grouped as ``tiny_suite``, and a
   rolling-loglikelihood perplexity task) whose data are jsonl files made up here;
3. runs the ``lm-eval run`` command three times (step100 tiny_suite 2-shot, step100 tiny_ppl, step200
   tiny_suite 0-shot) with ``--limit`` and copies the results JSON files lm-eval wrote, unedited.

The files then hold what a user's lm-eval 0.4 output holds: ``results`` keyed ``metric,filter``,
``groups``/``group_subtasks``, ``n-shot``, ``n-samples``, ``higher_is_better``, ``config.model_args``.
Two of them are the same (model, step), which the importer must merge into one results.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import build_tiny_gpt_neox  # noqa: E402 (tests/ is put on the path just above)

OUT = REPO / "tests" / "fixtures" / "lm_eval_results" / "v0.4"
HUB_REPO = "harness-test/tiny-neox"
CHECKPOINTS = {"step100": 0, "step200": 1}  # revision -> seed of the random weights
RUNS = [  # (revision, tasks, num_fewshot, extra model_args)
    ("step100", "tiny_suite", 2, ",dtype=float32"),
    ("step100", "tiny_ppl", 0, ""),
    ("step200", "tiny_suite", 0, ""),
]
LIMIT = 4

ARITH = [
    ("What is 2 plus 3?", ["4", "5", "6", "7"], 1),
    ("What is 10 minus 4?", ["6", "7", "8", "14"], 0),
    ("What is 3 times 3?", ["6", "8", "9", "12"], 2),
    ("What is 12 plus 30?", ["40", "41", "42", "43"], 2),
    ("What is 8 minus 8?", ["0", "1", "8", "16"], 0),
    ("What is 5 times 2?", ["7", "10", "12", "25"], 1),
]
WORDS = [
    ("The quick brown fox jumps over the lazy", ["dog", "cat", "tree", "sky"], 0),
    ("A thousand dollars is written as $1,000.", ["00", "10", "99", "01"], 0),
    ("The answer is", ["6", "red", "Tuesday", "blue"], 0),
    ("The symbol -> represents a mathematical", ["operation", "river", "song", "colour"], 0),
    ("The following are multiple choice", ["questions", "apples", "rivers", "songs"], 0),
]
PPL_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "There are 15 trees in the grove. The answer is 6.",
    "102 + 435 -> 537 and 860 + 270 -> 1130.",
]


def mc_task_yaml(name: str) -> str:
    return f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {name}_train.jsonl
    test: {name}_test.jsonl
training_split: train
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


GROUP_YAML = """group: tiny_suite
task:
  - tiny_arith
  - tiny_words
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1.0
"""

PPL_YAML = """task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: tiny_ppl_test.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def mc_records(rows) -> list[dict]:
    return [{"question": q, "choices": c, "gold": g} for q, c, g in rows]


def sharpen_weights(folder: Path, seed: int) -> None:
    """Redraw the matrices with std 0.5: at the default init (std 0.02) the tiny model's next-token
    distribution is nearly uniform, so every checkpoint would score the same and a test could not tell
    step100's numbers from step200's."""
    import torch
    from transformers import GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.save_pretrained(folder, safe_serialization=True)


def build_hub_cache(hub: Path) -> None:
    repo = hub / ("models--" + HUB_REPO.replace("/", "--"))
    for revision, seed in CHECKPOINTS.items():
        # A made-up but well-formed commit id: lm-eval and transformers only follow refs/<revision> to it.
        commit = hashlib.sha1(f"{HUB_REPO}@{revision}".encode()).hexdigest()
        snapshot = build_tiny_gpt_neox(repo / "snapshots" / commit, seed=seed)
        sharpen_weights(snapshot, seed)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lm-eval-v04-"))
    hub, tasks, output = work / "hub", work / "tasks", work / "output"
    build_hub_cache(hub)

    tasks.mkdir()
    (tasks / "tiny_arith.yaml").write_text(mc_task_yaml("tiny_arith"))
    (tasks / "tiny_words.yaml").write_text(mc_task_yaml("tiny_words"))
    (tasks / "tiny_suite.yaml").write_text(GROUP_YAML)
    (tasks / "tiny_ppl.yaml").write_text(PPL_YAML)
    write_jsonl(tasks / "tiny_arith_train.jsonl", mc_records(ARITH[:2]))
    write_jsonl(tasks / "tiny_arith_test.jsonl", mc_records(ARITH[2:]))
    write_jsonl(tasks / "tiny_words_train.jsonl", mc_records(WORDS[:2]))
    write_jsonl(tasks / "tiny_words_test.jsonl", mc_records(WORDS[2:]))
    write_jsonl(tasks / "tiny_ppl_test.jsonl", [{"text": t} for t in PPL_TEXTS])

    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "datasets"), "TOKENIZERS_PARALLELISM": "false",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.rglob("results_*.json"):
        old.unlink()
    for revision, task, shots, extra in RUNS:
        run_out = output / f"{revision}-{task}"
        command = [
            sys.executable, "-m", "lm_eval", "run", "--model", "hf",
            "--model_args", f"pretrained={HUB_REPO},revision={revision}{extra}",
            "--tasks", task, "--include_path", str(tasks), "--num_fewshot", str(shots),
            "--limit", str(LIMIT), "--batch_size", "2", "--device", "cpu", "--seed", "1234",
            "--output_path", str(run_out),
        ]
        # cwd = the task folder, so the YAMLs' relative data_files resolve and no temp path is recorded.
        subprocess.run(command, cwd=tasks, env=env, check=True)
        (written,) = run_out.rglob("results_*.json")  # <output>/<model_name_sanitized>/results_<date>.json
        target = OUT / written.relative_to(run_out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, target)
        print(f"wrote {target.relative_to(REPO)}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
