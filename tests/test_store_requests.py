"""A store that never shows a number from another run (issue #19, items 2-4), through the CLI on the
tiny GPT-NeoX fixture.

- The view is a function of the request: A/B/A with ``--limit``, ``--num-fewshot`` and an edited
  task.json shows A's numbers the third time, and ``harness table`` lists both configurations.
- A checkpoint is its content: weights replaced in a run folder never borrow the old weights' loss
  or scores; the README's Trainer example, ``harness eval`` of a checkpoint by a relative path and
  ``harness sweep`` of the run find the callback's units (0 run) under one model name.
- A store that survives damage: a truncated unit file is re-run with a warning and listed as
  unreadable; ``table``, ``report`` and ``compare`` read a killed sweep; a bad item-log line hides
  none of the lines after it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import cli, store
from harness.table import results_table

from conftest import FIXTURES, build_tiny_gpt_neox

TASK = "bigbench:word_unscrambling"  # 8 items, 3 shots by default, metric exact_match
BIGBENCH = FIXTURES / "data" / "bigbench" / "benchmark_tasks"
CPU = ["--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--no-progress"]
LOSS = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-window", "64", "--loss-tokens", "256"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _summary(out: Path) -> dict:
    return json.loads((out / "logs" / "summary-all.json").read_text(encoding="utf-8"))


def _data_dir(root: Path) -> Path:
    """A private copy of the BIG-bench task, so a test can edit its task.json."""
    data = root / "data"
    shutil.copytree(BIGBENCH / "word_unscrambling", data / "bigbench" / "benchmark_tasks" / "word_unscrambling")
    return data


def _task_json(data: Path) -> Path:
    return data / "bigbench" / "benchmark_tasks" / "word_unscrambling" / "task.json"


# -- the view is a function of the request -------------------------------------------------------------


def _edit_task(data: Path) -> None:
    task = json.loads(_task_json(data).read_text(encoding="utf-8"))
    task["examples"][0]["target"] = "teh"  # another gold answer: other items, other scores
    _task_json(data).write_text(json.dumps(task), encoding="utf-8")


# (A's flags, B's flags, the change to make before B, the change to undo it before A again)
AB = {
    "limit": (["--limit", "2"], ["--limit", "3"]),
    "num_fewshot": (["--limit", "2"], ["--limit", "2", "--num-fewshot", "0"]),
    "task_json": (["--limit", "2"], ["--limit", "2"]),
}


@pytest.mark.parametrize("setting", list(AB))
def test_a_b_a_shows_a_again_and_the_table_lists_both(setting, tiny_model_dir, tmp_path, capsys):
    data, out = _data_dir(tmp_path), tmp_path / "out"
    original = _task_json(data).read_text(encoding="utf-8")
    a, b = AB[setting]

    def run(flags: list[str]) -> tuple[dict, str]:
        capsys.readouterr()
        assert cli.main(["eval", "--model", str(tiny_model_dir), "--tasks", TASK, "--data-dir", str(data),
                         "--out", str(out), *CPU, *flags]) == 0
        (path,) = out.rglob(store.RESULTS_NAME)
        return json.loads(path.read_text(encoding="utf-8")), capsys.readouterr().out

    first, _ = run(a)
    if setting == "task_json":
        _edit_task(data)
    second, _ = run(b)
    assert second["tasks"][TASK]["unit_key"] != first["tasks"][TASK]["unit_key"]
    if setting == "task_json":
        _task_json(data).write_text(original, encoding="utf-8")  # put back
    third, printed = run(a)
    assert (_summary(out)["units_done"], _summary(out)["units_skipped"]) == (0, 1)  # "already done"
    # the third view is the first one's unit, not the most recently finished (the second's)
    assert third["tasks"][TASK]["unit_key"] == first["tasks"][TASK]["unit_key"]
    assert third["tasks"][TASK]["metrics"] == first["tasks"][TASK]["metrics"]
    assert third["request"] == {TASK: first["tasks"][TASK]["unit_key"]}
    shots = first["tasks"][TASK]["config"]["spec"]["num_fewshot"]
    row = next(line for line in printed.splitlines() if line.startswith(f"| {TASK} |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]  # task, metric, value, stderr, n, random, shots, limit
    assert (cells[4], cells[6], cells[7]) == ("2", str(shots), "2")  # on screen: what A asked for

    table = results_table(out)
    rows = table[(table["task"] == TASK) & (table["metric"] == "exact_match")]
    assert len(rows) == 2 and rows["unit_key"].nunique() == 2 and rows["weights"].nunique() == 1
    latest = rows[rows["latest"]]
    assert list(latest["unit_key"]) == [first["tasks"][TASK]["unit_key"]]
    other = rows[~rows["latest"]]
    if setting == "limit":
        assert (int(latest["limit"].iloc[0]), int(other["limit"].iloc[0])) == (2, 3) and list(other["n"]) == [3]
    elif setting == "num_fewshot":
        assert (int(latest["num_fewshot"].iloc[0]), int(other["num_fewshot"].iloc[0])) == (shots, 0)
    else:  # the same flags: only the key (the items' digest) tells the edited task apart
        assert list(other["limit"]) == list(latest["limit"]) and list(other["num_fewshot"]) == list(latest["num_fewshot"])
    # the report draws one configuration per checkpoint and task: A's, never A's and B's as one curve
    from harness.analysis.points import prepare_points

    points = prepare_points(table)
    drawn = points.frame[(points.frame["task"] == TASK) & (points.frame["metric"] == "exact_match")]
    assert list(drawn["n"]) == [2] and list(drawn["value"]) == [first["tasks"][TASK]["metrics"]["exact_match"]["value"]]
    assert any("other configurations" in note for note in points.notes)


# -- a checkpoint is its content -------------------------------------------------------------------------


def test_replaced_weights_never_borrow_the_old_loss_or_scores(tiny_model_dir, tmp_path):
    run = tmp_path / "runs" / "r"
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, run / f"checkpoint-{step}")
    out = tmp_path / "out"
    sweep = ["sweep", "--checkpoints", str(run), "--data-dir", str(FIXTURES / "data"), "--out", str(out),
             "--limit", "2", *CPU, *LOSS]
    assert cli.main([*sweep, "--tasks", TASK]) == 0
    old = json.loads((out / "r" / "checkpoint-20" / store.RESULTS_NAME).read_text(encoding="utf-8"))

    shutil.rmtree(run / "checkpoint-20")
    build_tiny_gpt_neox(run / "checkpoint-20", seed=7)  # other weights under the same path
    assert cli.main(sweep) == 0  # no --tasks: the loss unit alone
    assert (_summary(out)["units_done"], _summary(out)["units_skipped"]) == (1, 1)  # new weights' loss; step 10's found
    view = json.loads((out / "r" / "checkpoint-20" / store.RESULTS_NAME).read_text(encoding="utf-8"))
    assert view["tasks"] == {} and view["loss"]["loss"] != old["loss"]["loss"]
    assert view["identity"]["content_hash"] != old["identity"]["content_hash"]
    table = results_table(out)
    step20 = table[(table["step"] == 20) & (table["metric"] == "exact_match")]
    # the only task row of step 20 is the old weights', with the old weights' loss, and not the latest
    assert len(step20) == 1 and step20["loss"].iloc[0] == pytest.approx(old["loss"]["loss"])
    assert step20["resolved_revision"].iloc[0] == old["identity"]["content_hash"] and not step20["latest"].iloc[0]

    assert cli.main([*sweep, "--tasks", TASK]) == 0
    assert (_summary(out)["units_done"], _summary(out)["units_skipped"]) == (1, 3)  # only the new weights' task
    view = json.loads((out / "r" / "checkpoint-20" / store.RESULTS_NAME).read_text(encoding="utf-8"))
    assert view["tasks"][TASK]["config"]["checkpoint"] == view["identity"]
    assert view["units"]["loss"]["key"] in {u["key"] for u in map(store.read_unit_file, (out / "r" / "checkpoint-20" / "units").glob("*.json"))}
    table = results_table(out)
    step20 = table[(table["step"] == 20) & (table["metric"] == "exact_match")]
    assert len(step20) == 2 and step20["weights"].nunique() == 2
    new, stale = step20[step20["latest"]], step20[~step20["latest"]]
    assert new["loss"].iloc[0] == pytest.approx(view["loss"]["loss"]) and new["resolved_revision"].iloc[0] == view["identity"]["content_hash"]
    assert stale["loss"].iloc[0] == pytest.approx(old["loss"]["loss"])
    # each row's loss unit is the one of its own weights
    assert (new["loss_unit_key"].iloc[0], stale["loss_unit_key"].iloc[0]) == (view["units"]["loss"]["key"], old["units"]["loss"]["key"])
    assert set(table[table["step"] == 10]["latest"]) == {True}


def test_the_readme_trainer_example_then_eval_by_a_relative_path_and_a_sweep_run_nothing(
    tiny_model_dir, tmp_path, monkeypatch, capsys,
):
    """README "Evaluating while training": the callback writes results/my-run; `harness eval --model
    runs/my-run/checkpoint-N --out results/my-run` (a relative path) and `harness sweep --checkpoints
    runs/my-run --out results/my-run` find every unit done, under the one model name my-run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    from harness import EvalCallback

    monkeypatch.chdir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer(" ".join(["The word hte is a scrambled version of the English word the."] * 40))["input_ids"]
    train = [{"input_ids": ids[i:i + 16], "labels": ids[i:i + 16]} for i in range(0, 16 * 16, 16)]
    settings = {"limit": 2, "loss_corpus": str(FIXTURES / "loss_corpus.jsonl"), "data_dir": str(FIXTURES / "data")}
    args = TrainingArguments("runs/my-run", save_steps=2, max_steps=4, logging_steps=1, report_to=[], use_cpu=True,
                             per_device_train_batch_size=4, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    evals = EvalCallback([TASK], "results/my-run", batch_size=4, **settings)
    Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[evals],
            data_collator=default_data_collator).train()
    assert evals.evaluated_steps == [2, 4]
    flags = ["--tasks", TASK, "--limit", "2", "--loss-corpus", settings["loss_corpus"], "--data-dir", settings["data_dir"],
             "--out", "results/my-run", *CPU]

    for step in (2, 4):
        capsys.readouterr()
        assert cli.main(["eval", "--model", f"runs/my-run/checkpoint-{step}", *flags]) == 0
        summary = _summary(Path("results/my-run"))
        assert (summary["units_done"], summary["units_skipped"]) == (0, 2)  # the task and the loss
    assert cli.main(["eval", "--model", str(Path("runs/my-run/checkpoint-4/").resolve()) + "/", *flags]) == 0
    assert _summary(Path("results/my-run"))["units_done"] == 0  # an absolute path with a trailing slash: the same
    os.symlink(Path("runs/my-run/checkpoint-4").resolve(), "latest")
    assert cli.main(["eval", "--model", "latest", *flags]) == 0
    assert _summary(Path("results/my-run"))["units_done"] == 0  # a symlink: the same checkpoint

    assert cli.main(["sweep", "--checkpoints", "runs/my-run", *flags]) == 0
    summary = _summary(Path("results/my-run"))
    assert (summary["units_done"], summary["units_skipped"]) == (0, 4)
    table = results_table(Path("results/my-run"))
    assert set(table["model"]) == {"my-run"} and sorted(set(table["step"])) == [2, 4]
    assert len(table[table["metric"] == "exact_match"]) == 2 and table["loss"].notna().all()


# -- a store that survives damage -------------------------------------------------------------------------


def _two_checkpoint_sweep(tiny_model_dir: Path, root: Path) -> tuple[list[str], Path]:
    run = root / "runs" / "r"
    for step in (10, 20):
        shutil.copytree(tiny_model_dir, run / f"checkpoint-{step}")
    out = root / "out"
    args = ["sweep", "--checkpoints", str(run), "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
            "--out", str(out), "--limit", "4", "--save-every", "1", *CPU, *LOSS]
    assert cli.main(args) == 0
    return args, out


def test_a_truncated_unit_file_is_listed_warned_about_and_rerun(tiny_model_dir, tmp_path, capsys):
    args, out = _two_checkpoint_sweep(tiny_model_dir, tmp_path)
    folder = out / "r" / "checkpoint-20"
    (unit,) = [p for p in (folder / "units").glob("*.json") if store.read_unit_file(p)["kind"] == "task"]
    unit.write_text(unit.read_text(encoding="utf-8")[:100], encoding="utf-8")  # truncated

    table = results_table(out)
    bad = table[table["status"] == "unreadable"]
    assert len(bad) == 1 and unit.name in bad["error"].iloc[0]
    assert len(table[(table["status"] == "done") & (table["metric"] == "exact_match")]) == 1  # checkpoint-10's
    assert cli.main(["table", str(out), "--format", "csv"]) == 0
    capsys.readouterr()

    # a bad line in the middle of its item log: skipped and counted, the lines after it kept
    items = folder / "units" / unit.name.replace(".json", ".items.jsonl")
    lines = items.read_text(encoding="utf-8").splitlines(keepends=True)
    items.write_text("".join([lines[0], '{"task": "torn\n', *lines[1:3]]), encoding="utf-8")
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert f"{unit} is unreadable" in err and "1 unreadable lines skipped" in err
    summary = _summary(out)
    assert (summary["units_done"], summary["items_resumed"], summary["items_scored"]) == (1, 3, 1)
    assert [r["doc_id"] for r in store.read_partial_jsonl(items)] == [0, 1, 2, 3]
    table = results_table(out)
    assert set(table["status"]) == {"done"} and len(table[table["metric"] == "exact_match"]) == 2


def test_table_report_and_compare_read_a_killed_sweep(tiny_model_dir, tmp_path, capsys):
    _, out = _two_checkpoint_sweep(tiny_model_dir, tmp_path)
    # checkpoint-20 as a kill leaves it: part of an item log, no finished unit, no results.json
    folder = out / "r" / "checkpoint-20"
    for path in folder.rglob("*.json"):
        path.unlink()
    (items,) = folder.rglob("*.items.jsonl")
    items.write_text(items.read_text(encoding="utf-8")[:150], encoding="utf-8")

    table = results_table(out)
    assert set(table["step"]) == {10} and set(table["status"]) == {"done"}
    assert cli.main(["table", str(out), "--format", "markdown"]) == 0
    assert cli.main(["report", str(out), "--out", str(tmp_path / "report"), "--no-figures", "--bootstrap", "100"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    capsys.readouterr()
    assert cli.main(["compare", str(out), str(out), "--out", str(tmp_path / "compare")]) == 0
    assert "cells agree" in capsys.readouterr().out
