"""The sweep's progress line (``harness.runs.progress``): the pure formatter, the counters kept off
a terminal and on one, and the line a real tiny sweep writes to stderr."""

from __future__ import annotations

import io
import re
import shutil

import pytest

from harness import cli
from harness.runs.progress import SweepCounts, SweepProgress, clock, eta_seconds, progress_line

from conftest import FIXTURES

RATE = re.compile(r"\d[\d,.]* (items|tok)/s")


# ---------------------------------------------------------------------- the pure formatter


def test_line_of_a_unit_running():
    counts = SweepCounts(
        checkpoints=3, checkpoint=2, name="pythia-160m/step3000", units_total=8, units_done=5, doing="mmlu:anatomy",
        unit_items=96, unit_items_total=135, items=71, tokens=284, seconds=5.0, elapsed=185.0, work_done=5.0,
        work_total=8.0,
    )
    assert progress_line(counts) == (
        "checkpoint 2/3 (pythia-160m/step3000) | units 5/8 | mmlu:anatomy 96/135 items | 14.2 items/s, 56.8 tok/s"
        " | elapsed 3:05 | ETA 1:51"
    )


def test_eta_is_the_elapsed_time_scaled_by_the_work_left():
    assert eta_seconds(60.0, 2.0, 6.0) == 120.0  # a third done in a minute: two more minutes
    assert eta_seconds(60.0, 1.5, 6.0) == 180.0  # a unit half done counts by its half
    assert eta_seconds(60.0, 6.0, 6.0) == 0.0 and eta_seconds(0.0, 4.0, 4.0) == 0.0  # nothing left
    assert eta_seconds(60.0, 0.0, 6.0) is None  # nothing done yet: no pace to go by
    assert eta_seconds(0.0, 1.0, 6.0) is None
    assert eta_seconds(60.0, 2.0, None) is None  # the total is not known
    line = progress_line(SweepCounts(2, 1, units_total=4, units_done=2, elapsed=30.0, work_done=2.0, work_total=4.0))
    assert line.endswith("elapsed 0:30 | ETA 0:30")


def test_zero_elapsed_shows_no_rate_and_no_eta():
    line = progress_line(SweepCounts(2, 1, units_total=4, doing="loss", tokens=500, seconds=0.0, work_total=4.0))
    assert line == "checkpoint 1/2 | units 0/4 | loss | elapsed 0:00 | ETA ?"
    assert not RATE.search(line)


def test_unknown_totals_are_left_out():
    line = progress_line(SweepCounts(None, 3, units_done=7, doing="gsm8k", unit_items=2, tokens=120, seconds=4.0,
                                     elapsed=90.0, work_done=7.5))
    assert line == "checkpoint 3 | units 7 | gsm8k 2 items | 30.0 tok/s | elapsed 1:30 | ETA ?"


def test_failed_units_and_long_clocks():
    line = progress_line(SweepCounts(4, 4, units_total=8, units_done=8, units_failed=2, doing="done", items=1234,
                                     seconds=2.0, elapsed=3725.0, work_done=6.0, work_total=6.0))
    assert line == "checkpoint 4/4 | units 8/8 (2 failed) | done | 617 items/s | elapsed 1:02:05 | ETA 0:00"
    assert clock(59.9) == "0:59" and clock(-1.0) == "0:00"


# ---------------------------------------------------------------------- the counters, on and off a terminal


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _two_units(progress: SweepProgress, ticks: FakeClock) -> None:
    """One checkpoint: a task unit of 4 items in 2 chunks, then a loss unit of 3 windows."""
    with progress:
        progress.checkpoint(1, "tiny/checkpoint-1")
        ticks.now = 1.0
        progress.unit_started("mmlu:x")
        progress.unit_items(0, 4)
        for _ in range(2):
            progress.chunk_started(2)
            progress.start(8)  # 4 choices per item
            ticks.now += 1.0
            progress.advance(8, 8)
            progress.chunk_finished(2)
        progress.unit_finished()
        progress.unit_started("loss")
        progress.start(3)
        ticks.now += 61.0  # a minute in one batch: off a terminal, one line while it runs
        progress.advance(1, 100)
        ticks.now += 1.0
        progress.advance(2, 200)
        progress.unit_finished()


def test_off_a_terminal_a_plain_line_per_unit_and_one_a_minute_while_one_runs():
    stream, ticks = io.StringIO(), FakeClock()
    _two_units(SweepProgress(1, 2, stream=stream, terminal=False, clock=ticks), ticks)
    assert stream.getvalue().splitlines() == [
        "checkpoint 1/1 (tiny/checkpoint-1) | units 1/2 | mmlu:x 4/4 items | 2.00 items/s, 8.00 tok/s | elapsed 0:03 | ETA 0:03",
        "checkpoint 1/1 (tiny/checkpoint-1) | units 1/2 | loss | 1.64 tok/s | elapsed 1:04 | ETA 0:32",
        "checkpoint 1/1 (tiny/checkpoint-1) | units 2/2 | loss | 4.84 tok/s | elapsed 1:05 | ETA 0:00",
    ]


def test_on_a_terminal_one_line_redrawn_with_the_run_rates_at_the_end():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream, ticks = Terminal(), FakeClock()
    _two_units(SweepProgress(1, 2, stream=stream, clock=ticks), ticks)
    text = stream.getvalue()
    assert "\n" not in text.rstrip("\n") and "\x1b[A" not in text  # redrawn in place, never a line up
    assert text.rstrip().split("\r")[-1] == (
        "checkpoint 1/1 (tiny/checkpoint-1) | units 2/2 | done | 2.00 items/s, 4.94 tok/s | elapsed 1:05 | ETA 0:00"
    )


def test_disabled_shows_nothing():
    stream, ticks = io.StringIO(), FakeClock()
    _two_units(SweepProgress(1, 2, enabled=False, stream=stream, terminal=False, clock=ticks), ticks)
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------- a real tiny sweep


@pytest.fixture
def two_checkpoints(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    for step in (1, 2):
        shutil.copytree(tiny_model_dir, run / f"checkpoint-{step}")
    return run


def _sweep(run, out, *extra: str) -> int:
    return cli.main([
        "sweep", "--checkpoints", str(run), "--tasks", "mmlu:abstract_algebra", "--data-dir", str(FIXTURES / "data"),
        "--limit", "4", "--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-window", "32",
        "--loss-tokens", "512", "--batch-size", "4", "--save-every", "2", "--device", "cpu", "--dtype", "float32",
        "--out", str(out), *extra,
    ])


@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_sweep_writes_the_progress_line_and_no_nested_bar(two_checkpoints, tmp_path, capsys):
    assert _sweep(two_checkpoints, tmp_path / "out") == 0
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("checkpoint ")]
    # off a terminal (as here): one plain line per unit, 2 checkpoints x (task + loss)
    assert len(lines) == 4, stderr
    assert lines[0].startswith("checkpoint 1/2 (run/checkpoint-1) | units 1/4 | ")
    assert lines[-1].startswith("checkpoint 2/2 (run/checkpoint-2) | units 4/4 | ")
    assert any("mmlu:abstract_algebra 4/4 items" in line and "items/s" in line for line in lines)
    assert any(line.split(" | ")[2] == "loss" and "tok/s" in line for line in lines)
    assert all(RATE.search(line) and "elapsed " in line and "ETA " in line for line in lines)
    # no nested bar: neither the engine's per-unit bars nor transformers' "Loading weights", no cursor-up
    assert "\x1b[A" not in stderr and "[A" not in stderr and "\r" not in stderr
    assert "Loading weights" not in stderr and "loglikelihood" not in stderr and "it/s" not in stderr


@pytest.mark.usefixtures("one_torch_thread")
def test_rerun_counts_units_found_done_and_no_progress_is_silent(two_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sweep(two_checkpoints, out, "--no-progress") == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("checkpoint ")]
    progress = []
    original = SweepProgress.__exit__

    def keep(self, *exc):
        original(self, *exc)
        progress.append(self.line())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SweepProgress, "__exit__", keep)
        assert _sweep(two_checkpoints, out) == 0
    # every unit found done: nothing ran, so no rate, and nothing is left
    assert len(progress) == 1 and re.fullmatch(
        r"checkpoint 2/2 \(run/checkpoint-2\) \| units 4/4 \| done \| elapsed 0:\d\d \| ETA 0:00", progress[0]
    ), progress


def test_library_bars_are_off_in_the_body_and_as_they_were_after():
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    from harness.runs.progress import library_bars_off

    before = (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled())
    with library_bars_off():
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    assert (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()) == before
