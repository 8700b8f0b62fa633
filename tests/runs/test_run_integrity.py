"""Through the CLI on the tiny GPT-NeoX fixture: what makes a run's numbers trustworthy.

A changed task is re-scored, a diverged checkpoint is a failure (never a measurement of 0), two
checkpoints never share a results folder, bad values stop before any model is loaded, every results
file says what produced it, and a repeated eval loads nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import cli, store
from harness.table import results_table

from conftest import FIXTURES, eval_items

BIGBENCH = FIXTURES / "data" / "bigbench" / "benchmark_tasks"
TASK = "bigbench:word_unscrambling"  # generative, one row, metrics ["exact_str_match"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--limit", "2", "--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--no-progress"]


def _data_dir(root: Path) -> Path:
    """A private copy of the BIG-bench task, so a test can edit its task.json."""
    data = root / "data"
    shutil.copytree(BIGBENCH / "word_unscrambling", data / "bigbench" / "benchmark_tasks" / "word_unscrambling")
    return data


def _sweep_summary(out: Path) -> dict:
    return json.loads((out / "logs" / "summary-all.json").read_text(encoding="utf-8"))


def test_task_json_metric_edit_reruns_the_unit_and_adds_bleu(tiny_model_dir, tmp_path):
    data, out = _data_dir(tmp_path), tmp_path / "out"
    args = ["sweep", "--checkpoints", str(tiny_model_dir), "--tasks", TASK, "--data-dir", str(data), "--out", str(out), *FAST]
    assert cli.main(args) == 0
    assert _sweep_summary(out)["units_done"] == 1
    assert "bleu" not in set(results_table(out)["metric"])

    task_json = data / "bigbench" / "benchmark_tasks" / "word_unscrambling" / "task.json"
    task = json.loads(task_json.read_text(encoding="utf-8"))
    task["metrics"] = task["metrics"] + ["bleu"]
    task_json.write_text(json.dumps(task), encoding="utf-8")

    assert cli.main(args) == 0
    summary = _sweep_summary(out)
    assert (summary["units_done"], summary["units_skipped"]) == (1, 0)  # re-scored, not "already done"
    table = results_table(out)
    bleu = table[(table["task"] == "bigbench:word_unscrambling") & (table["metric"] == "bleu")]
    assert len(bleu) == 1 and bleu["value"].notna().all()


# -- a diverged checkpoint ---------------------------------------------------------------------------


def _nan_checkpoint(source: Path, target: Path) -> Path:
    """The fixture model with every MLP weight NaN: what a diverged training run saves."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(source, target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".mlp." in name:
                parameter.fill_(float("nan"))
    model.save_pretrained(target, safe_serialization=True)
    return target


@pytest.fixture(scope="module")
def nan_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _nan_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("diverged") / "checkpoint-nan")


def test_nan_weights_fail_the_sweep_unit_and_the_other_checkpoint_finishes(tiny_model_dir, nan_model_dir, tmp_path, capsys):
    good = shutil.copytree(tiny_model_dir, tmp_path / "runs" / "checkpoint-good")
    out = tmp_path / "out"
    code = cli.main(["sweep", "--checkpoints", str(good), str(nan_model_dir), "--name", "run", "--tasks", TASK,
                     "--data-dir", str(FIXTURES / "data"), "--out", str(out), *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 failed:" in err and "checkpoint-nan" in err and "NonFiniteOutput" in err
    summary = _sweep_summary(out)
    assert (summary["units_done"], summary["units_failed"]) == (1, 1)
    table = results_table(out)
    failed = table[table["status"] == "failed"]
    assert len(failed) == 1 and "non-finite" in failed["error"].iloc[0]
    done = table[(table["status"] == "done") & (table["metric"] == "exact_match")]
    assert len(done) == 1  # the good checkpoint's; the diverged one has no exact_match row at all


def test_nan_weights_fail_every_eval_task_and_the_loss_with_exit_1(nan_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["eval", "--model", str(nan_model_dir), "--tasks", f"{TASK},mmlu:abstract_algebra",
                     "--data-dir", str(FIXTURES / "data"), "--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"),
                     "--loss-window", "64", "--loss-tokens", "256", "--out", str(out), *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "3 failed:" in err
    (path,) = out.rglob(store.RESULTS_NAME)
    results = json.loads(path.read_text(encoding="utf-8"))
    assert results["tasks"] == {} and results["loss"] is None
    assert sorted(f["task"] for f in results["failures"]) == ["bigbench:word_unscrambling", "loss", "mmlu:abstract_algebra"]
    assert all("non-finite" in f["error"] for f in results["failures"])


# -- results folders ---------------------------------------------------------------------------------


def _eval(model: Path, out: Path, *extra: str) -> int:
    return cli.main(["eval", "--model", str(model), "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
                     "--out", str(out), *FAST, *extra])


def test_two_checkpoints_with_the_same_path_ending_are_both_kept(tmp_path, capsys):
    from harness.analysis import prediction

    from conftest import build_tiny_gpt_neox

    first = build_tiny_gpt_neox(tmp_path / "a" / "run" / "checkpoint-60", seed=0)
    second = build_tiny_gpt_neox(tmp_path / "b" / "run" / "checkpoint-60", seed=1)
    out = tmp_path / "out"
    loss = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-window", "64", "--loss-tokens", "256"]
    assert _eval(first, out, *loss) == 0
    # both are "run" at checkpoint-60: one folder, one series in the report; other weights at another
    # path are refused in one line, before any model is loaded, with the fix
    capsys.readouterr()
    assert _eval(second, out, *loss) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the results of" in err and "--name" in err
    assert _eval(second, out, *loss, "--name", "run-b") == 0
    folders = store.find_checkpoint_dirs(out)
    assert sorted(f.relative_to(out).as_posix() for f in folders) == ["run-b/checkpoint-60", "run/checkpoint-60"]
    hashes = {json.loads((f / store.RESULTS_NAME).read_text())["model"]["content_hash"] for f in folders}
    assert len(hashes) == 2
    table = results_table(out)
    assert table[table["metric"] == "exact_match"]["resolved_revision"].nunique() == 2
    records = prediction.read_item_records(out, {TASK}, "exact_match")
    assert records["checkpoint"].nunique() == 2 and len(records) == 2 * 2  # both checkpoints' items are found


def test_rows_kept_from_an_earlier_eval_keep_their_own_config(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert _eval(tiny_model_dir, out) == 0
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--tasks", "mmlu:abstract_algebra", "--data-dir",
                     str(FIXTURES / "data"), "--out", str(out), *FAST, "--limit", "3"]) == 0
    (path,) = out.rglob(store.RESULTS_NAME)
    results = json.loads(path.read_text(encoding="utf-8"))
    # each row carries the record its unit key hashes: the settings that produced it
    # the view is the second eval's request; the first eval's row stays in the table with its own config
    assert set(results["tasks"]) == {"mmlu:abstract_algebra"} and results["tasks"]["mmlu:abstract_algebra"]["config"]["limit"] == 3
    assert results["identity"] == results["tasks"]["mmlu:abstract_algebra"]["config"]["checkpoint"]
    table = results_table(out)
    first, second = (table[table["task"] == task] for task in (TASK, "mmlu:abstract_algebra"))
    assert set(first["limit"]) == {2} and set(second["limit"]) == {3}  # each row its own unit's settings
    assert first["unit_key"].nunique() == 1 and set(first["unit_key"]).isdisjoint(second["unit_key"])
    assert set(first["latest"]) == {False} and set(second["latest"]) == {True}
    assert table["weights"].nunique() == 1


def test_the_shards_of_one_eval_split_its_units_and_together_equal_the_whole(tiny_model_dir, tmp_path):
    loss = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-window", "64", "--loss-tokens", "256"]
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", f"{TASK},mmlu:abstract_algebra", "--data-dir",
            str(FIXTURES / "data"), *FAST, *loss]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli.main([*args, "--out", str(whole)]) == 0
    for index in range(3):
        assert cli.main([*args, "--out", str(split), "--shard", f"{index}/3"]) == 0
    summaries = [json.loads((split / "logs" / f"summary-shard-{i}-of-3.json").read_text(encoding="utf-8")) for i in range(3)]
    assert [s["units_in_sweep"] for s in summaries] == [3, 3, 3]
    assert sorted(key for s in summaries for key in s["ran"]) == sorted(_sweep_summary(whole)["ran"])  # each unit once
    (one,), (parts,) = whole.rglob(store.RESULTS_NAME), split.rglob(store.RESULTS_NAME)
    one, parts = (json.loads(p.read_text(encoding="utf-8")) for p in (one, parts))
    assert parts["loss"]["loss"] == pytest.approx(one["loss"]["loss"], abs=1e-9)
    values = lambda results: {(task, name): m["value"] for task, entry in results["tasks"].items()  # noqa: E731
                              for name, m in entry["metrics"].items()}
    assert values(parts) == pytest.approx(values(one), abs=1e-9)


# -- resume after an interruption ---------------------------------------------------------------------

# `harness eval` with every chunk slowed down, so that a SIGINT lands while items are being scored
_SLOW_EVAL = """
import sys, time
from harness.runs import sweep
scored = sweep.score_items
def slow(engine, spec, items):
    time.sleep(0.4)
    return scored(engine, spec, items)
sweep.score_items = slow
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_eval_interrupted_with_sigint_and_rerun_equals_an_uninterrupted_one(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    items = 8  # every item of the fixture task
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
            "--save-every", "1", *FAST, "--limit", str(items)]
    whole = tmp_path / "whole"
    assert cli.main([*args, "--out", str(whole)]) == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EVAL, *args, "--out", str(out)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(out.rglob("*.items.jsonl"))
        if logs and len(logs[0].read_text(encoding="utf-8").splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    (log,) = out.rglob("*.items.jsonl")
    kept = len(log.read_text(encoding="utf-8").splitlines())
    assert 3 <= kept < items
    assert list(log.parent.glob("*.json")) == []  # no finished (or failed) unit yet

    assert cli.main([*args, "--out", str(out)]) == 0
    summary = _sweep_summary(out)
    assert summary["items_resumed"] == kept and summary["items_scored"] == items - kept
    (resumed,) = out.rglob(store.RESULTS_NAME)
    (reference,) = whole.rglob(store.RESULTS_NAME)
    resumed, reference = (json.loads(p.read_text(encoding="utf-8")) for p in (resumed, reference))
    for name, metric in reference["tasks"][TASK]["metrics"].items():
        assert resumed["tasks"][TASK]["metrics"][name]["value"] == pytest.approx(metric["value"], abs=1e-6), name
    a = {r["doc_id"]: r for r in eval_items(out)}
    b = {r["doc_id"]: r for r in eval_items(whole)}
    assert sorted(a) == sorted(b) == list(range(items))
    for doc_id, record in b.items():
        assert a[doc_id]["generation"] == record["generation"] and a[doc_id]["metrics"] == pytest.approx(record["metrics"], abs=1e-6)


# -- bad values: one line, before any model is loaded ------------------------------------------------

EVAL = ["eval", "--model", "unused", "--tasks", TASK, "--data-dir", str(FIXTURES / "data"), "--no-progress"]
SWEEP = ["sweep", "--model", "org/unused", "--revisions", "main", "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
         "--no-progress"]
BAD_FLAGS = [
    (["--limit", "-3"], "--limit -3: must be a whole number >= 1"),
    (["--limit", "0"], "--limit 0: must be a whole number >= 1"),
    (["--num-fewshot", "-1"], "--num-fewshot -1: must be a whole number >= 0"),
    (["--batch-size", "0"], "--batch-size 0: must be a whole number >= 1"),
    (["--loss-window", "1"], "--loss-window 1: must be a whole number >= 2"),
    (["--loss-tokens", "0"], "--loss-tokens 0: must be a whole number >= 2"),
]


@pytest.fixture
def no_model_load(monkeypatch):
    from harness.engine import models

    calls = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: calls.append(a) or pytest.fail("a model was loaded"))
    return calls


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"harness {command}: error: ")
    return err


SHARD_FLAGS = [
    (["--shard", "4/4"], "--shard '4/4': write i/n with 0 <= i < n"),
    (["--shard=-1/4"], "--shard '-1/4': write i/n with 0 <= i < n"),
]
EVAL_FLAGS = BAD_FLAGS + SHARD_FLAGS + [(["--save-every", "0"], "--save-every 0: must be a whole number >= 1")]


@pytest.mark.parametrize("flags, message", EVAL_FLAGS, ids=[" ".join(f) for f, _ in EVAL_FLAGS])
def test_bad_eval_values_are_one_line_errors_before_loading(flags, message, no_model_load, capsys, tmp_path):
    loss = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl")] if "--loss" in flags[0] else []
    assert cli.main([*EVAL, "--out", str(tmp_path), *loss, *flags]) == 2
    assert message in _one_error_line(capsys, "eval") and no_model_load == []


SWEEP_FLAGS = BAD_FLAGS + SHARD_FLAGS + [(["--save-every", "0"], "--save-every (save_every:) 0: must be a whole number >= 1")]


@pytest.mark.parametrize("flags, message", SWEEP_FLAGS, ids=[" ".join(f) for f, _ in SWEEP_FLAGS])
def test_bad_sweep_values_are_one_line_errors_before_loading(flags, message, no_model_load, capsys, tmp_path):
    loss = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl")] if "--loss" in flags[0] else []
    assert cli.main([*SWEEP, "--out", str(tmp_path), *loss, *flags]) == 2
    err = _one_error_line(capsys, "sweep")
    assert message.replace("--limit ", "--limit (limit:) ").replace("--num-fewshot ", "--num-fewshot (num_fewshot:) ").replace(
        "--batch-size ", "--batch-size (batch_size:) ").replace("--loss-window ", "--loss-window (loss: window:) ").replace(
        "--loss-tokens ", "--loss-tokens (loss: tokens:) ") in err
    assert no_model_load == []


CONFIG_VALUES = [
    ("limit: -3", "--limit (limit:) -3: must be a whole number >= 1"),
    ("num_fewshot: -1", "--num-fewshot (num_fewshot:) -1: must be a whole number >= 0"),
    ("batch_size: 0", "--batch-size (batch_size:) 0: must be a whole number >= 1"),
    ("save_every: 0", "--save-every (save_every:) 0: must be a whole number >= 1"),
    ("loss: {corpus: CORPUS, window: 1}", "--loss-window (loss: window:) 1: must be a whole number >= 2"),
    ("loss: {corpus: CORPUS, tokens: ten}", "loss.tokens must be a whole number, got string 'ten'"),  # typed config (#19)
]


@pytest.mark.parametrize("line, message", CONFIG_VALUES, ids=[line for line, _ in CONFIG_VALUES])
def test_bad_sweep_config_values_are_one_line_errors_before_loading(line, message, no_model_load, capsys, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"out: {tmp_path / 'out'}\ntasks: [{TASK}]\ndata_dir: {FIXTURES / 'data'}\n"
        f"{line.replace('CORPUS', str(FIXTURES / 'loss_corpus.jsonl'))}\n"
        "models:\n  - model: org/unused\n    revisions: main\n",
        encoding="utf-8",
    )
    assert cli.main(["sweep", "--config", str(config), "--no-progress"]) == 2
    assert message in _one_error_line(capsys, "sweep") and no_model_load == []


# -- provenance --------------------------------------------------------------------------------------


def test_every_results_file_says_what_produced_it(tiny_model_dir, tmp_path):
    import subprocess

    import torch
    import transformers

    out = tmp_path / "eval"
    assert _eval(tiny_model_dir, out) == 0
    (results_path,) = out.rglob(store.RESULTS_NAME)
    sweep_out = tmp_path / "sweep"
    assert cli.main(["sweep", "--checkpoints", str(tiny_model_dir), "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
                     "--out", str(sweep_out), *FAST]) == 0
    files = [json.loads(results_path.read_text())]
    files += [json.loads(p.read_text()) for p in sweep_out.rglob("units/*.json")]
    files += [json.loads(p.read_text()) for p in sweep_out.rglob(store.RESULTS_NAME)]
    assert len(files) == 3
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    for results in files:
        provenance = results["provenance"]
        assert provenance["torch"] == torch.__version__ and provenance["transformers"] == transformers.__version__
        assert {"datasets", "accelerate", "harness_version", "device_name"} <= set(provenance)
        assert provenance["device"] == "cpu" and provenance["dtype"] == "float32"
        assert "--tasks" in provenance["command"] or provenance["command"]  # the process's argv
        if head.returncode == 0:
            assert provenance["git_commit"] == head.stdout.strip()


# -- eval resume -------------------------------------------------------------------------------------


def test_a_second_identical_eval_loads_no_model_and_keeps_the_results(tiny_model_dir, tmp_path, monkeypatch):
    import time

    from harness.engine import models

    out = tmp_path / "out"
    args = ["--tasks", f"{TASK},mmlu:abstract_algebra", "--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"),
            "--loss-window", "64", "--loss-tokens", "256"]
    started = time.perf_counter()
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--data-dir", str(FIXTURES / "data"), "--out", str(out),
                     *FAST, *args]) == 0
    first = time.perf_counter() - started
    (path,) = out.rglob(store.RESULTS_NAME)
    before = path.read_text(encoding="utf-8")
    loads = []
    original = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k))
    started = time.perf_counter()
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--data-dir", str(FIXTURES / "data"), "--out", str(out),
                     *FAST, *args]) == 0
    second = time.perf_counter() - started
    assert loads == [] and path.read_text(encoding="utf-8") == before
    assert second < 0.75 * first, (first, second)  # items are built and the folder hashed again; nothing is scored
    # a changed setting is a new key: that task runs again, the model is loaded
    assert cli.main(["eval", "--model", str(tiny_model_dir), "--data-dir", str(FIXTURES / "data"), "--out", str(out),
                     *FAST, *args, "--num-fewshot", "0"]) == 0
    assert len(loads) == 1
