"""End to end through the ``harness`` command, with a tiny GPT-NeoX checkpoint and the fixture data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import FIXTURES, eval_items, run_harness

DATA = FIXTURES / "data"
TASKS = "mmlu:abstract_algebra,gsm8k,bigbench:modified_arithmetic"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "val.jsonl"
    docs = [
        "The following are multiple choice questions about anatomy.",
        "102 + 435 -> 537\n860 + 270 -> 1130",
        "Q: There are 15 trees in the grove. A: The answer is 6.",
    ] * 5
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_run(tiny_model_dir, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    proc = run_harness(
        "eval", "--model", str(tiny_model_dir), "--tasks", TASKS, "--data-dir", str(DATA), "--limit", "3",
        "--loss-corpus", str(corpus), "--loss-window", "64", "--loss-tokens", "400", "--batch-size", "4",
        "--out", str(out), "--no-progress",
    )
    assert "results:" in proc.stdout
    return out


def _results(out: Path) -> dict:
    (path,) = list(out.rglob("results.json"))
    return json.loads(path.read_text(encoding="utf-8"))


def test_eval_writes_results_with_loss_and_every_row(local_run):
    results = _results(local_run)
    assert results["loss"]["loss"] > 0 and results["loss"]["source"] == "corpus"
    assert results["model"]["source"] == "local" and len(results["model"]["content_hash"]) == 64
    assert results["model"]["dtype"] == "float32" and results["model"]["device"] == "cpu"
    tasks = results["tasks"]
    assert tasks["mmlu:abstract_algebra"]["n"] == 3
    assert tasks["mmlu:abstract_algebra"]["metrics"]["acc"]["random_baseline"] == pytest.approx(0.25)
    assert tasks["mmlu:abstract_algebra"]["metrics"]["brier_score"]["random_baseline"] == pytest.approx(0.75)
    assert set(tasks["gsm8k"]["metrics"]) == {"exact_match_strict", "exact_match_flexible", "exact_match_numeric",
                                              # the continuous companions (harness.scoring.companions)
                                              "target_logprob", "target_logprob_per_token", "final_answer_logprob",
                                              "token_edit_distance", "char_edit_distance"}
    subtask_rows = [t for t in tasks if t.startswith("bigbench:modified_arithmetic/")]
    assert len(subtask_rows) >= 2 and tasks["bigbench:modified_arithmetic"]["subtasks"] == subtask_rows
    assert tasks["bigbench:modified_arithmetic"]["n"] == sum(tasks[r]["n"] for r in subtask_rows)


def test_items_log_schema(local_run):
    records = eval_items(local_run)
    mc = [r for r in records if r["task"] == "mmlu:abstract_algebra"]
    assert [r["doc_id"] for r in mc] == [0, 1, 2]
    for r in mc:
        assert len(r["choice_logprobs"]) == 4 and r["gold"] in range(4) and r["pred"] in range(4)
        assert len(r["prompt_sha256"]) == 64
    gen = [r for r in records if r["task"] == "gsm8k"]
    assert len(gen) == 3 and set(gen[0]["extracted"]) == {"strict", "flexible"}
    assert all(isinstance(r["generation"], str) for r in gen)


def test_prompt_hash_matches_harness_prompt(local_run):
    record = eval_items(local_run)[1]
    proc = run_harness("prompt", "--task", record["task"], "--index", str(record["doc_id"]), "--data-dir", str(DATA))
    import hashlib

    # the prompt printed for the item is exactly the one that was scored
    assert hashlib.sha256(proc.stdout[:-1].encode("utf-8")).hexdigest() == record["prompt_sha256"]


def test_table_csv_markdown_parquet(local_run, tmp_path):
    proc = run_harness("table", str(local_run), "--format", "csv")
    from io import StringIO

    frame = pd.read_csv(StringIO(proc.stdout))
    for column in ["model", "revision", "step", "params", "loss", "task", "metric", "value", "stderr", "n", "random_baseline"]:
        assert column in frame.columns
    assert frame["loss"].notna().all()
    acc = frame[(frame.task == "mmlu:abstract_algebra") & (frame.metric == "acc")]
    assert len(acc) == 1 and acc["n"].item() == 3
    md = run_harness("table", str(local_run), "--format", "markdown").stdout
    assert md.startswith("| model |") and "mmlu:abstract_algebra" in md
    run_harness("table", str(local_run), "--format", "parquet", "--output", str(tmp_path / "t.parquet"))
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == len(frame)


def _hub_cache(root: Path, repo: str, revisions: dict[str, Path]) -> Path:
    """A real huggingface_hub cache layout: models--org--name/refs/<rev> -> snapshots/<hash>/."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    for index, (revision, source) in enumerate(revisions.items()):
        commit = f"{index + 1:040x}"
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / revision).write_text(commit)
        shutil.copytree(source, repo_dir / "snapshots" / commit)
    return root


def test_hub_id_with_revision_offline_matches_local_folder(local_run, tiny_model_dir, tmp_path, corpus):
    from conftest import build_tiny_gpt_neox

    other = build_tiny_gpt_neox(tmp_path / "other", seed=1)
    cache = _hub_cache(tmp_path / "hub", "org/tiny-neox", {"step1000": tiny_model_dir, "main": other})
    out = tmp_path / "out"
    run_harness(
        "eval", "--model", "org/tiny-neox", "--revision", "step1000", "--tasks", "mmlu:abstract_algebra",
        "--data-dir", str(DATA), "--limit", "3", "--loss-corpus", str(corpus), "--loss-window", "64",
        "--loss-tokens", "400", "--out", str(out), "--no-progress",
        env={"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")},
    )
    hub, local = _results(out), _results(local_run)
    assert hub["model"]["source"] == "hub" and hub["model"]["resolved_revision"] == f"{1:040x}"
    assert hub["step"] == 1000
    assert hub["loss"]["loss"] == pytest.approx(local["loss"]["loss"], abs=1e-6)
    hub_items, local_items = eval_items(out), eval_items(local_run)
    local_mc = [r for r in local_items if r["task"] == "mmlu:abstract_algebra"]
    for a, b in zip(hub_items, local_mc):
        assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-5)


def test_unknown_task_is_one_line_listing_known_tasks(tiny_model_dir):
    proc = run_harness("eval", "--model", str(tiny_model_dir), "--tasks", "mmlu,nosuchtask", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchtask" in lines[0] and "mmlu" in lines[0] and "gsm8k" in lines[0]


def test_bad_model_path_is_one_line(tmp_path):
    proc = run_harness(
        "eval", "--model", str(tmp_path / "missing-checkpoint"), "--tasks", "mmlu:abstract_algebra",
        "--data-dir", str(DATA), check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing-checkpoint" in lines[0]


def test_missing_data_names_files_and_data_dir(tiny_model_dir, tmp_path):
    proc = run_harness(
        "eval", "--model", str(tiny_model_dir), "--tasks", "mmlu:anatomy", "--data-dir", str(tmp_path), check=False
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "anatomy" in lines[0] and "--data-dir" in lines[0]


def test_tasks_lists_every_family():
    out = run_harness("tasks").stdout
    for name in ["mmlu", "ceval", "gsm8k", "gsm8k:fewshot", "gsm8k:zeroshot_cot", "bigbench"]:
        assert any(line.split("[")[0] == name for line in out.splitlines()), name
    assert "primary acc" in out and "primary exact_match_strict" in out


def test_table_tokens_seen_and_compute_from_tokens_per_step(tmp_path):
    results = {
        "model": {"model": "EleutherAI/pythia-160m", "revision": "step1000", "resolved_revision": "a" * 40,
                  "params_total": 162322944, "params_non_embedding": 85056000, "dtype": "float16"},
        "step": 1000, "loss": {"loss": 3.5, "source": "file:losses.tsv"},
        "tasks": {"mmlu": {"parent": None, "primary_metric": "acc", "metrics": {"acc": {
            "value": 0.25, "stderr": 0.01, "n": 100, "random_baseline": 0.25, "higher_is_better": True}}}},
    }
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text(json.dumps(results))
    from io import StringIO

    frame = pd.read_csv(StringIO(run_harness("table", str(tmp_path), "--tokens-per-step", "pythia").stdout))
    row = frame.iloc[0]
    assert row["tokens_seen"] == 1000 * 2_097_152
    assert row["compute"] == pytest.approx(6 * 85056000 * 1000 * 2_097_152)
    assert row["params"] == 162322944 and row["params_nonembed"] == 85056000
    assert row["loss_source"] == "file:losses.tsv" and row["status"] == "done"
    # without tokens per step there is no tokens_seen to compute from
    frame = pd.read_csv(StringIO(run_harness("table", str(tmp_path)).stdout))
    assert pd.isna(frame.iloc[0]["tokens_seen"]) and pd.isna(frame.iloc[0]["compute"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "org/m", "--checkpoints", "runs/x", "--tasks", "mmlu"], "not both"),
        (["--config", "sweep.yaml", "--model", "org/m"], "drop --model"),
        (["--model", "org/m", "--revisions", "step9:1:1", "--tasks", "mmlu"], "START <= STOP"),
        (["--model", "org/m", "--tasks", "mmlu", "--shard", "2/2"], "--shard"),
        (["--model", "org/m", "--tasks", "nosuchtask"], "nosuchtask"),
    ],
)
def test_sweep_usage_errors_are_one_line(args, message):
    proc = run_harness("sweep", *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_loss_batch_size_is_auto_by_default_and_range_checked(tiny_model_dir, corpus, tmp_path, capsys):
    """``harness loss --batch-size`` takes a number or auto (the default: sized from free memory, halved
    on out-of-memory), like eval's; a bad one is a one-line error before any model is loaded."""
    from harness.cli import main

    flags = ["loss", "--model", str(tiny_model_dir), "--loss-corpus", str(corpus), "--loss-window", "64",
             "--loss-tokens", "400", "--device", "cpu"]
    assert main([*flags, "--out", str(tmp_path)]) == 0
    assert "written:" in capsys.readouterr().out
    (path,) = tmp_path.rglob("results.json")  # the loss unit in the one store, as `harness eval` writes it
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["loss"]["source"] == "corpus" and record["provenance"]["device"] == "cpu" and record["tasks"] == {}
    assert main([*flags, "--batch-size", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"loss {record['loss']['loss']:.6f} nats/token")

    assert main([*flags, "--batch-size", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness loss: error: --batch-size")
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--batch-size", "many"])
    assert exit_info.value.code == 2 and "batch size must be an integer or 'auto'" in capsys.readouterr().err


def test_prompt_shows_how_a_bigbench_answer_is_read(capsys):
    """Beside the prompt, a BIG-bench generative item's targets, its output regex (BIG-bench's default
    when the task sets none), its stop strings and its metrics: what scoring applies to the generation."""
    from harness.cli import main

    assert main(["prompt", "--task", "bigbench:word_unscrambling", "--index", "0", "--data-dir", str(DATA)]) == 0
    info = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert info["output_regex"] == "[^\\.\\?\\!\\;\\n]+" and "stop_string" not in info
    assert info["metrics"] == ["exact_match"] and info["max_new_tokens"] == 256 and info["targets"]
