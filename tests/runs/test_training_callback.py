"""Evaluating while training: ``harness.EvalCallback`` in an HF Trainer run, ``harness.evaluate_model``
on a model in memory, and ``--log-to`` — checked against ``harness eval`` of the saved checkpoints."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, build_tiny_gpt_neox, eval_items

TASK = "bigbench:modified_arithmetic"
LIMIT = 2  # items per subtask: 6 subtasks, 12 generations per evaluation
SEQ = 32
BATCH = 4
STEPS, SAVE_STEPS = 6, 3
SERIES = f"harness/{TASK}/exact_match"


def _training_data(tokenizer, blocks: int = 48) -> list[dict]:
    """Packed fixed-length blocks of BIG-bench-style additions (as pre-training data is packed)."""
    rng = random.Random(0)
    text = "".join(f"{a} + {b} -> {a + b}\n" for a, b in ((rng.randrange(100, 999), rng.randrange(100, 999)) for _ in range(600)))
    ids = tokenizer(text)["input_ids"]
    return [{"input_ids": ids[i * SEQ:(i + 1) * SEQ], "labels": ids[i * SEQ:(i + 1) * SEQ]} for i in range(blocks)]


def _draw_when_evaluated(module, inputs) -> None:
    """Evaluation that draws from the generators (sampling, a random few-shot pick) must not shift
    training's dropout masks or data order: draw from each one whenever the model runs in eval mode."""
    if not module.training:
        random.random(), np.random.rand(), torch.rand(1)


def _train(model_dir: Path, run_dir: Path, callbacks: list, report_to: list[str], **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # dropout on: evaluation switches the model to eval mode, and training must come back to train mode
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, hidden_dropout=0.1, attention_dropout=0.1)
    model.register_forward_pre_hook(_draw_when_evaluated)
    args = TrainingArguments(
        output_dir=str(run_dir), max_steps=STEPS, save_steps=SAVE_STEPS, per_device_train_batch_size=BATCH,
        learning_rate=3e-3, logging_steps=1, report_to=report_to,
        use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0, save_only_model=False,
        **overrides,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_training_data(tokenizer), processing_class=tokenizer,
                      data_collator=default_data_collator, callbacks=callbacks)
    trainer.train()
    return trainer.model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """One run with the callback (TensorBoard on) and the same run without it."""
    from harness import EvalCallback

    root = tmp_path_factory.mktemp("callback")
    model_dir = build_tiny_gpt_neox(root / "tiny")
    callback = EvalCallback([TASK], root / "out", data_dir=FIXTURES / "data", limit=LIMIT, batch_size=4)
    with_eval = _train(model_dir, root / "run", [callback], ["tensorboard"])  # events under run/runs/
    without = _train(model_dir, root / "plain", [], [])
    return {"root": root, "callback": callback, "with_eval": with_eval, "without": without}


def _eval_cli(*args: str) -> int:
    from harness.cli import main

    return main(["eval", "--tasks", TASK, "--data-dir", str(FIXTURES / "data"), "--limit", str(LIMIT),
                 "--batch-size", "4", "--device", "cpu", "--dtype", "float32", "--no-progress", *args])


def _items(out: Path, step: int) -> list[dict]:
    return eval_items(out, step)


def test_training_continues_bit_for_bit(trained):
    with_eval, without = trained["with_eval"].state_dict(), trained["without"].state_dict()
    assert with_eval.keys() == without.keys()
    for name in with_eval:
        assert torch.equal(with_eval[name], without[name]), name
    assert trained["callback"].evaluated_steps == [SAVE_STEPS, STEPS]  # each save; the last step was a save


def test_table_has_every_saved_step_with_loss_and_tokens(trained):
    from harness.table import results_table

    frame = results_table(trained["root"] / "out")
    primary = frame[(frame["task"] == TASK) & (frame["metric"] == "exact_match")]
    assert list(primary["step"]) == [SAVE_STEPS, STEPS]
    assert primary["loss"].notna().all() and set(primary["loss_source"]) == {"trainer"}
    assert set(primary["model"]) == {"run"}
    # fixed-length blocks: batch x accumulation x world x length per step
    assert list(primary["tokens_seen"]) == [s * BATCH * SEQ for s in (SAVE_STEPS, STEPS)]
    # the trainer's last logged loss at each step (logging_steps=1: at that very step)
    state = json.loads((trained["root"] / "run" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    logged = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    assert list(primary["loss"]) == [pytest.approx(logged[SAVE_STEPS]), pytest.approx(logged[STEPS])]


def test_numbers_equal_harness_eval_of_the_saved_checkpoint(trained, capsys):
    root = trained["root"]
    for step in (SAVE_STEPS, STEPS):
        fresh = root / f"eval-{step}"
        assert _eval_cli("--model", str(root / "run" / f"checkpoint-{step}"), "--out", str(fresh)) == 0
        ours, theirs = _items(root / "out", step), _items(fresh, step)
        assert [(r["task"], r["doc_id"]) for r in ours] == [(r["task"], r["doc_id"]) for r in theirs]
        for a, b in zip(ours, theirs):
            assert a["generation"] == b["generation"] and a["metrics"]["exact_match"] == b["metrics"]["exact_match"]
            assert a["target_logprobs"] == pytest.approx(b["target_logprobs"], abs=1e-5)
    # the same folder and keys as `harness eval`: evaluating the checkpoint into the callback's store runs nothing
    capsys.readouterr()
    assert _eval_cli("--model", str(root / "run" / f"checkpoint-{SAVE_STEPS}"), "--out", str(root / "out")) == 0
    assert "not run again" in capsys.readouterr().err
    assert len([p for p in (root / "out").rglob("results.json")]) == 2


def test_tensorboard_holds_the_harness_series(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.table import results_table

    (events,) = {p.parent for p in (trained["root"] / "run" / "runs").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    # transformers' TensorBoard callback files every key that is not eval_/test_ under train/
    scalars = {e.step: e.value for e in accumulator.Scalars(f"train/{SERIES}")}
    frame = results_table(trained["root"] / "out")
    for metric in ("exact_match", "target_logprob"):
        rows = frame[(frame["task"] == TASK) & (frame["metric"] == metric)]
        logged = {e.step: e.value for e in accumulator.Scalars(f"train/harness/{TASK}/{metric}")}
        assert logged == {s: pytest.approx(v, abs=1e-5) for s, v in zip(rows["step"], rows["value"])}
    assert set(scalars) == {SAVE_STEPS, STEPS}
    assert {"train/harness/loss", "train/harness/eval_seconds", "train/harness/eval_share_of_train_time"} <= set(tags)
    share = [e.value for e in accumulator.Scalars("train/harness/eval_share_of_train_time")]
    assert all(0 < value < 1 for value in share)
    log = [json.loads(line) for line in (trained["root"] / "out" / "logs" / "callback.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["limit"] == LIMIT
    assert all(len(doc_ids) == LIMIT for doc_ids in log[0]["items"].values())  # the items scored at every step
    assert [e["step"] for e in log[1:]] == [SAVE_STEPS, STEPS] and all(e["logged_to_trainer"] for e in log[1:])


def test_report_reads_the_callback_output(trained, capsys):
    from harness.cli import main

    report = trained["root"] / "report"
    assert main(["report", str(trained["root"] / "out"), "--out", str(report), "--bootstrap", "100"]) == 0
    assert TASK in capsys.readouterr().out
    assert (report / "index.html").is_file()


def test_log_to_tensorboard_from_eval_matches_the_callback(trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checkpoint = trained["root"] / "run" / f"checkpoint-{STEPS}"
    assert _eval_cli("--model", str(checkpoint), "--out", str(trained["root"] / "out"),
                     "--log-to", f"tensorboard:{tmp_path / 'tb'}") == 0
    (events,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    # one tag name in both: what transformers' TensorBoard callback makes of the callback's logs
    ours = {e.step: e.value for e in accumulator.Scalars(f"train/harness/{TASK}/target_logprob")}
    callback_events = EventAccumulator(str(next((trained["root"] / "run" / "runs").rglob("events.out.tfevents.*")).parent))
    callback_events.Reload()
    theirs = {e.step: e.value for e in callback_events.Scalars(f"train/harness/{TASK}/target_logprob")}
    assert ours == {STEPS: pytest.approx(theirs[STEPS], abs=1e-6)}
    tags = set(accumulator.Tags()["scalars"])
    assert f"train/harness/{TASK}/exact_match" in tags and tags <= set(callback_events.Tags()["scalars"])
    # the eval asked for no loss: it draws the numbers of its own request only, never the callback's loss
    assert "train/harness/loss" not in tags


def test_sweep_log_to_draws_the_same_series_as_the_callback(trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.cli import main
    from harness.table import results_table

    out = tmp_path / "sweep"
    assert main(["sweep", "--checkpoints", str(trained["root"] / "run"), "--name", "run", "--tasks", TASK,
                 "--data-dir", str(FIXTURES / "data"), "--limit", str(LIMIT), "--batch-size", "4", "--device", "cpu",
                 "--dtype", "float32", "--loss-from", "trainer-state", "--out", str(out), "--no-progress",
                 "--log-to", f"tensorboard:{tmp_path / 'tb'}"]) == 0
    (events,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    assert events.name == "run"
    sweep_events = EventAccumulator(str(events))
    sweep_events.Reload()
    callback_events = EventAccumulator(str(next((trained["root"] / "run" / "runs").rglob("events.out.tfevents.*")).parent))
    callback_events.Reload()
    # every series the sweep draws is a curve of the training run's own, under the same tag
    sweep_tags = set(sweep_events.Tags()["scalars"])
    assert f"train/{SERIES}" in sweep_tags and sweep_tags <= set(callback_events.Tags()["scalars"])
    for tag in sweep_tags:
        ours = {e.step: e.value for e in sweep_events.Scalars(tag)}
        theirs = {e.step: e.value for e in callback_events.Scalars(tag)}
        assert ours == {step: pytest.approx(value, abs=1e-5) for step, value in theirs.items()}, tag
    # the same table either way (the sweep's loss is the trainer's, read back from trainer_state.json)
    columns = ["step", "task", "metric", "value", "loss"]
    sweep, callback = (results_table(path)[columns].dropna() for path in (out, trained["root"] / "out"))
    assert np.allclose(sweep["value"], callback["value"], atol=1e-5) and np.allclose(sweep["loss"], callback["loss"])
    assert sweep[["step", "task", "metric"]].values.tolist() == callback[["step", "task", "metric"]].values.tolist()


def test_log_to_is_checked_before_any_work(capsys):
    from harness.cli import main

    assert main(["sweep", "--checkpoints", "nowhere", "--tasks", TASK, "--log-to", "mlflow:x"]) == 2
    assert "use tensorboard:DIR or wandb[:PROJECT]" in capsys.readouterr().err


def test_log_to_wandb_offline(trained, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    assert _eval_cli("--model", str(trained["root"] / "run" / f"checkpoint-{STEPS}"), "--out", str(out),
                     "--log-to", "wandb:harness-test") == 0
    runs = list((out / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_every_n_steps_without_saves_with_a_corpus_loss(tmp_path, one_torch_thread):
    from harness import EvalCallback
    from harness.table import results_table

    model_dir = build_tiny_gpt_neox(tmp_path / "tiny")
    callback = EvalCallback(TASK, tmp_path / "out", data_dir=FIXTURES / "data", limit=1, every=4, batch_size=4,
                            loss_corpus=FIXTURES / "loss_corpus.jsonl", loss_window=64, loss_tokens=256,
                            tokens_per_step=1000)
    _train(model_dir, tmp_path / "run", [callback], [], save_strategy="no")
    assert not list((tmp_path / "run").glob("checkpoint-*"))
    frame = results_table(tmp_path / "out")
    rows = frame[(frame["task"] == TASK) & (frame["metric"] == "exact_match")]
    # every 4 steps, then the last step; the weights in memory are keyed by their state dict
    assert list(rows["step"]) == [4, STEPS] and list(rows["tokens_seen"]) == [4000, STEPS * 1000]
    assert set(rows["loss_source"]) == {"corpus"} and rows["loss"].is_unique
    assert {json.loads(p.read_text())["model"]["source"] for p in (tmp_path / "out").rglob("results.json")} == {"memory"}


_DDP_SCRIPT = """
import os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path[:0] = {tests!r}  # this module's folder and conftest's
import test_training_callback as t
from harness import EvalCallback
root = Path({root!r})
callback = EvalCallback([t.TASK], root / "out", data_dir=t.FIXTURES / "data", limit=t.LIMIT, batch_size=4)
t._train(root / "tiny", root / "run", [callback], [])
# leave the process group before exit: gloo's threads torn down at interpreter exit can abort a rank
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_two_process_training_scores_shares_and_the_main_process_writes(tmp_path):
    """torchrun, two CPU processes (gloo): the callback's items at a save equal a one-process
    `harness eval` of that checkpoint, in the same folder (same identity), with the world's tokens."""
    import subprocess
    import sys

    build_tiny_gpt_neox(tmp_path / "tiny")
    script = tmp_path / "train.py"
    script.write_text(_DDP_SCRIPT.format(tests=[str(Path(__file__).parent), str(FIXTURES.parent)], root=str(tmp_path)), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = tmp_path / "fresh"
    assert _eval_cli("--model", str(tmp_path / "run" / f"checkpoint-{SAVE_STEPS}"), "--out", str(fresh)) == 0
    ours, theirs = _items(tmp_path / "out", SAVE_STEPS), _items(fresh, SAVE_STEPS)
    assert [r["generation"] for r in ours] == [r["generation"] for r in theirs]
    assert [r["target_logprobs"] for r in ours] == [pytest.approx(r["target_logprobs"], abs=1e-5) for r in theirs]
    (folder,) = [p.parent.relative_to(fresh) for p in fresh.rglob("results.json")]  # <model>/<checkpoint>
    results = json.loads((tmp_path / "out" / folder / "results.json").read_text())
    assert results["processes"] == 2 and results["tokens_per_step"] == BATCH * 2 * SEQ


# ---------------------------------------------------------------------- evaluate_model alone


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_tiny_gpt_neox(tmp_path_factory.mktemp("in-process") / "tiny")
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), AutoTokenizer.from_pretrained(model_dir)


def test_evaluate_model_restores_modes_flags_and_random_states(tiny):
    from harness import evaluate_model

    model, tokenizer = tiny
    model.train()
    model.gpt_neox.embed_in.weight.requires_grad_(False)
    # a hook that draws from every generator while the model is evaluated: without the restore, the
    # draws after evaluation would differ from those of a run that never evaluated
    calls = []

    def draw(module, inputs) -> None:
        calls.append((random.random(), np.random.rand(), torch.rand(1)))

    hook = model.register_forward_pre_hook(draw)
    try:
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        expected = (random.random(), np.random.rand(), torch.rand(3))
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        frame = evaluate_model(model, tokenizer, [TASK], data_dir=FIXTURES / "data", limit=1, batch_size=4)
        after = (random.random(), np.random.rand(), torch.rand(3))
    finally:
        hook.remove()
        model.gpt_neox.embed_in.weight.requires_grad_(True)
    assert calls  # the generators were drawn from during evaluation
    assert after[:2] == expected[:2] and torch.equal(after[2], expected[2])
    assert all(module.training for module in model.modules())
    assert not frame.empty and set(frame["task"]) >= {TASK}


def test_evaluate_model_keys_the_weights_in_memory(tiny, tmp_path):
    from harness import evaluate_model
    from harness.table import COLUMNS, results_table

    model, tokenizer = tiny
    common = {"data_dir": FIXTURES / "data", "limit": 1, "batch_size": 4, "out": tmp_path, "name": "tiny", "step": 7,
              "loss_corpus": FIXTURES / "loss_corpus.jsonl", "loss_window": 64, "loss_tokens": 256}
    first = evaluate_model(model, tokenizer, TASK, **common)
    assert list(first.columns) == COLUMNS and set(first["loss_source"]) == {"corpus"} and set(first["step"]) == {7}
    messages = []
    again = evaluate_model(model, tokenizer, TASK, log=messages.append, **common)
    assert any("not run again" in m for m in messages)  # same state dict: same keys, nothing rerun
    assert again["value"].tolist() == first["value"].tolist()
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    try:
        changed = evaluate_model(model, tokenizer, TASK, **common)
    finally:
        with torch.no_grad():
            model.lm_head.weight[0, 0] -= 1.0
    # changed weights: a new identity, so new keys (the task and the loss run again) in the same
    # <out>/tiny/step-7 folder; the returned rows and the table never mix the two weights' units
    assert len(list(tmp_path.rglob("results.json"))) == 1 and len(list(tmp_path.rglob("units/*.json"))) == 4
    assert changed["weights"].nunique() == 1 and set(changed["weights"]).isdisjoint(first["weights"])
    table = results_table(tmp_path)
    assert table["weights"].nunique() == 2
    for _, rows in table.groupby("weights"):
        assert rows["loss"].nunique() == 1 and rows["loss_unit_key"].nunique() == 1
    assert table.groupby("weights")["loss"].first().nunique() == 2


def test_callback_rejects_a_bad_schedule():
    from harness import EvalCallback
    from harness.errors import UserError

    with pytest.raises(UserError, match="every=0"):
        EvalCallback([TASK], "out", every=0)
