"""Losses read from logs: HF Trainer's trainer_state.json and step/loss CSV/TSV files."""

from __future__ import annotations

import json
import math

import pytest

from harness.errors import UserError
from harness.runs.loss_sources import logged_loss, loss_settings, read_loss_log, trainer_state_loss

from conftest import FIXTURES

PYTHIA_EXCERPT = FIXTURES / "sweep" / "160m-seed5_excerpt.tsv"


def _trainer_state(folder, history, global_step):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": global_step, "log_history": history}))
    return folder


HISTORY = [
    {"loss": 5.0, "step": 10, "epoch": 0.1},
    {"loss": 4.0, "step": 20, "epoch": 0.2},
    {"eval_loss": 4.5, "step": 20, "epoch": 0.2},
    {"loss": 3.0, "step": 30, "epoch": 0.3},
    {"train_loss": 4.1, "train_runtime": 2.0, "step": 30},  # the end-of-training summary entry
]


def test_trainer_state_loss_at_or_nearest_before_the_step(tmp_path):
    folder = _trainer_state(tmp_path / "checkpoint-25", HISTORY, 25)
    assert trainer_state_loss(folder, 20) == {"loss": 4.0, "source": "trainer-state", "logged_step": 20}
    # no training loss logged at 25: the one at 20, never the later one at 30
    assert trainer_state_loss(folder, 25)["loss"] == 4.0
    assert trainer_state_loss(folder, None)["logged_step"] == 20  # the state's own global_step
    assert trainer_state_loss(folder, 30)["loss"] == 3.0
    assert trainer_state_loss(folder, 25, use_eval=True) == {"loss": 4.5, "source": "trainer-state:eval", "logged_step": 20}


def test_trainer_state_loss_before_any_log_is_none_with_a_note(tmp_path):
    folder = _trainer_state(tmp_path / "checkpoint-5", HISTORY, 5)
    result = trainer_state_loss(folder, 5)
    assert result["loss"] is None and "no loss logged" in result["note"]
    assert trainer_state_loss(folder, 10, use_eval=True)["loss"] is None
    with pytest.raises(UserError, match="trainer_state.json"):
        trainer_state_loss(tmp_path / "nowhere", 5)


def test_pythia_loss_file_excerpt_and_smoothing_window():
    log = read_loss_log(PYTHIA_EXCERPT)
    assert log.column == "train/lm_loss"
    assert log.steps[:4] == (1, 2, 3, 4) and log.steps[-1] == 1001
    one = logged_loss(log, 1000)
    assert one["loss"] == 3.6366100311279297 and one["steps_averaged"] == 1
    assert one["source"] == "file:160m-seed5_excerpt.tsv"
    # mean of the losses logged at steps 996..1000 (hand-copied from the file), never step 1001
    window = [3.6218981742858887, 3.680359363555908, 3.681636095046997, 3.669753074645996, 3.6366100311279297]
    five = logged_loss(log, 1000, smoothing=5)
    assert five["loss"] == pytest.approx(sum(window) / 5, abs=1e-12) and five["steps_averaged"] == 5
    # a window reaching before the first logged step averages what there is
    assert logged_loss(log, 2, smoothing=10)["loss"] == pytest.approx((11.011716842651367 + 11.010388374328613) / 2)
    gap = logged_loss(log, 500, smoothing=100)  # the excerpt has no steps 401..500
    assert gap["loss"] is None and "401..500" in gap["note"]
    assert logged_loss(log, 0)["loss"] is None  # Pythia's step0 checkpoint: nothing logged yet


def test_csv_log_with_other_column_names(tmp_path):
    path = tmp_path / "losses.csv"
    path.write_text("global_step,lr,train_loss\n100,0.001,2.5\n50,0.001,3.5\n150,0.001,1.5\n\n")
    log = read_loss_log(path)
    assert log.steps == (50, 100, 150) and log.losses == (3.5, 2.5, 1.5) and log.column == "train_loss"
    assert logged_loss(log, 149, smoothing=100)["loss"] == pytest.approx(3.0)
    (tmp_path / "bad.csv").write_text("when,value\n1,2\n")
    with pytest.raises(UserError, match="step column"):
        read_loss_log(tmp_path / "bad.csv")
    (tmp_path / "torn.tsv").write_text("loss\tstep\n2.0\t1\nNaN-ish\t2\n")
    with pytest.raises(UserError, match="line 3"):
        read_loss_log(tmp_path / "torn.tsv")


def test_nan_in_a_log_is_kept_as_nan(tmp_path):
    path = tmp_path / "l.tsv"
    path.write_text("loss\tstep\nnan\t10\n")
    assert math.isnan(logged_loss(read_loss_log(path), 10)["loss"])


def test_loss_settings_from_options(tmp_path):
    assert loss_settings() is None
    assert loss_settings(loss_from="trainer-state:eval").kind == "trainer-state:eval"
    assert loss_settings(loss_from=str(PYTHIA_EXCERPT), smoothing=10).smoothing == 10
    corpus = tmp_path / "c.txt"
    corpus.write_text("text")
    settings = loss_settings(corpus=corpus, window=64, tokens=100)
    assert settings.kind == "corpus" and settings.needs_model and settings.window == 64
    with pytest.raises(UserError, match="either"):
        loss_settings(corpus=corpus, loss_from="trainer-state")
    with pytest.raises(UserError, match=r"\.csv/\.tsv"):
        loss_settings(loss_from="losses.json")
    with pytest.raises(UserError, match="does not exist"):
        loss_settings(loss_from=str(tmp_path / "missing.tsv"))
    with pytest.raises(UserError, match="smoothing"):
        loss_settings(loss_from="trainer-state", smoothing=0)
