"""Pythia's zero-shot tasks against lm-evaluation-harness 0.3.0, whose task code Pythia's published
evaluations ran: every context, continuation, gold and the per-item scoring rule, as
scripts/capture_pythia_v0.py captured them from 0.3.0 itself (tests/fixtures/lm_eval_030/pythia_tasks.json).

Where 0.3.0 builds the same strings as our lm-eval 0.4.13 task of the same name, that task is
Pythia's (no variant); where it does not (sciq, wsc), ``<task>_pythia_v0`` equals the capture and
the 0.4.13 task is shown to differ exactly on the items that make the difference."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from harness.items import registry
from harness.pythia import LM_EVAL_V03_TASK_NAMES
from harness.requests import Item, LoglikelihoodResult
from harness.scoring import metrics
from harness.scoring import records as scoring
from harness.spec import BuildOptions
from harness.task_listing import describe_tasks

from conftest import FIXTURES, evaluate_tiny, hub_dataset_repo

DATA = FIXTURES / "data"
EDGE = DATA / "pythia_v0_edge"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CAPTURED = json.loads((FIXTURES / "lm_eval_030" / "pythia_tasks.json").read_text(encoding="utf-8"))
TASKS = sorted(CAPTURED["tasks"])  # lm-eval 0.3 names of Pythia's eight zero-shot tasks
IDENTICAL = ("arc_challenge", "arc_easy", "lambada_openai", "logiqa", "piqa", "winogrande")
CASES = [(name, label) for name in TASKS for label in CAPTURED["tasks"][name]["sets"]]
ARC_FILES = {
    "ARC-Easy/test-00000-of-00001.parquet": "ARC-Easy/test.jsonl",
    "ARC-Challenge/test-00000-of-00001.parquet": "ARC-Challenge/test.jsonl",
}


@pytest.fixture
def arc_hub(empty_hub):
    """The hand-written ARC rows the capture read, in an offline Hub cache."""
    rows = FIXTURES / "hub" / "allenai" / "ai2_arc"
    hub_dataset_repo(empty_hub, "allenai/ai2_arc", {
        parquet: [json.loads(line) for line in (rows / jsonl).read_text(encoding="utf-8").splitlines()]
        for parquet, jsonl in ARC_FILES.items()
    })
    return empty_hub


def pythias(name: str) -> str:
    """Our task that runs lm-eval 0.3's ``name`` as Pythia's evaluations did."""
    return LM_EVAL_V03_TASK_NAMES.get(name, name)


def build(task: str, label: str, data_dir: Path | None = None) -> list[Item]:
    opts = BuildOptions(data_dir=data_dir or {"data": DATA, "edge": EDGE, "hub": None}[label])
    (selection,) = registry.resolve(task)
    return registry.family_module(selection.spec).build_rows(selection, opts)[task]


def as_030(name: str, item: Item) -> list[list[str]]:
    """An item's (context, continuation) pairs in 0.3.0's request order: WSC asks " yes" then " no"."""
    pairs = [[context, continuation] for context, continuation in zip(item.choice_contexts, item.choices)]
    return pairs[::-1] if name == "wsc" else pairs


def captured(name: str, label: str) -> list[dict]:
    return CAPTURED["tasks"][name]["sets"][label]


# --- strings: contexts, continuations and gold ---------------------------------------------------


@pytest.mark.parametrize("name, label", CASES)
def test_pythias_task_builds_0_3_0s_requests(name, label, request):
    """Golden: the task the preset runs equals 0.3.0 string for string, gold included."""
    if label == "hub":
        request.getfixturevalue("arc_hub")
    items = build(pythias(name), label)
    theirs = captured(name, label)
    assert [item.doc_id for item in items] == [doc["doc_id"] for doc in theirs]
    for item, doc in zip(items, theirs):
        assert as_030(name, item) == doc["requests"], (name, label, item.doc_id)
        assert item.gold == doc["gold"]


@pytest.mark.parametrize("name, label", [case for case in CASES if case[0] in IDENTICAL])
def test_identical_tasks_have_no_variant(name, label, request):
    """lm-eval 0.4.13's task is 0.3.0's on these: the preset runs it by its own name."""
    if label == "hub":
        request.getfixturevalue("arc_hub")
    assert pythias(name) == name and f"{name}_pythia_v0" not in registry.all_specs()
    assert [as_030(name, item) for item in build(name, label)] == [doc["requests"] for doc in captured(name, label)]


# Which fixture items make 0.4.13 differ from 0.3.0 (set, doc_id), and how.
DIFFERENCES = {
    # the support paragraph is empty: 0.4.13's prompt starts "\n", 0.3.0 strips it away
    "sciq": {("data", 1)},
    # span1_text as released is not in the text ("The car trunk.", "The vase", "Her neighbors"):
    # 0.4.13 reads wsc.fixed, which corrects it; 0.3.0 reads super_glue's wsc as released
    "wsc": {("data", 1), ("edge", 0), ("edge", 1)},
}


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_the_0_4_13_task_differs_from_0_3_0_exactly_on_the_known_items(name):
    differing = set()
    for label in CAPTURED["tasks"][name]["sets"]:
        for item, doc in zip(build(name, label), captured(name, label)):
            if as_030(name, item) != doc["requests"]:
                differing.add((label, item.doc_id))
            assert item.gold == doc["gold"]
    assert differing == DIFFERENCES[name]


def test_golden_differences():
    (sciq_013, sciq_030) = (build("sciq", "data")[1], build("sciq_pythia_v0", "data")[1])
    assert sciq_013.context == "\nQuestion: Which organ pumps blood through the human body?\nAnswer:"
    assert sciq_030.context == "Question: Which organ pumps blood through the human body?\nAnswer:"
    assert sciq_030.choices == sciq_013.choices and sciq_030.choice_texts == sciq_013.choice_texts
    # a support with leading whitespace was already left-stripped by 0.4.13: the same prompt
    assert build("sciq_pythia_v0", "data")[2].context == build("sciq", "data")[2].context

    wsc_013, wsc_030 = build("wsc", "edge")[0], build("wsc_pythia_v0", "edge")[0]
    assert wsc_030.context == (
        "Passage: Mark put the vase on the table, but the table was too small so *it* fell off.\n"
        'Question: In the passage above, does the pronoun "*it*" refer to "*The vase*"?\nAnswer:'
    )
    assert wsc_013.context == wsc_030.context.replace("*The vase*", "*the vase*")
    assert build("wsc_pythia_v0", "data")[1].context.endswith('refer to "*The car trunk.*"?\nAnswer:')
    assert wsc_030.choices == (" no", " yes") and wsc_030.gold == 1


# --- scoring: 0.3.0's process_results on probe log-likelihoods -----------------------------------


@pytest.mark.parametrize("name, label", CASES)
def test_scores_equal_0_3_0s_process_results(name, label, request):
    """Ties (0.3.0's argmax and WSC's ll_yes > ll_no both pick the first/"no"), and log-likelihoods
    where dividing by the length with or without the leading space picks different choices."""
    if label == "hub":
        request.getfixturevalue("arc_hub")
    for item, doc in zip(build(pythias(name), label), captured(name, label)):
        for probe in doc["probes"]:
            by_request = {tuple(pair): (lp, greedy) for pair, lp, greedy in
                          zip(doc["requests"], probe["logprobs"], probe["is_greedy"])}
            results = [LoglikelihoodResult(by_request[pair][0], 1, len(pair[1].encode()), by_request[pair][1])
                       for pair in map(tuple, zip(item.choice_contexts, item.choices))]
            theirs = probe["process_results"]
            if item.is_loglikelihood:
                record = scoring.score_loglikelihood(item, results[0])
                assert record["metrics"]["acc"] == theirs["acc"]
                assert record["choice_logprobs"] == [theirs["ppl"]]  # 0.3.0's per-item "ppl" is the log-likelihood
                continue
            ours = scoring.score_multiple_choice(item, results)["metrics"]
            for metric, value in theirs.items():
                assert ours[metric] == value, (name, label, item.doc_id, metric, probe["logprobs"])


def test_aggregates_are_0_3_0s():
    rule = CAPTURED["tasks"]["lambada_openai"]["scoring"]
    assert rule["aggregation"] == {"ppl": "metrics.perplexity", "acc": "metrics.mean"}
    assert math.isclose(metrics.aggregate_perplexity(rule["ppl_of"]["lls"]).value, rule["ppl_of"]["ppl"], rel_tol=1e-12)
    for name in TASKS:
        scoring_rule = CAPTURED["tasks"][name]["scoring"]
        assert scoring_rule["version"] == 0  # the version Pythia's files record for every task
        spec = registry.all_specs()[pythias(name)]
        reported = {"ppl": "perplexity"}
        assert {reported.get(m, m) for m in scoring_rule["aggregation"]} <= set(spec.metrics)


# --- the whole upstream files, when ../shared/data is there --------------------------------------


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the upstream files)")
@pytest.mark.parametrize("name", [n for n in TASKS if "full_split" in CAPTURED["tasks"][n]])
def test_every_item_of_the_upstream_files_equals_0_3_0(name):
    """sha256 of [requests, gold] over the whole evaluation split, as the capture hashed 0.3.0's."""
    full = CAPTURED["tasks"][name]["full_split"]
    items = build(pythias(name), "data", data_dir=SHARED)
    entries = [[as_030(name, item), item.gold] for item in items]
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    assert len(items) == full["n"]
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == full["sha256"]
    # 0.3.0 tokenizes context and continuation apart, our engine (as 0.4.13) moves a context's trailing
    # whitespace onto the continuation: the same tokens as long as no context ends in whitespace
    assert full["contexts_ending_in_whitespace"] == 0


def test_the_blank_line_quirk_is_recorded_and_left_out():
    """0.3.0's WinoGrande repeats a sentence's first part when it holds a blank line; no dev sentence
    does (the full-file check above), so our winogrande renders the sentence once."""
    quirk = CAPTURED["quirks"]["winogrande_blank_line_in_sentence"]
    assert quirk["requests"][0] == ["First line.\n\nFirst line.\n\nThen Ann", " left."]


# --- where the choice shows: the preset and `harness tasks` --------------------------------------


def test_the_pythia_preset_runs_pythias_prompts():
    preset = yaml.safe_load((Path(registry.__file__).parents[1] / "interop" / "presets" / "pythia-v1.yaml").read_text(encoding="utf-8"))
    assert sorted(preset["tasks"]) == sorted([pythias(name) for name in TASKS] + ["mmlu_pythia_v0"])
    assert preset["dtype"] == "float16"


def test_harness_tasks_says_which_lm_eval_each_replicates():
    text = describe_tasks(verbose=True)
    blocks = {block.split("\n", 1)[0]: block for block in text.split("\n\n")}
    for name in TASKS:
        description = blocks[pythias(name)].splitlines()[1]
        if pythias(name) != name:
            assert "lm-eval 0.3.0" in description and "Pythia's evals" in description
            assert f"Pythia's evals ran 0.3.0's: {pythias(name)}" in blocks[name]
        else:
            assert "lm-eval 0.4.13" in description and "identical to 0.3.0's" in description
    assert "strip_context: true" in blocks["sciq_pythia_v0"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the upstream files)")
@pytest.mark.parametrize("name, differing", [("sciq", 116), ("wsc", 8)])
def test_how_many_upstream_items_the_variant_changes(name, differing):
    """sciq: the 116 test items with an empty support; wsc: the 8 validation items whose span1_text
    wsc.fixed re-cases ("The table" -> "the table").  Gold and choices never change."""
    ours, pythia = build(name, "data", data_dir=SHARED), build(pythias(name), "data", data_dir=SHARED)
    assert [(i.choices, i.gold) for i in ours] == [(i.choices, i.gold) for i in pythia]
    assert sum(a.context != b.context for a, b in zip(ours, pythia)) == differing


@pytest.mark.parametrize("name", sorted(LM_EVAL_V03_TASK_NAMES.values()))
def test_replicas_read_the_same_items_from_the_hub(name, tmp_path, monkeypatch):
    """sciq_pythia_v0 reads allenai/sciq as sciq does; wsc_pythia_v0 reads super_glue's ``wsc`` config,
    whose rows keep the spans as released (written out here by hand for the fixture file)."""
    import pandas as pd

    from harness.items import sources

    spec = registry.all_specs()[name]
    if name == "wsc_pythia_v0":
        rows = [
            {"text": "Nina lent her umbrella to Olga , because she did n't want her friend to get wet .",
             "span1_index": 0, "span2_index": 8, "span1_text": "Nina", "span2_text": "she", "idx": 0, "label": 1},
            {"text": "The suitcase would not fit in the car trunk because it was too small.",
             "span1_index": 6, "span2_index": 10, "span1_text": "The car trunk.", "span2_text": "it", "idx": 1, "label": 1},
            {"text": "The dog chased the cat up the tree , and then it barked at the squirrels .",
             "span1_index": 3, "span2_index": 11, "span1_text": "the cat", "span2_text": "it", "idx": 2, "label": 0},
            {"text": 'Tom said " I will help Sam " , but he was too busy .',
             "span1_index": 6, "span2_index": 10, "span1_text": "Sam", "span2_text": "he", "idx": 3, "label": 0},
        ]
    else:
        rows = json.loads((DATA / "sciq/SciQ dataset-2 3/test.json").read_text(encoding="utf-8"))
    folder = tmp_path / "snapshot" / (spec.hub_name or "data")
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / f"{spec.split}-00000-of-00001.parquet", index=False)
    asked = []
    monkeypatch.setattr(sources, "_hub_snapshot", lambda repo_id, *rest: asked.append(repo_id) or tmp_path / "snapshot")
    assert build(name, "hub") == build(name, "data")
    assert asked == [spec.hub_path]


def test_replicas_run_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path, one_torch_thread):
    """The items the engine scores are the replicas' (the empty-support SciQ prompt starts "Question:")."""
    results, records = evaluate_tiny(tiny_model_dir, tmp_path, ["sciq_pythia_v0", "wsc_pythia_v0"])
    for name in ("sciq_pythia_v0", "wsc_pythia_v0"):
        entry = results["tasks"][name]
        assert entry["n"] == 3 and list(entry["metrics"]) == list(registry.all_specs()[name].metrics)
        assert all(math.isfinite(value["value"]) for value in entry["metrics"].values())
    by_item = {(r["task"], r["doc_id"]): r for r in records}
    assert by_item[("sciq_pythia_v0", 1)]["prompt_sha256"] == scoring.prompt_sha256(build("sciq_pythia_v0", "data")[1].context)
