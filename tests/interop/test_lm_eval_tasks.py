"""lm-eval tasks in our runs: ``--tasks lm_eval:<name>`` (``harness.interop.lm_eval_tasks``).

The committed fixture YAMLs (tests/fixtures/lm_eval_tasks: a 2-shot multiple choice task, a 2-shot
generate_until task with regex filters, a loglikelihood_rolling task) run through ``harness eval`` on the
tiny model and through lm-eval's own ``simple_evaluate`` with ``HFLM`` on the same weights: every item
agrees (the same prompts, log-probabilities within 1e-4, identical generations and filtered answers, equal
per-item metrics) and so do the aggregated metrics and their stderr.  Then the store side: a sweep of
three checkpoints carries the loss in every row, a rerun finds every unit done, a unit cut short resumes
after its last item, ``harness prompt`` shows lm-eval's prompt, and a YAML's ``!function`` runs only with
``--allow-task-code``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, build_tiny_gpt_neox

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = FIXTURES / "lm_eval_tasks"
TASKS = ("eh_mc", "eh_gen", "eh_rolling")
LABELS = ",".join(f"lm_eval:{t}" for t in TASKS)
TOLERANCE = 1e-4  # |Δ log-prob| per scored continuation, fp32
SETTINGS = ["--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def offline_from_repo_root(monkeypatch):
    """The fixture YAMLs name their data files from the repository root; nothing goes online."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def harness(*argv: str) -> int:
    from harness.cli import main

    return main([str(a) for a in argv])


def store_items(out: Path) -> dict[tuple[str, int], dict]:
    from harness import store

    (folder,) = {p.parent for p in Path(out).rglob(store.RESULTS_NAME)}
    return {(r["task"], r["doc_id"]): r for r in store.checkpoint_items(folder)}


def results_view(out: Path) -> dict:
    (path,) = Path(out).rglob("results.json")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def theirs(model_and_tokenizer, one_torch_thread) -> dict:
    """lm-eval's own run: simple_evaluate with HFLM on the tiny model, every sample logged."""
    import os

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    os.chdir(REPO)  # module fixtures run before the autouse chdir
    model, tokenizer = model_and_tokenizer
    return simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=list(TASKS),
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False), log_samples=True,
        verbosity="ERROR",
    )


@pytest.fixture(scope="module")
def ours(tiny_model_dir, tmp_path_factory, one_torch_thread) -> Path:
    """``harness eval --tasks lm_eval:... --include-path tests/fixtures/lm_eval_tasks`` with a loss."""
    import os

    os.chdir(REPO)
    out = tmp_path_factory.mktemp("lm-eval-tasks")
    assert harness("eval", "--model", tiny_model_dir, "--tasks", LABELS, "--include-path", TASKS_DIR,
                   "--loss-corpus", FIXTURES / "loss_corpus.jsonl", "--out", out, *SETTINGS) == 0
    return out


def assert_equals_lm_eval(theirs: dict, out: Path) -> None:
    """Every logged sample of lm-eval's run equals our item record, and every aggregate our row's metric."""
    from harness.scoring.records import prompt_sha256

    from conftest import assert_same, lm_eval_value

    items = store_items(out)
    view = results_view(out)
    for task in TASKS:
        samples = theirs["samples"][task]
        assert {s["doc_id"] for s in samples} == {doc for row, doc in items if row == f"lm_eval:{task}"}
        for sample in samples:
            record = items[(f"lm_eval:{task}", sample["doc_id"])]
            where = f"{task} doc {sample['doc_id']} ({sample['filter']})"
            assert record["prompt_sha256"] == prompt_sha256(sample["arguments"][0][0]), f"{where}: another prompt"
            # a rolling log-likelihood sums thousands of tokens: 1e-4 per 100 nats of it
            scale = max(1.0, abs(lm_eval_value(sample["resps"])[0][0]) / 100) if task == "eh_rolling" else 1.0
            assert_same(lm_eval_value(sample["resps"]), lm_eval_value(record["resps"]), TOLERANCE * scale, where)
            assert_same(lm_eval_value(sample["filtered_resps"]), lm_eval_value(record["filtered_resps"][sample["filter"]]),
                        TOLERANCE * scale, where)
            suffix = "" if sample["filter"] == "none" else f",{sample['filter']}"
            assert_same({m: lm_eval_value(sample[m]) for m in sample["metrics"]},
                        {m: lm_eval_value(record["metrics"][m + suffix]) for m in sample["metrics"]}, TOLERANCE * scale, where)
        # lm-eval's aggregation of equal per-item values: the same numbers, named metric[,filter]
        entry = view["tasks"][f"lm_eval:{task}"]
        for key, value in theirs["results"][task].items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr"):
                continue
            ours_metric = entry["metrics"][metric if filter_name == "none" else key]
            assert ours_metric["lm_eval_key"] == key
            assert ours_metric["value"] == pytest.approx(value, rel=1e-5), (task, key)
            stderr = theirs["results"][task][f"{metric}_stderr,{filter_name}"]
            if stderr == "N/A":
                assert ours_metric["stderr"] is None
            else:
                assert ours_metric["stderr"] == pytest.approx(stderr, rel=1e-5, abs=1e-12), (task, key)
        assert entry["num_fewshot"] == theirs["n-shot"][task] and entry["n"] == len({s["doc_id"] for s in samples})


def test_eval_equals_lm_eval_per_item_and_in_aggregate(theirs, ours):
    assert_equals_lm_eval(theirs, ours)
    # the unit's key hashes lm-eval's resolved config and version, beside the limit and the shots
    for task in TASKS:
        record = results_view(ours)["tasks"][f"lm_eval:{task}"]["config"]
        assert record["spec"]["options"]["lm_eval_version"] == importlib.metadata.version("lm_eval")
        config = record["spec"]["options"]["configs"][f"lm_eval:{task}"]
        assert config["task"] == task and config["metadata"]["config_source"].endswith(f"{task}.yaml")


@pytest.mark.slow
def test_smollm2_equals_lm_eval_per_item(smollm2_gguf, gguf_cache_dir, tmp_path, one_torch_thread):
    """The same on SmolLM2-135M (the GGUF, fp32), 3 documents of each task."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.engine.models import load_model

    model, tokenizer, _ = load_model(str(smollm2_gguf), dtype="float32", device="cpu", gguf_cache_dir=gguf_cache_dir)
    theirs = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=list(TASKS), limit=3,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False), log_samples=True,
        verbosity="ERROR",
    )
    del model
    assert harness("eval", "--model", smollm2_gguf, "--tasks", LABELS, "--include-path", TASKS_DIR, "--limit", "3",
                   "--out", tmp_path, *SETTINGS) == 0
    assert_equals_lm_eval(theirs, tmp_path)
    # a real model follows the 2-shot format: the regex filter extracts answers
    assert results_view(tmp_path)["tasks"]["lm_eval:eh_gen"]["metrics"]["exact_match,strict-match"]["value"] > 0


def test_loss_beside_every_metric_and_a_rerun_finds_every_unit_done(ours, tiny_model_dir, capsys):
    from harness.table import results_table

    frame = results_table(ours)
    rows = frame[frame["task"].str.startswith("lm_eval:")]
    assert set(rows["task"]) == {f"lm_eval:{t}" for t in TASKS}
    assert {"acc", "acc_norm", "exact_match,strict-match", "exact_match,flexible-extract", "word_perplexity",
            "bits_per_byte"} <= set(rows["metric"])
    assert rows["loss"].notna().all() and (rows["loss_source"] == "corpus").all()
    assert rows.loc[rows["metric"] == "acc", "random_baseline"].tolist() == [0.25]
    capsys.readouterr()
    assert harness("eval", "--model", tiny_model_dir, "--tasks", LABELS, "--include-path", TASKS_DIR,
                   "--loss-corpus", FIXTURES / "loss_corpus.jsonl", "--out", ours, *SETTINGS) == 0
    summary = json.loads((ours / "logs" / "summary-all.json").read_text(encoding="utf-8"))
    assert summary["units_done"] == 0 and summary["units_skipped"] == 4 and summary["items_scored"] == 0


def test_a_unit_cut_short_resumes_after_its_last_item(ours, tiny_model_dir, tmp_path):
    import shutil

    from harness import store

    out = tmp_path / "copy"
    shutil.copytree(ours, out)
    before = results_view(out)
    (folder,) = {p.parent for p in out.rglob(store.RESULTS_NAME)}
    key = before["units"]["lm_eval:eh_gen"]["key"]
    store.unit_path(folder, key).unlink()  # as if killed after two items were flushed
    log = store.unit_items_path(folder, key)
    log.write_text("".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    assert harness("eval", "--model", tiny_model_dir, "--tasks", LABELS, "--include-path", TASKS_DIR,
                   "--loss-corpus", FIXTURES / "loss_corpus.jsonl", "--out", out, *SETTINGS) == 0
    summary = json.loads((out / "logs" / "summary-all.json").read_text(encoding="utf-8"))
    assert summary["units_done"] == 1 and summary["items_resumed"] == 2 and summary["items_scored"] == 3
    after = results_view(out)
    assert after["units"]["lm_eval:eh_gen"]["key"] == key
    assert after["tasks"]["lm_eval:eh_gen"]["metrics"] == before["tasks"]["lm_eval:eh_gen"]["metrics"]


def test_prompt_shows_lm_evals_prompt(theirs, capsys):
    assert harness("prompt", "--task", "lm_eval:eh_mc", "--index", "1", "--include-path", TASKS_DIR) == 0
    out, err = capsys.readouterr()
    (sample,) = [s for s in theirs["samples"]["eh_mc"] if s["doc_id"] == 1]
    assert out == sample["arguments"][0][0] + "\n"
    answers = json.loads(err.strip().splitlines()[-1])
    assert answers["continuations"] == [args[1] for args in sample["arguments"]]


def test_sweep_of_three_checkpoints_has_the_loss_in_every_row(tmp_path, one_torch_thread):
    """``harness sweep --config`` with ``include_path:`` and lm_eval: tasks, three checkpoints."""
    from harness.table import results_table

    run = tmp_path / "run"
    for step, seed in ((10, 1), (20, 2), (30, 3)):
        build_tiny_gpt_neox(run / f"checkpoint-{step}", seed=seed)
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"out: out\ntasks: \"{LABELS}\"\ninclude_path: {TASKS_DIR}\nlimit: 2\ndevice: cpu\ndtype: float32\n"
        f"batch_size: 4\nloss: {{corpus: {FIXTURES / 'loss_corpus.jsonl'}, window: 64, tokens: 2000}}\n"
        f"models:\n  - checkpoints: {run}\n    name: tiny\n", encoding="utf-8")
    assert harness("sweep", "--config", config, "--no-progress") == 0
    frame = results_table(tmp_path / "out")
    assert sorted(set(frame["step"])) == [10, 20, 30]
    assert set(frame["task"]) == {f"lm_eval:{t}" for t in TASKS} and (frame["n"] == 2).all()
    assert frame["loss"].notna().all()
    assert frame.groupby("step")["loss"].nunique().eq(1).all() and frame["loss"].nunique() == 3
    # every checkpoint has its own numbers on the same documents
    acc = frame[frame["metric"] == "word_perplexity"].set_index("step")["value"]
    assert acc.nunique() == 3


def test_a_group_is_one_unit_with_lm_evals_group_aggregate(model_and_tokenizer, tiny_model_dir, tmp_path, one_torch_thread):
    """``lm_eval:eh_group``: one unit, a row per task (parent the group) and the group's own row, whose
    numbers are lm-eval's size-weighted aggregate."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tokenizer = model_and_tokenizer
    theirs = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=["eh_group"], limit=3,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False), verbosity="ERROR",
    )["results"]
    assert harness("eval", "--model", tiny_model_dir, "--tasks", "lm_eval:eh_group", "--include-path", TASKS_DIR,
                   "--limit", "3", "--out", tmp_path, *SETTINGS) == 0
    view = results_view(tmp_path)
    assert list(view["units"]) == ["lm_eval:eh_group"]
    assert view["tasks"]["lm_eval:eh_mc"]["parent"] == view["tasks"]["lm_eval:eh_gen"]["parent"] == "lm_eval:eh_group"
    group = view["tasks"]["lm_eval:eh_group"]
    assert group["subtasks"] == ["lm_eval:eh_mc", "lm_eval:eh_gen"] and group["n"] == 6
    for key in ("acc,none", "exact_match,strict-match", "exact_match,flexible-extract"):
        metric, _, filter_name = key.partition(",")
        ours = group["metrics"][metric if filter_name == "none" else key]
        assert ours["value"] == pytest.approx(theirs["eh_group"][key], rel=1e-6), key
        assert ours["stderr"] == pytest.approx(theirs["eh_group"][f"{metric}_stderr,{filter_name}"], rel=1e-6), key


def test_evaluate_model_in_memory_takes_lm_eval_tasks(model_and_tokenizer, one_torch_thread):
    """``harness.evaluate_model`` (what EvalCallback calls at each save) with an lm_eval: task."""
    from harness import evaluate_model

    model, tokenizer = model_and_tokenizer
    frame = evaluate_model(model, tokenizer, ["lm_eval:eh_mc"], include_path=TASKS_DIR, limit=2, batch_size=4,
                           train_loss=3.5, train_loss_step=7, step=7)
    assert set(frame["metric"]) == {"acc", "acc_norm"} and (frame["task"] == "lm_eval:eh_mc").all()
    assert (frame["n"] == 2).all() and (frame["loss"] == 3.5).all() and (frame["step"] == 7).all()


def test_task_code_runs_only_with_the_flag(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "eh_code.yaml").write_text(
        f"task: eh_code\ninclude: {TASKS_DIR / 'eh_mc.yaml'}\nprocess_docs: !function utils.process_docs\n", encoding="utf-8")
    marker = tmp_path / "ran"
    (folder / "utils.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "def process_docs(dataset):\n    return dataset\n", encoding="utf-8")
    argv = ["eval", "--model", tiny_model_dir, "--tasks", "lm_eval:eh_code", "--include-path", folder, "--limit", "1",
            "--out", tmp_path / "out", *SETTINGS]
    capsys.readouterr()
    assert harness(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--allow-task-code" in err and "!function utils.process_docs" in err and not marker.exists()
    assert harness(*argv, "--allow-task-code") == 0 and marker.exists()


def test_unknown_task_and_missing_lm_eval_are_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    argv = ["eval", "--model", tiny_model_dir, "--tasks", "lm_eval:eh_mx", "--include-path", TASKS_DIR,
            "--out", tmp_path, *SETTINGS]
    capsys.readouterr()
    assert harness(*argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "unknown lm-eval task lm_eval:eh_mx" in line and "did you mean lm_eval:eh_mc" in line
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # find_spec("lm_eval") is None: as if not installed
    assert harness(*argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pip install -e .[lm-eval]" in line
