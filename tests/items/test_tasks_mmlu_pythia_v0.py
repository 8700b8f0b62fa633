"""mmlu_pythia_v0: lm-evaluation-harness 0.3.0's hendrycksTest, checked against 0.3.0's own strings
(captured by scripts/capture_mmlu_pythia_v0.py into tests/fixtures/lm_eval_030/) and end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest

from harness.errors import UserError
from harness.items import registry
from harness.requests import Item, LoglikelihoodResult
from harness.scoring import records as scoring
from harness.spec import BuildOptions

from conftest import FIXTURES, evaluate_tiny

DATA = FIXTURES / "data"
CAPTURED = json.loads((FIXTURES / "lm_eval_030" / "hendrycks_test.json").read_text(encoding="utf-8"))


def build(name: str, opts: BuildOptions) -> dict[str, list[Item]]:
    selection = registry.resolve(name)[0]
    return registry.family_module(selection.spec).build_rows(selection, opts)


# Written out by hand from tests/fixtures/data/mmlu/test/anatomy_test.csv row 0 and 0.3.0's format_example.
ANATOMY_0 = (
    "Question: A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral\n"
    "Choices:\n"
    "A. paralysis of the facial muscles.\n"
    "B. paralysis of the facial muscles and loss of taste.\n"
    "C. paralysis of the facial muscles, loss of taste and lacrimation.\n"
    "D. paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.\n"
    "Answer:"
)


def test_golden_prompt_scores_the_answer_texts():
    (item, *_) = build("mmlu_pythia_v0:anatomy", BuildOptions(data_dir=DATA, limit=1))["mmlu_pythia_v0:anatomy"]
    assert item.context == ANATOMY_0
    assert item.choices == (
        " paralysis of the facial muscles.",
        " paralysis of the facial muscles and loss of taste.",
        " paralysis of the facial muscles, loss of taste and lacrimation.",
        " paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.",
    )
    assert item.gold == 0 and item.doc_id == 0
    assert item.choice_texts == tuple(choice[1:] for choice in item.choices)


@pytest.mark.parametrize("captured_task", sorted(CAPTURED["tasks"]))
def test_items_equal_lm_eval_030(captured_task):
    """Context, each continuation and gold of the first three test rows, zero-shot and 2-shot."""
    subject = captured_task.split("/")[0].removeprefix("hendrycksTest-")
    shots = int(captured_task.split("/")[1].removesuffix("-shot"))
    rows = build(f"mmlu_pythia_v0:{subject}", BuildOptions(data_dir=DATA, num_fewshot=shots))
    items = {item.doc_id: item for item in rows[f"mmlu_pythia_v0:{subject}"]}
    for expected in CAPTURED["tasks"][captured_task]:
        item = items[expected["doc_id"]]
        assert [[item.context, choice] for choice in item.choices] == expected["requests"]
        assert item.gold == expected["gold"]
        assert list(item.choice_texts) == expected["choices"]
    if shots:
        # the exemplars were really drawn (0.3.0 samples validation docs, not dev)
        assert all(items[e["doc_id"]].context.count("\nAnswer: ") == shots for e in CAPTURED["tasks"][captured_task])


def test_limit_keeps_each_items_fewshot_prompt():
    full = build("mmlu_pythia_v0:abstract_algebra", BuildOptions(data_dir=DATA, num_fewshot=2))["mmlu_pythia_v0:abstract_algebra"]
    limited = build("mmlu_pythia_v0:abstract_algebra", BuildOptions(data_dir=DATA, num_fewshot=2, limit=2))["mmlu_pythia_v0:abstract_algebra"]
    assert [i.context for i in limited] == [i.context for i in full[:2]]


def test_acc_norm_divides_by_the_answer_text_as_030_does():
    probe = CAPTURED["acc_norm_probe"]
    item = Item(
        task="t", doc_id=0, context="Answer:", choices=tuple(" " + c for c in probe["choices"]), gold=probe["gold"],
        choice_texts=tuple(probe["choices"]),
    )
    results = [LoglikelihoodResult(lp, 1, 1, False) for lp in probe["logprobs"]]
    scores = scoring.score_multiple_choice(item, results)["metrics"]
    assert {k: scores[k] for k in ("acc", "acc_norm")} == probe["process_results"]
    # dividing by the scored string (" " + text) would have picked the other choice
    plain = dataclasses.replace(item, choice_texts=())
    assert scoring.score_multiple_choice(plain, results)["metrics"]["acc_norm"] == 0.0


def test_spec_subjects_and_errors(tmp_path):
    spec = registry.all_specs()["mmlu_pythia_v0"]
    assert (spec.prompt_type, spec.num_fewshot, spec.split, spec.hub_path) == ("zeroshot", 0, "test", "cais/mmlu")
    # 0.3.0's SUBJECTS list is the 57 subjects of today's mmlu
    assert spec.options["subjects"] == registry.all_specs()["mmlu"].options["subjects"]
    with pytest.raises(UserError, match="unknown mmlu_pythia_v0 subject 'anatomyy'"):
        build("mmlu_pythia_v0:anatomyy", BuildOptions(data_dir=DATA))
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "val").mkdir()
    shutil.copy(DATA / "mmlu" / "test" / "anatomy_test.csv", tmp_path / "mmlu" / "test")
    (tmp_path / "mmlu" / "val" / "anatomy_val.csv").write_text("q,a,b,c,d,A\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mmlu_pythia_v0:anatomy: 2 shots need 3 val items but it has 1; pass --num-fewshot 0"):
        build("mmlu_pythia_v0:anatomy", BuildOptions(data_dir=tmp_path, num_fewshot=2))
    assert len(build("mmlu_pythia_v0:anatomy", BuildOptions(data_dir=tmp_path))["mmlu_pythia_v0:anatomy"]) == 6


# --- end to end on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory, one_torch_thread):
    """The parent task over the two subjects the excerpts hold (the spec otherwise lists all 57)."""
    specs = registry.all_specs()
    original = specs["mmlu_pythia_v0"]
    two = dataclasses.replace(original, options={**original.options, "subjects": ["abstract_algebra", "anatomy"]})
    specs["mmlu_pythia_v0"] = two
    try:
        return evaluate_tiny(tiny_model_dir, tmp_path_factory.mktemp("mmlu_v0_run"), ["mmlu_pythia_v0"])
    finally:
        specs["mmlu_pythia_v0"] = original


def test_results_have_rows_and_parent(tiny_run):
    results, records = tiny_run
    tasks = results["tasks"]
    metrics = ["acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"]
    for row in ("mmlu_pythia_v0:abstract_algebra", "mmlu_pythia_v0:anatomy"):
        assert tasks[row]["n"] == 3 and tasks[row]["parent"] == "mmlu_pythia_v0"
        assert list(tasks[row]["metrics"]) == metrics
        assert tasks[row]["metrics"]["acc"]["random_baseline"] == pytest.approx(0.25)
    parent = tasks["mmlu_pythia_v0"]
    assert parent["n"] == 6 and parent["subtasks"] == ["mmlu_pythia_v0:abstract_algebra", "mmlu_pythia_v0:anatomy"]
    assert parent["metrics"]["acc"]["value"] == pytest.approx(sum(r["metrics"]["acc"] for r in records) / 6)
    # acc_norm recomputed from the stored log-likelihoods, dividing by the answer text's length
    for record in records:
        lengths = [len(choice) - 1 for choice in record["choices"]]
        normed = [lp / n for lp, n in zip(record["choice_logprobs"], lengths)]
        assert record["metrics"]["acc_norm"] == float(normed.index(max(normed)) == record["gold"])
        assert all(math.isfinite(lp) for lp in record["choice_logprobs"])
