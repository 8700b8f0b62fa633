"""The offline demo: the tiny suite's corpus, tasks and checkpoints, and ``harness demo --quick`` end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import cli
from harness.demo.corpus import ADDITION, ModelSize, SuiteConfig, build_corpus, task_document, write_suite_data
from harness.demo.pipeline import FULL, QUICK
from harness.demo.tiny_suite import checkpoint_steps, train_tokenizer
from harness.items import registry
from harness.items.rows import build_task_rows
from harness.spec import BuildOptions
from harness.table import results_table

# A corpus small enough to build in a second: few docstrings, few evaluated items.
SMALL = dataclasses.replace(QUICK, docstring_chars=20_000, eval_items=12)
# A suite that trains in seconds: one 888-parameter size, three checkpoints of four items each.
TINY = dataclasses.replace(QUICK, sizes=(ModelSize("2k", 8, 1, 2),), steps=12, batch_size=4, warmup_steps=2,
                           checkpoints=3, first_checkpoint=4, dense_checkpoints=0, docstring_chars=5_000, eval_items=4,
                           threads=1)
# How far each held-out loss falls from the quick demo's first checkpoint to its last, every size (nats/token)
LOSS_DROP = {"mixture": 1.5, "docstrings": 1.5}


def test_checkpoint_steps_are_log_spaced_then_dense():
    # without dense checkpoints: 30 * (1500/30)^(k/9) for k = 0..9, rounded
    assert checkpoint_steps(1500, 10, 30) == [30, 46, 72, 111, 171, 264, 407, 629, 971, 1500]
    # with them: log-spaced from 30 to 300 (a fifth of the run), then every 100 steps to the end
    assert checkpoint_steps(1500, 6, 30, 12, 0.2) == [30, 48, 75, 119, 189, 300, *range(400, 1600, 100)]
    for config in (FULL, QUICK):
        steps = checkpoint_steps(config.steps, config.checkpoints, config.first_checkpoint, config.dense_checkpoints,
                                 config.dense_from)
        assert steps[0] == config.first_checkpoint and steps[-1] == config.steps and steps == sorted(set(steps))
        start = round(config.steps * config.dense_from)
        early, late = [s for s in steps if s <= start], [s for s in steps if s >= start]
        ratios = [b / a for a, b in zip(early, early[1:])]
        assert max(ratios) / min(ratios) < 1.3  # evenly spaced in log(step) up to the dense part
        gaps = [b - a for a, b in zip(late, late[1:])]
        assert len(gaps) == config.dense_checkpoints and max(gaps) - min(gaps) <= 1  # then evenly in steps
        # where the metric moves (the second half of the run): at least 6 checkpoints, none a tenth of the run apart
        second = [s for s in steps if s >= config.steps // 2]
        assert len(second) >= 6 and max(b - a for a, b in zip(second, second[1:])) <= config.steps / 10


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
    opts = BuildOptions(data_dir=tmp_path / "data", limit=4)
    (built,) = build_task_rows(registry.resolve(["bigbench:two_digit_addition"]), opts)
    items = built.rows["bigbench:two_digit_addition"]
    golden = (
        "In the following lines, the symbol -> represents a simple mathematical operation.\n"
        f"{a1} + {b1} -> {a1 + b1}\n{a2} + {b2} -> {a2 + b2}\n{a3} + {b3} -> {a3 + b3}\n{a0} + {b0} ->"
    )
    assert items[0].context == golden + " "
    assert items[0].targets == (str(a0 + b0),) and items[0].stop == ()  # BIG-bench stops at no string
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
    from harness.demo.tiny_suite import SUITE_MANIFEST, train_suite
    from harness.errors import UserError

    (tmp_path / SUITE_MANIFEST).write_text(json.dumps({"config_digest": "0" * 16, "sizes": []}), encoding="utf-8")
    with pytest.raises(UserError, match="trained with other settings"):
        train_suite(SMALL, tmp_path, log=lambda message: None)
    assert SuiteConfig(sizes=()).digest() != dataclasses.replace(SuiteConfig(sizes=()), seed=1).digest()


def test_demo_seed_and_threads_name_the_output_folder():
    from harness.demo.pipeline import default_out, suite_config

    assert default_out() == Path("results/demo") and default_out(seed=1) == Path("results/demo-seed1")
    assert default_out(quick=True, seed=2) == Path("results/demo-quick-seed2")
    assert default_out(quick=True, threads=QUICK.threads) == Path("results/demo-quick")
    assert default_out(quick=True, threads=2) == Path("results/demo-quick-threads2")
    assert suite_config(seed=3).seed == 3 and suite_config(quick=True, threads=2).threads == 2
    assert suite_config(seed=1).digest() != FULL.digest()  # another seed never reuses a suite folder


def test_docstring_loss_corpus_is_the_held_out_docstrings_alone(tmp_path):
    from harness.demo.corpus import LOSS_CORPORA

    corpus = build_corpus(SMALL)
    assert corpus.heldout_docstrings and set(corpus.heldout_docstrings) <= set(corpus.heldout)
    assert not any(_pairs(doc) for doc in corpus.heldout_docstrings)  # no arithmetic document
    assert set(corpus.heldout) - set(corpus.heldout_docstrings) == {d for d in corpus.heldout if _pairs(d)}
    write_suite_data(SMALL, corpus, tmp_path)
    lines = (tmp_path / LOSS_CORPORA["docstrings"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == list(corpus.heldout_docstrings)


def test_table_with_loss_replaces_the_loss_and_names_its_source():
    import pandas as pd

    from harness.demo.pipeline import table_with_loss
    from harness.table import COLUMNS

    table = pd.DataFrame({c: [None, None, None] for c in COLUMNS})
    table["model"], table["step"], table["loss"] = ["m", "m", "n"], pd.array([10, 20, 10], dtype="Int64"), [5.0, 4.0, 6.0]
    losses = pd.DataFrame({"model": ["m", "m", "n"], "step": [20, 10, 10], "loss": [3.5, 4.5, 5.5],
                           "loss_bits_per_byte": [1.0, 2.0, 3.0]})
    out = table_with_loss(table, losses, "docstrings")
    assert list(out.columns) == COLUMNS
    assert list(out["loss"]) == [4.5, 3.5, 5.5] and list(out["loss_bits_per_byte"]) == [2.0, 1.0, 3.0]
    assert (out["loss_source"] == "corpus:docstrings").all() and list(table["loss"]) == [5.0, 4.0, 6.0]


def _callback_log(out: Path) -> list[dict]:
    """The records ``EvalCallback`` wrote during the demo's training (every size's, in one file)."""
    path = out / "evals" / "logs" / "callback.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_evaluates_each_checkpoint_as_training_saves_it(tmp_path, monkeypatch, one_torch_thread):
    """The demo trains through ``EvalCallback``: each checkpoint is evaluated as it is saved, the
    evaluation of every checkpoint after training finds those units done, the weights are those of
    training without the callback, and the numbers those of evaluating the saved checkpoints."""
    from harness.demo import pipeline
    from harness.demo.tiny_suite import train_suite

    monkeypatch.setattr(pipeline, "QUICK", TINY)
    monkeypatch.setattr(pipeline, "BOOTSTRAP", 20)
    quiet = lambda message: None  # noqa: E731
    steps = checkpoint_steps(TINY.steps, TINY.checkpoints, TINY.first_checkpoint)
    assert len(steps) == 3

    # a suite trained before (no callback fired): the evaluation after training does all the work
    train_suite(TINY, tmp_path / "earlier" / "suite", log=quiet)
    earlier = pipeline.run_demo(tmp_path / "earlier", quick=True, log=quiet)
    assert earlier.evaluated["mixture"].units_run == 2 * len(steps)  # the task and the loss, each checkpoint
    assert "eval in training" not in earlier.seconds and not (tmp_path / "earlier" / "evals" / "logs" / "callback.jsonl").exists()

    out = tmp_path / "demo"
    result = pipeline.run_demo(out, quick=True, log=quiet)
    log = _callback_log(out)
    assert [(e["event"], e["name"]) for e in log[:1]] == [("start", "tiny-neox-2k")]
    assert [(e["name"], e["step"], Path(e["checkpoint"]).name) for e in log[1:]] == [
        ("tiny-neox-2k", step, f"checkpoint-{step}") for step in steps
    ]
    assert log[0]["tokens_per_step"] == TINY.batch_size * TINY.seq_len and log[0]["limit"] == TINY.eval_items
    # afterwards, the same keys: nothing run again for the mixture; the docstring loss is a pass of its own
    assert result.evaluated["mixture"].units_run == 0 and result.evaluated["mixture"].units_done_before == 2 * len(steps)
    assert result.evaluated["docstrings"].units_run == len(steps)
    assert result.seconds["eval in training"] > 0
    for step in steps:  # training through the callback is bit for bit training without it
        weights = [(root / "suite" / "runs" / "2k" / f"checkpoint-{step}" / "model.safetensors").read_bytes()
                   for root in (out, tmp_path / "earlier")]
        assert weights[0] == weights[1], step
    columns = ["model", "size", "step", "task", "metric", "value", "loss", "loss_source"]
    for source in ("mixture", "docstrings"):
        ours, theirs = (pd.read_csv(path)[columns] for path in (result.tables[source], earlier.tables[source]))
        assert set(ours["size"]) == {"2k"} and sorted(set(ours["step"])) == steps
        assert ours[["model", "size", "step", "task", "metric", "loss_source"]].equals(
            theirs[["model", "size", "step", "task", "metric", "loss_source"]])
        assert np.allclose(ours["value"], theirs["value"], atol=1e-5, equal_nan=True)
        assert np.allclose(ours["loss"], theirs["loss"], atol=1e-5)


def _demo_settings() -> list[str]:
    """``HARNESS_DEMO_SEED`` / ``HARNESS_DEMO_THREADS`` run the quick demo with another seed or thread count
    (the acceptance runs: seeds 0-4, one and two threads)."""
    seed = os.environ.get("HARNESS_DEMO_SEED")
    threads = os.environ.get("HARNESS_DEMO_THREADS")
    return (["--seed", seed] if seed else []) + (["--threads", threads] if threads else [])


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_quick_demo_end_to_end(tmp_path, capsys):
    """The quick demo end to end, then again (everything reused).

    ``HARNESS_DEMO_SEED`` / ``HARNESS_DEMO_THREADS`` pick the suite's seed and training threads. The
    quick suite is the full demo's two smaller sizes (25k, 100k), so the quantities asserted below were
    measured on the full demo's ten runs of 2026-12-07 at learning rate 7e-3 (seeds 0-4, one and two
    threads, 2 cores, torch 2.13.0+cpu; docs/demo.md), restricted to those sizes (min over the sizes
    where a row is per size):

    | seed, threads        | 0,1  | 1,1  | 2,1  | 3,1  | 4,1  | 0,2  | 1,2  | 2,2  | 3,2  | 4,2  | bar  |
    |----------------------|------|------|------|------|------|------|------|------|------|------|------|
    | mixture drop         | 2.36 | 2.39 | 2.37 | 2.20 | 2.25 | 2.34 | 2.39 | 2.38 | 2.22 | 2.24 | 1.5  |
    | docstring drop       | 2.28 | 2.35 | 2.26 | 2.10 | 2.19 | 2.28 | 2.36 | 2.25 | 2.11 | 2.19 | 1.5  |
    | second-half drop     | 0.15 | 0.17 | 0.17 | 0.13 | 0.17 | 0.15 | 0.16 | 0.16 | 0.14 | 0.16 | 0    |
    | logprob/token rise   | 2.68 | 2.97 | 2.75 | 2.90 | 1.87 | 2.76 | 2.79 | 2.82 | 2.90 | 2.90 | 1.0  |
    | best final EM        | 0.89 | 1.00 | 0.93 | 0.99 | 0.99 | 0.97 | 1.00 | 0.97 | 0.99 | 0.98 | 0.2  |
    | other final EM       | 0.52 | 0.88 | 0.26 | 0.91 | 0.12 | 0.15 | 0.05 | 0.88 | 0.97 | 0.96 |      |
    | pooled verdict       | em.  | em.  | em.  | em.  | em.  | em.  | em.  | em.  | em.  | em.  | rise |

    (drops: held-out loss, first checkpoint minus last, nats/token, and the smaller of the two losses'
    drops from the middle checkpoint to the last; logprob/token: rise of target_logprob_per_token; best
    and other final EM: the two sizes' last exact match, of 100 items, 0 at the first checkpoint on
    every run; em. ``emerged``.) The other size's final exact match goes as low as 0.05 (seed 1, two
    threads), so the test asks a departure of one size, not of both; and the pooled verdict may be a
    ``smooth rise`` (seed 4 read so at the first tuning's learning rate, 1e-2): which one is the
    statistics' call.
    """
    out = tmp_path / "demo"
    settings = _demo_settings()
    assert cli.main(["demo", "--quick", "--out", str(out), *settings]) == 0
    first = capsys.readouterr()
    printed, first_err = first.out, first.err
    assert f"report: {out / 'report' / 'index.html'}" in printed and str(out / "report-docstrings" / "index.html") in printed
    assert "bigbench:two_digit_addition [exact_match]" in printed

    steps = checkpoint_steps(QUICK.steps, QUICK.checkpoints, QUICK.first_checkpoint, QUICK.dense_checkpoints,
                             QUICK.dense_from)
    tables = {source: pd.read_csv(out / f"table-{source}.csv") for source in ("mixture", "docstrings")}
    for source, table in tables.items():
        assert list(table.columns) == list(results_table(out / "evals").columns), source
        assert (table["loss_source"] == f"corpus:{source}").all(), source
    table = tables["mixture"]
    task = table[table["task"] == "bigbench:two_digit_addition"]
    em = task[task["metric"] == "exact_match"]
    assert set(em["size"]) == {size.name for size in QUICK.sizes}
    for source, frame in tables.items():  # both held-out losses fall with training, for every size
        for size, rows in frame[frame["metric"] == "exact_match"].groupby("size"):
            rows = rows.sort_values("step")
            assert list(rows["step"]) == steps
            losses = list(rows["loss"])
            assert losses[-1] < losses[0] - LOSS_DROP[source], (source, size, losses)
            assert losses[-1] < losses[len(losses) // 2], (source, size, losses)  # and still falls in the second half
    # the continuous companion rises for every size
    logprob = task[task["metric"] == "target_logprob_per_token"]
    for size, rows in logprob.groupby("size"):
        rows = rows.sort_values("step")
        assert rows["value"].iloc[-1] > rows["value"].iloc[0] + 1.0, size
    # exact match starts at 0 for every size, and at least one size leaves that plateau within the run with
    # four checkpoints past the jump's start (seed 1, two threads: the 25k ends at 0.05: which size is late is the seed's)
    curves = {size: list(rows.sort_values("step")["value"]) for size, rows in em.groupby("size")}
    assert all(values[0] == 0 for values in curves.values()), curves
    assert any(values[-1] >= 0.2 and sum(v >= 0.1 for v in values) >= 4 for values in curves.values()), curves
    # the pooled curve rises (a threshold, or a smooth rise: which one is the statistics' call), and the run's
    # argument is printed in words, with what it does not show
    thresholds = pd.read_csv(out / "report" / "thresholds.csv")
    pooled = thresholds[(thresholds["metric"] == "exact_match") & (thresholds["scope"] == "all models")]
    assert list(pooled["status"]) in (["emerged"], ["smooth rise"]), list(pooled["status"])
    assert "What this run shows (bigbench:two_digit_addition, exact_match, against the mixture held-out loss)" in printed
    assert "What it does not show: anything about large models" in printed

    for report in ("report", "report-docstrings"):
        for name in ("index.html", "report.md", "thresholds.csv", "points.csv", "figures/performance_vs_loss.png",
                     "figures/companions_bigbench_two_digit_addition.png"):
            assert (out / report / name).is_file(), (report, name)
    assert "prediction test" in printed and "mean exp(target_logprob)" in printed
    losses = pd.read_csv(out / "losses.csv")
    assert list(losses.columns) == ["size", "step", "mixture_loss", "docstring_loss", "train_loss"]
    assert len(losses) == len(em) and losses.notna().all().all()
    # every size was evaluated by its EvalCallback at each save, and found done after training
    log = [e for e in _callback_log(out) if e["event"] == "evaluated"]
    for size in QUICK.sizes:
        assert [e["step"] for e in log if e["name"] == f"tiny-neox-{size.name}"] == steps, size.name
    assert len(log) == len(QUICK.sizes) * len(steps)
    units = 2 * len(QUICK.sizes) * len(steps)  # the task and the mixture loss, each checkpoint
    assert f"{len(QUICK.sizes) * len(steps)} checkpoints, 0 units run, {units} already done" in first_err

    # a second run reuses the suite and every finished unit, and can print the other summary
    assert cli.main(["demo", "--quick", "--out", str(out), *settings, "--loss-source", "docstrings"]) == 0
    captured = capsys.readouterr()
    assert "reusing the trained suite" in captured.err
    assert len(_callback_log(out)) == len(QUICK.sizes) * (len(steps) + 1)  # no training, no callback
    for source in ("mixture", "docstrings"):
        line = next(line for line in captured.err.splitlines() if line.startswith(f"evaluated every checkpoint ({source}"))
        assert ", 0 units run," in line and "failed" not in line, line
    assert "docstrings held-out loss" in captured.out and f"report: {out / 'report-docstrings' / 'index.html'}" in captured.out


def _verdict(status: str, note: str = "", **numbers):
    from harness.analysis.thresholds import Threshold

    fields = dict(departure_loss=None, eta=None, low=None, high=None, slope=None)
    return Threshold(metric="exact_match", checkpoints=22, reference=None, status=status, note=note, **{**fields, **numbers})


def test_plain_words_say_what_the_run_shows_and_what_it_does_not():
    """The summary's sentences from hand-built verdicts: each size's, the pooled one, the agreement, the
    companion and the prediction test, and what a demo cannot show."""
    from types import SimpleNamespace

    from harness.analysis.agreement import Agreement
    from harness.demo.pipeline import has_verdict, plain_words

    emerged = _verdict("emerged", eta=3.53, low=3.52, high=3.55, departure_loss=3.5)
    edge = _verdict("smooth rise", "the rise begins at the edge of the observed losses (12 checkpoints above the best kink): no η",
                    departure_loss=5.29, smooth="logistic")
    smooth = _verdict("smooth rise", "no threshold supported", departure_loss=3.6, smooth="exponential")
    two = _verdict("no emergence", "only the 2 lowest-loss checkpoints depart; 3 needed")
    assert [has_verdict(t) for t in (emerged, edge, smooth, two)] == [True, False, True, False]
    agreement = Agreement(agree=False, p_value=0.001, models=("a", "b"), contrary=("tiny-neox-25k (25.5K)",), note="",
                          shift=0.2, shift_low=0.16, shift_high=0.21)
    analysis = SimpleNamespace(task="bigbench:two_digit_addition", metric="exact_match", pooled=emerged,
                               by_model={"tiny-neox-25k (25.5K)": emerged, "tiny-neox-100k (100K)": smooth,
                                         "tiny-neox-330k (336K)": two},
                               agreement=agreement, companion=edge)
    lines = plain_words(SimpleNamespace(analyses=[analysis], predictions=()), "mixture")
    assert lines[0] == (
        "What this run shows (bigbench:two_digit_addition, exact_match, against the mixture held-out loss): 2 of 3 "
        "sizes have data that carry a verdict. 25k: a threshold (flat, then rising below η = 3.53 [3.52, 3.55]). "
        "100k: a rise, but no threshold: a smooth exponential curve of the loss fits as well (departs below 3.60). "
        "330k: no rise (only the 2 lowest-loss checkpoints depart; 3 needed).")
    assert lines[1] == "All sizes pooled as one curve of loss: a threshold (flat, then rising below η = 3.53 [3.52, 3.55])."
    assert lines[2] == ("The sizes do NOT lie on one curve of loss (25k apart): each reaches the same exact match at a "
                        "different loss (p = 0.001; largest shift 0.20 nats [0.16, 0.21]).")
    assert "continuous companion) is a rise that begins at the edge of its checkpoints" in lines[3]
    # a companion that rises from its first checkpoints has no shape verdict: the mirage is not claimed
    assert "this run does not decide whether the jump is only the metric's" in lines[3]
    mirage = plain_words(SimpleNamespace(analyses=[SimpleNamespace(**{**vars(analysis), "companion": smooth})],
                                         predictions=()), "mixture")
    assert "the jump is made by scoring all-or-nothing (Schaeffer et al.'s mirage)" in mirage[3]
    assert lines[-1].startswith("What it does not show: anything about large models")
    test = SimpleNamespace(task=analysis.task, split="fit every checkpoint of 25k, 100k; predict 330k", note="it does not",
                           surrogate_departure=3.991, measured_departure=3.524, departure_low=3.378, departure_high=3.654,
                           surrogate_inside=False, surrogate_mae=0.147, baseline_mae=0.289)
    lines = plain_words(SimpleNamespace(analyses=[analysis], predictions=(test,)), "mixture")
    assert lines[4] == ("Prediction test (fit every checkpoint of 25k, 100k; predict 330k): the answer's log-probability, as "
                        "the fitted sizes map it to exact match, puts the departure at 3.99, outside the measured 3.52 "
                        "[3.38, 3.65] (error 0.147 against 0.289 for exact match extrapolated linearly): it does not.")
    # sizes on one curve: the shift the test rules out is said
    agreeing = dataclasses.replace(agreement, agree=True, p_value=0.45, contrary=(), shift_low=-0.05, shift_high=0.1)
    lines = plain_words(SimpleNamespace(analyses=[SimpleNamespace(**{**vars(analysis), "agreement": agreeing})],
                                        predictions=()), "docstrings")
    assert "The sizes lie on one curve of loss: the same curve shifted per size fits no better (p = 0.45; a shift " \
           "between sizes larger than 0.10 nats is ruled out at 90%)" in lines[2]
