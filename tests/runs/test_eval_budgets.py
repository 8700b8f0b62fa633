"""Budgets for evaluation during training: a cap on generated tokens that a model that answers never
reaches, and a time budget that cuts an evaluation into ``partial`` units, never finished ones."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import pytest

from harness import store
from harness.errors import UserError
from harness.items import registry
from harness.items.rows import AUTO_CAP_MARGIN, build_task_rows, capped
from harness.requests import Item
from harness.scoring.extraction import BIGBENCH_DEFAULT_OUTPUT_REGEX, BigbenchAnswer
from harness.spec import BuildOptions

from conftest import FIXTURES, build_tiny_gpt_neox

TASK = "bigbench:modified_arithmetic"


def _spec(name: str):
    return registry.all_specs()[name]


def test_auto_cap_is_the_longest_target_and_stop_in_bytes_plus_a_margin():
    item = Item(task="t", doc_id=0, context="1 + 1 -> ", targets=("2", "12345"), stop=("\n",), max_new_tokens=256)
    assert capped(item, _spec("bigbench"), "auto").max_new_tokens == 5 + 1 + AUTO_CAP_MARGIN
    # a stop string counts like a stop; multi-byte characters count in bytes (a token covers at least one)
    item = dataclasses.replace(item, targets=("ɔɡ",), stop_string="\n\n")
    assert capped(item, _spec("bigbench"), "auto").max_new_tokens == 4 + 2 + AUTO_CAP_MARGIN
    assert capped(item, _spec("bigbench"), 3).max_new_tokens == 3
    assert capped(item, _spec("bigbench"), 1000).max_new_tokens == 256  # never above the task's own
    # chain-of-thought answers come after reasoning: auto leaves GSM8K alone, a count still caps it
    gsm = Item(task="g", doc_id=0, context="Q", targets=("42",), stop=("Question:",), max_new_tokens=256)
    assert capped(gsm, _spec("gsm8k"), "auto").max_new_tokens == 256
    assert capped(gsm, _spec("gsm8k"), 64).max_new_tokens == 64
    choice = Item(task="m", doc_id=0, context="Q", choices=(" A", " B"), gold=0)
    assert capped(choice, _spec("mmlu"), 1) is choice


def test_auto_cap_never_changes_the_answer_of_a_model_that_answers():
    """A model that answers writes a target, a stop, then anything (BIG-bench's items have no decode stops:
    the answer ends at the task's stop string or regex match).  The capped decode is a prefix of the
    uncapped one holding at least ``cap`` bytes (a token is at least one byte); BIG-bench reads it kept to
    ``cap`` characters.  Whatever follows the stop, the answer read and its exact match are the same."""
    rng = random.Random(0)
    alphabet = "0123456789 -+abcxyzɔɡ.\n;"
    regexes = [None, BIGBENCH_DEFAULT_OUTPUT_REGEX, r"[-+]?\d+", r"^\s*(\w+)"]
    checked = 0
    for trial in range(2000):
        targets = tuple("".join(rng.choice("0123456789abɔ") for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 3)))
        stop_string = rng.choice([None, "\n", ".", "\n\n"])
        regex = rng.choice(regexes)
        answer = rng.choice(targets)
        terminator = stop_string or rng.choice(["\n", ".", ";"])
        babble = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        generation = answer + terminator + babble
        item = Item(task="t", doc_id=trial, context="x", targets=targets, max_new_tokens=256,
                    stop_string=stop_string, output_regex=regex)
        cap = capped(item, _spec("bigbench"), "auto").max_new_tokens
        if stop_string is None and regex is None:
            assert cap == 256  # the whole text is the answer: nothing to cap
            continue
        checked += 1
        # the fewest characters a capped decode can hold: cap tokens of one byte each
        shortest = generation.encode("utf-8")[:cap].decode("utf-8", errors="ignore")
        full = BigbenchAnswer(256, stop_string, regex).read(generation)
        cut = BigbenchAnswer(cap, stop_string, regex).read(shortest)
        assert cut == full, (trial, generation[:40], targets, stop_string, regex, cap)
        assert (cut in targets) == (full in targets)
    assert checked > 1200


def test_the_cap_is_part_of_the_items_and_so_of_the_unit_keys():
    from harness.runs.units import items_sha256

    (selection,) = registry.resolve([f"{TASK}/three_digit_addition_control"])
    opts = BuildOptions(data_dir=FIXTURES / "data", limit=3)
    (plain,) = build_task_rows([selection], opts)
    (auto,) = build_task_rows([selection], dataclasses.replace(opts, max_new_tokens="auto"))
    assert [i.max_new_tokens for i in plain.rows[selection.label]] == [256] * 3
    assert all(i.max_new_tokens < 256 for i in auto.rows[selection.label])
    assert [dataclasses.replace(i, max_new_tokens=256) for i in auto.rows[selection.label]] == plain.rows[selection.label]
    assert items_sha256(plain.rows) != items_sha256(auto.rows)


def _train_with(callback, root: Path, steps: int = 2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    model_dir = build_tiny_gpt_neox(root / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tokenizer("".join(f"{a} + {a} -> {2 * a}\n" for a in range(100, 400)))["input_ids"]
    train = [{"input_ids": ids[i * 32:(i + 1) * 32], "labels": ids[i * 32:(i + 1) * 32]} for i in range(16)]
    args = TrainingArguments(output_dir=str(root / "run"), max_steps=steps, save_steps=steps, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, data_collator=default_data_collator,
            callbacks=[callback]).train()
    return root / "run" / f"checkpoint-{steps}"


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory, one_torch_thread):
    """An untrained model's BIG-bench evaluation at its one save, cut by its time budget.  When the
    clock runs out depends on the machine, so the runner's look at the clock is made to say "out of
    time" from its second look on: one chunk of items is scored, then the unit is cut."""
    from harness import EvalCallback
    from harness.runs import sweep

    looks = []

    def out_of_time(run) -> bool:
        assert run.deadline is not None  # a budget was set: the runner has a deadline
        looks.append(run.deadline)
        return len(looks) > 1

    root = tmp_path_factory.mktemp("budget")
    callback = EvalCallback([TASK], root / "out", data_dir=FIXTURES / "data", batch_size=4, budget_seconds=30.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep._Run, "out_of_time", out_of_time)
        checkpoint = _train_with(callback, root)
    assert len(looks) == 2
    return root, callback, checkpoint


def test_the_deadline_and_the_callbacks_allowance():
    from harness import EvalCallback
    from harness.runs.sweep import _Run

    assert _Run(*[None] * 9, deadline=time.monotonic() - 1).out_of_time()
    assert not _Run(*[None] * 9, deadline=time.monotonic() + 60).out_of_time()
    assert not _Run(*[None] * 9).out_of_time()  # no budget, no deadline
    callback = EvalCallback([TASK], "unused", budget_share=0.1)
    callback._train_started, callback.eval_seconds = 100.0, 2.0
    assert callback._time_budget(150.0) == pytest.approx(3.0)  # 10% of 50 s, less the 2 s spent
    assert callback._time_budget(110.0) == 0.0  # spent already: cut at once, the loss still measured
    callback.budget_seconds = 1.5
    assert callback._time_budget(150.0) == 1.5  # both: the tighter
    with pytest.raises(UserError, match="budget_share"):
        EvalCallback([TASK], "unused", budget_share=1.5)
    with pytest.raises(UserError, match="max_new_tokens"):
        EvalCallback([TASK], "unused", max_new_tokens=0)


def test_a_time_budget_cuts_the_evaluation_into_a_partial_unit(cut_run, capsys):
    from harness.runs.unit_files import is_finished
    from harness.table import results_table

    root, callback, checkpoint = cut_run
    (folder,) = [p.parent for p in (root / "out").rglob(store.RESULTS_NAME)]
    (unit_file,) = [p for p in (folder / store.UNITS_DIR).glob("*.json")]
    unit = json.loads(unit_file.read_text())
    assert unit["status"] == "partial" and unit["partial"] == {"items_scored": 4, "items_total": 84, "reason": "time budget"}
    assert not is_finished(folder, unit["key"])  # never taken for finished: the next run resumes it
    assert len(store.read_partial_jsonl(store.unit_items_path(folder, unit["key"]))) == unit["partial"]["items_scored"]
    view = json.loads((folder / store.RESULTS_NAME).read_text())
    assert view["units"][TASK]["status"] == "partial"
    table = results_table(root / "out")
    assert set(table["status"]) == {"partial"} and table["error"].str.contains("partial: ").all()
    assert (table.loc[table["task"] == f"{TASK}/three_digit_addition_control", "n"] == 4).all()
    from harness.analysis.points import prepare_points

    with pytest.raises(UserError, match="no metric values"):  # a partial number is never drawn as the checkpoint's
        prepare_points(table)
    event = json.loads((root / "out" / "logs" / "callback.jsonl").read_text().splitlines()[-1])
    assert event["time_budget"] == 30.0 and event["partial"] == [f"{TASK}/three_digit_addition_control"]  # the one row it reached


def test_the_next_run_resumes_a_partial_unit_and_equals_an_evaluation_without_budget(cut_run, tmp_path):
    from harness.cli import main

    root, callback, checkpoint = cut_run
    (folder,) = [p.parent for p in (root / "out").rglob(store.RESULTS_NAME)]
    common = ["eval", "--model", str(checkpoint), "--tasks", TASK, "--data-dir", str(FIXTURES / "data"),
              "--batch-size", "4", "--device", "cpu", "--dtype", "float32", "--no-progress"]
    assert main([*common, "--out", str(root / "out")]) == 0  # resumes the partial unit, in the callback's folder
    resumed = json.loads((folder / store.RESULTS_NAME).read_text())
    assert resumed["units"][TASK]["status"] == "done"
    assert resumed["stats"][TASK]["items_resumed"] > 0
    assert main([*common, "--out", str(tmp_path / "fresh")]) == 0
    (fresh_file,) = list((tmp_path / "fresh").rglob(store.RESULTS_NAME))
    fresh = json.loads(fresh_file.read_text())
    assert resumed["request"] == fresh["request"]  # the same unit keys: the budget is not part of them
    for row, entry in fresh["tasks"].items():
        for metric, m in entry["metrics"].items():
            got = resumed["tasks"][row]["metrics"][metric]
            assert got["n"] == m["n"]
            # log-probs of items scored in other batches differ in the last bits (fp32: within 1e-4)
            assert got["value"] == pytest.approx(m["value"], abs=1e-4), (row, metric)
        assert resumed["tasks"][row]["metrics"]["exact_match"] == entry["metrics"]["exact_match"]
