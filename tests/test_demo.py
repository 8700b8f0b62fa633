"""The offline demo: the tiny suite's corpus, tasks and checkpoints, and ``harness demo --quick`` end to end."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from harness import cli, registry
from harness.demo import FULL, QUICK
from harness.evaluate import build_task_rows
from harness.table import results_table
from harness.tiny_suite import (
    ADDITION,
    SuiteConfig,
    build_corpus,
    checkpoint_steps,
    task_document,
    train_tokenizer,
    write_suite_data,
)

# A corpus small enough to build in a second: few docstrings, few evaluated items.
SMALL = dataclasses.replace(QUICK, docstring_chars=20_000, eval_items=12)


def test_checkpoint_steps_are_log_spaced():
    # 30 * (1500/30)^(k/9) for k = 0..9, rounded: 30, 46.3, 71.6, 110.5, 170.7, 263.6, 407.2, 628.9, 971.3, 1500
    assert checkpoint_steps(1500, 10, 30) == [30, 46, 72, 111, 171, 264, 407, 629, 971, 1500]
    for config in (FULL, QUICK):
        steps = checkpoint_steps(config.steps, config.checkpoints, config.first_checkpoint)
        assert len(steps) >= 8 and steps[-1] == config.steps
        ratios = [b / a for a, b in zip(steps, steps[1:])]
        assert max(ratios) / min(ratios) < 1.3  # evenly spaced in log(step)


def _pairs(text: str) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in re.findall(r"(\d+) \+ (\d+) ->", text)}


def test_evaluated_items_are_held_out_of_training_and_loss_corpus():
    corpus = build_corpus(SMALL)
    evaluated = set(corpus.eval_pairs[ADDITION.name])
    assert len(evaluated) == SMALL.eval_items
    trained = set().union(*map(_pairs, corpus.train))
    held = set().union(*map(_pairs, corpus.heldout))
    assert trained and held  # both splits hold arithmetic
    assert not evaluated & trained and not evaluated & held and not trained & held
    # the mixture is real text too: stdlib docstrings in both splits
    assert any("Return" in doc for doc in corpus.train) and any("->" not in doc for doc in corpus.heldout)
    assert build_corpus(SMALL) == corpus  # seeded


def test_generated_task_runs_through_the_bigbench_loader(tmp_path):
    """The task.json is read by the normal ``bigbench:`` loader; its 3-shot prompt is the training format."""
    corpus = build_corpus(SMALL)
    write_suite_data(SMALL, corpus, tmp_path)
    (a0, b0), (a1, b1), (a2, b2), (a3, b3) = corpus.eval_pairs[ADDITION.name][:4]
    opts = registry.BuildOptions(data_dir=tmp_path / "data", limit=4)
    (built,) = build_task_rows(registry.resolve(["bigbench:two_digit_addition"]), opts)
    items = built.rows["bigbench:two_digit_addition"]
    golden = (
        "In the following lines, the symbol -> represents a simple mathematical operation.\n"
        f"{a1} + {b1} -> {a1 + b1}\n{a2} + {b2} -> {a2 + b2}\n{a3} + {b3} -> {a3 + b3}\n{a0} + {b0} ->"
    )
    assert items[0].context == golden + " "
    assert items[0].targets == (str(a0 + b0),) and "\n" in items[0].stop
    # a training document of the same pairs is the prompt with its answer filled in
    assert task_document(ADDITION, [(a1, b1), (a2, b2), (a3, b3), (a0, b0)]) == golden + f" {a0 + b0}"
    lines = (tmp_path / "loss_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == list(corpus.heldout)


def test_tokenizer_splits_every_digit():
    tokenizer = train_tokenizer(build_corpus(SMALL).train, 512)
    tokens = tokenizer.tokenize("1234 + 56 -> 1290")
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("1234561290")
    assert tokenizer.decode(tokenizer("Return the 12 items.")["input_ids"]) == "Return the 12 items."


def test_a_suite_trained_with_other_settings_is_refused(tmp_path):
    from harness.errors import UserError
    from harness.tiny_suite import SUITE_MANIFEST, train_suite

    (tmp_path / SUITE_MANIFEST).write_text(json.dumps({"config_digest": "0" * 16, "sizes": []}), encoding="utf-8")
    with pytest.raises(UserError, match="trained with other settings"):
        train_suite(SMALL, tmp_path, log=lambda message: None)
    assert SuiteConfig(sizes=()).digest() != dataclasses.replace(SuiteConfig(sizes=()), seed=1).digest()


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report' / 'index.html'}" in printed
    assert "bigbench:two_digit_addition [exact_match]" in printed

    table = results_table(out / "sweep")
    em = table[(table["task"] == "bigbench:two_digit_addition") & (table["metric"] == "exact_match")]
    assert set(em["size"]) == {size.name for size in QUICK.sizes}
    assert (em["loss_source"] == "corpus").all()
    for size, rows in em.groupby("size"):
        rows = rows.sort_values("step")
        assert list(rows["step"]) == checkpoint_steps(QUICK.steps, QUICK.checkpoints, QUICK.first_checkpoint)
        losses = list(rows["loss"])
        assert losses[-1] < losses[0] - 1.0, size  # the held-out loss falls with training
        assert sum(b < a for a, b in zip(losses, losses[1:])) >= len(losses) - 2, size
    largest = em[em["size"] == QUICK.sizes[-1].name].sort_values("step")
    assert largest["value"].iloc[-1] >= largest["value"].iloc[0] + 0.1

    for name in ("index.html", "report.md", "thresholds.csv", "points.csv", "figures/performance_vs_loss.png",
                 "figures/companions_bigbench_two_digit_addition.png", "predictions.csv"):
        assert (out / "report" / name).is_file(), name
    # the continuous companion moves with the loss, and the prediction test's table is printed
    logprob = table[(table["task"] == "bigbench:two_digit_addition") & (table["metric"] == "target_logprob_per_token")]
    for size, rows in logprob.groupby("size"):
        rows = rows.sort_values("step")
        assert rows["value"].iloc[-1] > rows["value"].iloc[0] + 0.5, size
    assert "prediction test" in printed and "mean exp(target_logprob)" in printed
    losses = (out / "losses.csv").read_text(encoding="utf-8").splitlines()
    assert losses[0] == "size,step,heldout_loss,train_loss" and len(losses) == 1 + len(em)
    assert (out / "sweep.yaml").is_file()

    # a second run reuses the suite and every finished sweep unit
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "sweep" / "logs" / "summary-all.json").read_text(encoding="utf-8"))
    assert summary["units_done"] == 0 and summary["units_skipped"] == summary["units_owned"] > 0
    assert "reusing the trained suite" in capsys.readouterr().err
