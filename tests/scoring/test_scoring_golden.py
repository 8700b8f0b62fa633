"""Scorers' outputs on fixed inputs, pinned per ``SCORING_VERSION`` (tests/fixtures/scoring_golden.json).

A sweep resumes finished units by key, and ``SCORING_VERSION`` is the only part of the key that
moves when the scoring code changes.  So a change to any scorer's output must come with a bump;
this test fails when the outputs below change and the version did not.

After a deliberate change: bump ``harness.runs.units.SCORING_VERSION`` (with a comment saying why), then
``HARNESS_WRITE_SCORING_GOLDEN=1 python -m pytest tests/scoring/test_scoring_golden.py`` adds the new
version's entry.  Writing never replaces an existing version's entry: that is what a bump is for.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest

from harness.items import registry
from harness.requests import GenerationResult, Item, LoglikelihoodResult
from harness.runs.units import SCORING_VERSION
from harness.scoring import records as scoring
from harness.spec import TaskSpec

from conftest import FIXTURES

GOLDEN = FIXTURES / "scoring_golden.json"
WRITE = os.environ.get("HARNESS_WRITE_SCORING_GOLDEN") == "1"


def _ll(*logprobs: float) -> list[LoglikelihoodResult]:
    return [LoglikelihoodResult(lp, 1 + i, 4 + i, i == 0) for i, lp in enumerate(logprobs)]


def _spec(family: str) -> TaskSpec:
    return next(s for s in registry.all_specs().values() if s.family == family)


def _generation(family: str, item: Item, text: str) -> dict[str, Any]:
    """A generative record with its companions, the token edit distance over characters."""
    from harness.scoring import companions

    spec = _spec(family)
    gold = companions.gold_continuation(spec, item)
    # consistent with the continuations: a prefix (the reasoning without its final answer) scores less
    scored = tuple(LoglikelihoodResult(-0.5 * len(c), len(c), len(c.encode("utf-8")), False) for c in gold.score_requests())
    row = scoring.row_metrics(spec, [item])[0]
    return scoring.score_generation(spec, item, GenerationResult(text, scored), row, tokenize=list)


def scorer_outputs() -> dict[str, Any]:
    """Every scorer on small hand-made inputs: multiple choice (with and without choice texts), one
    continuation, each generative family, and row aggregates (mean, BLEU, perplexity, baselines)."""
    mc = Item(task="t", doc_id=0, context="Q:", choices=(" blue", " green", " red"), gold=1)
    mc_texts = Item(task="t", doc_id=1, context="Q:", choices=(" blue", " green", " red"), gold=0,
                    choice_texts=("blue", "green", "red"))
    one = Item(task="l", doc_id=0, context="The cat sat on the", choices=(" mat",))
    gsm = Item(task="gsm8k", doc_id=0, context="Q: 2 + 3?\nA:", targets=("5",), stop=("Q:",), max_new_tokens=32,
               solution="2 + 3 = <<2+3=5>>5\n#### 5")
    bigbench = Item(task="b", doc_id=0, context="1 + 1 -> ", targets=("2", "two"), stop=("\n",), max_new_tokens=8,
                    output_regex=r"[-+]?\d+", metrics=("exact_match", "numeric_match", "bleu", "rouge1", "rouge2", "rougeLsum"),
                    primary_metric="exact_match")
    # BIG-bench's default regex, and a stop_string task (kept after the cut, nothing cut at position 0)
    bigbench_default = Item(task="b", doc_id=1, context="Q: capital of France?\nA: ", targets=("Paris",), max_new_tokens=64,
                            output_regex=r"[^\.\?\!\;\n]+", metrics=("exact_match",), primary_metric="exact_match")
    bigbench_stop = Item(task="b", doc_id=2, context="IPA: kæt\nEnglish: ", targets=("cat",), max_new_tokens=64,
                         stop_string="\n", metrics=("exact_match", "bleu"), primary_metric="exact_match")
    trivia = Item(task="tq", doc_id=0, context="Q: capital of France?\nA:", targets=("Paris", "paris city"),
                  stop=("\n",), max_new_tokens=8)
    kbqa = Item(task="k", doc_id=0, context="问题：谁？答案：", targets=("李白",), stop=("\n",), max_new_tokens=8)
    records = {
        "mc": scoring.score_multiple_choice(mc, _ll(-3.0, -3.1, -5.0)),
        "mc_choice_texts": scoring.score_multiple_choice(mc_texts, _ll(-4.0, -4.9, -6.0)),
        "loglikelihood": scoring.score_loglikelihood(one, _ll(-1.25)[0]),
        "gsm8k": _generation("gsm8k", gsm, " 2 + 3 is 5. The answer is 5.\n\nQ:"),
        "gsm8k_zh": _generation("gsm8k_zh", gsm, "答案是 #### 5"),
        "bigbench": _generation("bigbench", bigbench, "2 and more\n"),
        "bigbench_leading_newline": _generation("bigbench", bigbench_default, "\nParis\nQ: capital of Spain?"),
        "bigbench_stop_string": _generation("bigbench", bigbench_stop, "cat\nIPA: dɔg"),
        "bigbench_stop_string_at_0": _generation("bigbench", bigbench_stop, "\ncat\n"),
        "triviaqa": _generation("triviaqa", trivia, " paris.\n"),
        "nlpcc_kbqa": _generation("nlpcc_kbqa", kbqa, "李白 "),
    }
    bigbench_wrong = _generation("bigbench", bigbench, "3")
    rows = {
        "mc_row": scoring.aggregate_row([mc, mc_texts], [records["mc"], records["mc_choice_texts"]],
                                        scoring.row_metrics(_spec("choice_exam"), [mc])[0]),
        "loglikelihood_row": scoring.aggregate_row([one, one], [records["loglikelihood"], records["loglikelihood"]],
                                                   ("acc", "perplexity")),
        "bigbench_row": scoring.aggregate_row([bigbench, bigbench], [records["bigbench"], bigbench_wrong],
                                              scoring.row_metrics(_spec("bigbench"), [bigbench])[0]),
    }
    return json.loads(json.dumps({"records": records, "rows": rows}, sort_keys=True, allow_nan=True))


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _leaves(value[key], f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}[{i}]").items()}
    return {path: value}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return a == b


def test_scorer_outputs_are_pinned_for_this_scoring_version():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}
    key = str(SCORING_VERSION)
    outputs = scorer_outputs()
    if WRITE and key not in golden:
        golden[key] = outputs
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    assert key in golden, (
        f"SCORING_VERSION {key} has no golden scores; run HARNESS_WRITE_SCORING_GOLDEN=1 "
        "python -m pytest tests/scoring/test_scoring_golden.py to record them"
    )
    expected, actual = _leaves(golden[key]), _leaves(outputs)
    changed = sorted(p for p in expected.keys() | actual.keys() if not _same(actual.get(p, "<absent>"), expected.get(p, "<absent>")))
    assert not changed, (
        f"scorer outputs changed under SCORING_VERSION {key} ({len(changed)} values, e.g. {changed[:3]}): bump "
        "harness.runs.units.SCORING_VERSION so finished sweeps re-score, then record the new version's golden scores"
    )


def test_golden_scores_are_real_numbers():
    # the file pins measurements, not placeholders: the chosen inputs exercise both sides of each metric
    record = scorer_outputs()["records"]
    assert record["mc"]["metrics"]["acc"] == 0.0 and record["mc_choice_texts"]["metrics"]["acc_norm"] == 0.0
    assert record["mc_choice_texts"]["metrics"]["acc"] == 1.0
    assert record["bigbench"]["metrics"]["exact_match"] == 1.0 and record["triviaqa"]["metrics"]["exact_match"] == 1.0
    assert record["bigbench_leading_newline"]["metrics"]["exact_match"] == 1.0
    # the stop string stays in the answer, so it never equals a target without it (as in BIG-bench)
    assert record["bigbench_stop_string"]["extracted"] == {"answer": "cat\n"}
    assert record["bigbench_stop_string"]["metrics"]["exact_match"] == 0.0
    assert record["bigbench_stop_string_at_0"]["metrics"]["exact_match"] == 0.0
    assert record["gsm8k"]["metrics"]["exact_match_strict"] == 1.0 and "final_answer_logprob" in record["gsm8k"]["metrics"]
