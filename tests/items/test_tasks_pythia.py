"""Pythia's zero-shot tasks (lambada_openai, piqa, sciq, winogrande, wsc, logiqa): golden prompts,
the local readers against the Hub's columns, a cross-check of every context, continuation and gold
against lm-evaluation-harness 0.4.13 building its own task of the same name from the same documents,
the single-continuation and per-choice-context scoring, and an end-to-end run on the tiny model."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.items import registry, sources
from harness.items.families import zeroshot
from harness.requests import Item, LoglikelihoodResult
from harness.scoring import metrics
from harness.scoring import records as scoring
from harness.spec import BuildOptions

from conftest import FIXTURES, assert_scores_equal_lm_eval, evaluate_tiny

DATA = FIXTURES / "data"
LOCAL = BuildOptions(data_dir=DATA)
TASKS = ("lambada_openai", "piqa", "sciq", "winogrande", "wsc", "logiqa")


def build(name: str, opts: BuildOptions = LOCAL) -> list[Item]:
    selection = registry.resolve(name)[0]
    return registry.family_module(selection.spec).build_rows(selection, opts)[name]


def jsonl(relative: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / relative).read_text(encoding="utf-8").splitlines()]


# --- the Hub's rows for the fixture documents, written out by hand (wsc.fixed spans fixed, LogiQA
# --- normalised by EleutherAI/logiqa's loader) or converted here independently of the readers ---

WSC_HUB_ROWS = [
    {"text": "Nina lent her umbrella to Olga , because she did n't want her friend to get wet .",
     "span1_index": 0, "span2_index": 8, "span1_text": "Nina", "span2_text": "she", "idx": 0, "label": 1},
    # span1_text "The car trunk." is not in the text: wsc.fixed lowercases it and drops the "."
    {"text": "The suitcase would not fit in the car trunk because it was too small.",
     "span1_index": 6, "span2_index": 10, "span1_text": "the car trunk", "span2_text": "it", "idx": 1, "label": 1},
    {"text": "The dog chased the cat up the tree , and then it barked at the squirrels .",
     "span1_index": 3, "span2_index": 11, "span1_text": "the cat", "span2_text": "it", "idx": 2, "label": 0},
    {"text": 'Tom said " I will help Sam " , but he was too busy .',
     "span1_index": 6, "span2_index": 10, "span1_text": "Sam", "span2_text": "he", "idx": 3, "label": 0},
]

LOGIQA_HUB_ROWS = [
    {"label": "c",
     "context": "Every member of the chess club also plays in the school orchestra. Some members of the orchestra play"
                " the violin. Nobody who plays the violin plays the drums.",
     "question": "Which of the following must be true?",
     "options": ["Every member of the orchestra is in the chess club", "Some members of the chess club play the drums",
                 "If a member of the chess club plays the violin, that member does not play the drums",
                 "No member of the chess club plays the violin"]},
    {"label": "a",
     # the loader puts a space after every ".", decimals included
     "context": "A bakery sells bread at 2. 5 dollars a loaf. On Mondays every loaf costs 0. 5 dollars less, and no"
                " other discount is ever given.",
     "question": "If Li paid 6 dollars for three loaves on one day, which of the following can be inferred?",
     "options": ["Li bought the loaves on a Monday", "Li bought the loaves on a Tuesday", "Li received two discounts",
                 "The bakery raised its prices"]},
    {"label": "d",
     "context": "Researchers found that cities with more bicycle lanes have fewer traffic accidents per person. They"
                " concluded that building bicycle lanes reduces accidents.",
     "question": "Which of the following, if true, most weakens the researchers' conclusion?",
     "options": ["Bicycle lanes are cheap to build", "Some cities with bicycle lanes still have many accidents",
                 "Cyclists prefer quiet streets",
                 "Cities with more bicycle lanes also have lower speed limits, which were introduced earlier"]},
    {"label": "b", "context": "Anna is taller than Ben. Ben is taller than Carl. Dora is shorter than Carl.",
     "question": "Who is the second shortest of the four?", "options": ["Anna", "Carl", "Ben", "Dora"]},
]


def hub_rows(name: str) -> list[dict]:
    """The fixture documents as the Hub dataset lm-eval reads holds them."""
    if name == "lambada_openai":
        return jsonl("lambada_openai/lambada_test.jsonl")
    if name == "piqa":
        labels = (DATA / "piqa/valid-labels.lst").read_text(encoding="utf-8").split()
        return [{**doc, "label": int(label)} for doc, label in zip(jsonl("piqa/valid.jsonl"), labels)]
    if name == "sciq":
        return json.loads((DATA / "sciq/SciQ dataset-2 3/test.json").read_text(encoding="utf-8"))
    if name == "winogrande":
        return [{k: doc[k] for k in ("sentence", "option1", "option2", "answer")} for doc in jsonl("winogrande/dev.jsonl")]
    return {"wsc": WSC_HUB_ROWS, "logiqa": LOGIQA_HUB_ROWS}[name]


# --- golden prompts -----------------------------------------------------------------------------


def test_golden_piqa():
    item = build("piqa")[1]
    assert item.context == "Question: dresser\nAnswer:"
    # the solutions verbatim: a trailing space and a double space stay
    assert item.choices == (" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin ")
    assert item.gold == 1 and item.output_type == "multiple_choice"


def test_golden_sciq():
    item = build("sciq")[2]  # support starting "\n  ": left-stripped
    assert item.context == (
        "Electric current is the rate at which charge flows past a point in a circuit. It is measured in amperes (A),"
        " named after Andre-Marie Ampere.\nQuestion: What is the SI unit of electric current?\nAnswer:"
    )
    assert item.choices == (" ohm", " watt", " volt", " ampere") and item.gold == 3
    assert build("sciq")[1].context == "\nQuestion: Which organ pumps blood through the human body?\nAnswer:"


def test_golden_logiqa():
    item = build("logiqa")[1]
    assert item.context == (
        "Passage: A bakery sells bread at 2. 5 dollars a loaf. On Mondays every loaf costs 0. 5 dollars less, and no other"
        " discount is ever given.\n"
        "Question: If Li paid 6 dollars for three loaves on one day, which of the following can be inferred?\n"
        "Choices:\nA. Li bought the loaves on a Monday\nB. Li bought the loaves on a Tuesday\nC. Li received two discounts\n"
        "D. The bakery raised its prices\nAnswer:"
    )
    assert item.choices[0] == " Li bought the loaves on a Monday" and item.gold == 0


def test_golden_wsc():
    items = build("wsc")
    assert items[0].context == (
        "Passage: Nina lent her umbrella to Olga, because *she* didn't want her friend to get wet.\n"
        'Question: In the passage above, does the pronoun "*she*" refer to "*Nina*"?\nAnswer:'
    )
    assert items[1].context.endswith('does the pronoun "*it*" refer to "*the car trunk*"?\nAnswer:')
    assert items[3].context.startswith('Passage: Tom said"I will help Sam", but *he* was too busy.\n')
    assert items[0].choices == (" no", " yes")
    assert [item.gold for item in items] == [1, 1, 0, 0]


def test_golden_winogrande():
    item = build("winogrande")[2]
    assert item.contexts == (
        "They were worried the wine would ruin the bed and the blanket, but the blanket",
        "They were worried the wine would ruin the bed and the blanket, but the bed",
    )
    assert item.choices == (" was't ruined.", " was't ruined.")
    assert item.gold == 1 and item.output_type == "multiple_choice"
    assert item.choice_contexts == item.contexts
    # the display form is what `harness prompt` prints and prompt_sha256 pins
    assert item.context == item.contexts[0] + "\n\n" + item.contexts[1]


def test_golden_lambada():
    item = build("lambada_openai")[0]
    assert item.context.startswith("In my palm is a clear stone, and inside it is a small ivory statuette.")
    assert item.context.endswith("his mouth curved in a confident grin, I don't care about")
    assert item.choices == (" signs",) and item.gold is None
    assert item.output_type == "loglikelihood" and item.is_loglikelihood and not item.is_multiple_choice
    assert item.context + " signs" == jsonl("lambada_openai/lambada_test.jsonl")[0]["text"]


# --- readers, positions, errors ------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_doc_id_is_the_position_in_the_file_and_limit_keeps_the_first(name):
    items = build(name)
    assert [item.doc_id for item in items] == list(range(4))
    assert {item.task for item in items} == {name}
    assert build(name, BuildOptions(data_dir=DATA, limit=2)) == items[:2]


@pytest.mark.parametrize("name", TASKS)
def test_hub_rows_give_the_same_items_as_the_local_files(name, tmp_path, monkeypatch):
    spec = registry.all_specs()[name]
    folder = tmp_path / "snapshot" / (spec.hub_name or "data")
    folder.mkdir(parents=True)
    pd.DataFrame(hub_rows(name)).to_parquet(folder / f"{spec.split}-00000-of-00001.parquet", index=False)
    asked = []

    def snapshot(repo_id, patterns, revision, *rest):
        asked.append((repo_id, revision))
        return tmp_path / "snapshot"

    monkeypatch.setattr(sources, "_hub_snapshot", snapshot)
    assert build(name, BuildOptions(hub_revision="abc")) == build(name)
    assert asked == [(spec.hub_path, "abc")]


def test_local_readers_convert_to_the_hub_columns():
    assert zeroshot.read_wsc(DATA / "wsc/val.jsonl") == WSC_HUB_ROWS
    assert zeroshot.read_logiqa(DATA / "logiqa/Test.txt") == LOGIQA_HUB_ROWS
    assert [d["label"] for d in zeroshot.read_piqa(DATA / "piqa/valid.jsonl", DATA / "piqa/valid-labels.lst")] == [0, 1, 1, 1]


def test_wsc_span_fix_keeps_the_loaders_quirks():
    base = {"text": "The parents theyscold the kids , they cry .", "span1_index": 3, "span2_index": 6}
    # a span text that is in the text is left alone, and so are the two unfixable Kamenev spans
    assert zeroshot.fix_wsc_spans({**base, "span1_text": "the kids", "span2_text": "they"}) == {
        **base, "span1_text": "the kids", "span2_text": "they"}
    kamenev = {**base, "span1_text": "Kamenev and Zinoviev", "span2_text": "they"}
    assert zeroshot.fix_wsc_spans(kamenev) == kamenev
    # "theyscold": span2_index becomes 10 (the loader's text.replace result is discarded) and the
    # span takes the case of the word at its old index, without its "." and newlines
    fixed = zeroshot.fix_wsc_spans({**base, "span1_text": "The\nkids.", "span2_text": "theyscold."})
    assert fixed == {**base, "span1_text": "the kids", "span2_text": "theyscold", "span2_index": 10}
    with pytest.raises(UserError, match=r"span1_text 'the children' is not in its text"):
        zeroshot.fix_wsc_spans({**base, "span1_text": "The children", "span2_text": "they"})


def test_missing_files_name_the_layout(tmp_path):
    with pytest.raises(UserError, match=r"missing 2 of 2 data files: .*piqa/valid.jsonl, .*piqa/valid-labels.lst;"
                                        r" --data-dir DIR expects piqa/valid.jsonl and piqa/valid-labels.lst"):
        build("piqa", BuildOptions(data_dir=tmp_path))
    with pytest.raises(UserError, match=r"missing 1 of 1 data files: .*sciq/SciQ dataset-2 3/test.json"):
        build("sciq", BuildOptions(data_dir=tmp_path))


def test_bad_input_is_a_one_line_user_error(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa/valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n', encoding="utf-8")
    (tmp_path / "piqa/valid-labels.lst").write_text("0\n1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"has 2 labels for the 1 questions"):
        build("piqa", BuildOptions(data_dir=tmp_path))
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande/dev.jsonl").write_text(
        '{"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"WinoGrande sentence has no blank"):
        build("winogrande", BuildOptions(data_dir=tmp_path))
    with pytest.raises(UserError, match=r"piqa is zero-shot only .*; pass --num-fewshot 0"):
        build("piqa", BuildOptions(data_dir=DATA, num_fewshot=5))
    with pytest.raises(UserError, match=r"sciq is zero-shot only"):
        build("sciq", BuildOptions(data_dir=DATA, prompt_type="cot"))
    assert build("sciq", BuildOptions(data_dir=DATA, num_fewshot=0, prompt_type="zeroshot")) == build("sciq")
    with pytest.raises(UserError, match=r"unknown task 'wsc:foo'"):  # one row, no subtasks
        build("wsc:foo")


def test_specs_report_lm_evals_metrics_plus_the_continuous_ones():
    specs = registry.all_specs()
    for name in ("piqa", "sciq", "logiqa"):  # lm-eval reports acc and acc_norm
        assert specs[name].metrics == ("acc", "acc_norm", "correct_choice_prob", "brier_score")
    for name in ("winogrande", "wsc"):  # acc only in lm-eval
        assert specs[name].metrics == ("acc", "correct_choice_prob", "brier_score")
    assert specs["lambada_openai"].metrics == ("acc", "perplexity")
    assert {specs[n].num_fewshot for n in TASKS} == {0}


# --- cross-check with lm-evaluation-harness 0.4.13 -----------------------------------------------

LM_EVAL_YAML = {
    "lambada_openai": "lambada/lambada_openai.yaml",
    "piqa": "piqa/piqa.yaml",
    "sciq": "sciq/sciq.yaml",
    "winogrande": "winogrande/default.yaml",
    "wsc": "super_glue/wsc/default.yaml",
    "logiqa": "logiqa/logiqa.yaml",
}


def lm_eval_task(name: str, tmp_path: Path):
    """lm-eval's own task of that name, its dataset swapped for the fixture documents in the Hub's columns."""
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    split = registry.all_specs()[name].split
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in hub_rows(name)), encoding="utf-8")
    cfg = load_yaml(Path(lm_eval.__file__).parent / "tasks" / LM_EVAL_YAML[name])
    cfg.pop("tag", None)
    # zero-shot: no train split is read (the few-shot source has no local copy)
    cfg.update(dataset_path="json", dataset_name=None, training_split=None)
    if split == "test":
        cfg["validation_split"] = None
    cfg["dataset_kwargs"] = {"data_files": {split: str(path)}, "cache_dir": str(tmp_path / "datasets_cache")}
    task = ConfigurableTask(config=cfg)
    task.build_all_requests(limit=None, rank=0, world_size=1)
    return task


@pytest.mark.parametrize("name", TASKS)
def test_prompts_choices_and_gold_equal_lm_eval(name, tmp_path):
    task = lm_eval_task(name, tmp_path)
    instances: dict[int, list] = {}
    for inst in task.instances:
        instances.setdefault(inst.doc_id, []).append(inst)
    items = build(name)
    assert sorted(instances) == [item.doc_id for item in items] == [0, 1, 2, 3]
    for item in items:
        theirs = sorted(instances[item.doc_id], key=lambda inst: inst.idx)
        # every (context, continuation) lm-eval would score, in choice order
        assert [inst.arguments for inst in theirs] == list(zip(item.choice_contexts, item.choices))
        doc = theirs[0].doc
        if name == "lambada_openai":
            assert item.gold is None
        elif name == "winogrande":  # lm-eval's multiple-input tasks keep the gold in doc_to_text
            assert task.doc_to_text(doc) == item.gold
        else:
            assert task.doc_to_target(doc) == item.gold


@pytest.mark.parametrize("name, metrics", [("piqa", ("acc", "acc_norm")), ("sciq", ("acc", "acc_norm")),
                                           ("logiqa", ("acc", "acc_norm")), ("wsc", ("acc",))])
def test_acc_and_acc_norm_equal_lm_evals_process_results(name, metrics, tmp_path):
    """On log-likelihoods where dividing by the length with or without the leading space disagree."""
    task = lm_eval_task(name, tmp_path)
    docs = {inst.doc_id: inst.doc for inst in task.instances}
    for item in build(name):
        assert_scores_equal_lm_eval(task, docs[item.doc_id], item, metrics)


# --- scoring --------------------------------------------------------------------------------------


def test_single_continuation_record_and_perplexity_by_hand():
    items = [Item(task="lambada_openai", doc_id=i, context=f"c{i}", choices=(" w",)) for i in range(3)]
    results = [LoglikelihoodResult(-1.0, 1, 2, True), LoglikelihoodResult(-2.0, 2, 2, False), LoglikelihoodResult(-3.0, 1, 2, True)]
    records = [scoring.score_loglikelihood(item, result) for item, result in zip(items, results)]
    assert records[1]["choice_logprobs"] == [-2.0] and records[1]["choice_is_greedy"] == [False]
    assert records[1]["prompt_sha256"] == hashlib.sha256(b"c1").hexdigest()
    assert [r["metrics"] for r in records] == [{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}]
    row = scoring.aggregate_row(items, records, ("acc", "perplexity"))
    # mean log-likelihood -2 -> perplexity e^2; se of the mean is 1/sqrt(3), times e^2 (delta method)
    assert row["perplexity"]["value"] == pytest.approx(math.e**2)
    assert row["perplexity"]["stderr"] == pytest.approx(math.e**2 / math.sqrt(3))
    assert row["perplexity"]["random_baseline"] is None and row["perplexity"]["higher_is_better"] is False
    assert row["acc"]["value"] == pytest.approx(2 / 3)
    assert row["acc"]["random_baseline"] == 0.0 and row["acc"]["higher_is_better"] is True


def test_perplexity_edge_cases():
    assert metrics.aggregate_perplexity([-0.5]) == metrics.Aggregate(math.exp(0.5), None, 1)
    assert metrics.aggregate_perplexity([-800.0, -900.0]).value == math.inf
    with pytest.raises(ValueError, match="not a single-continuation metric"):
        metrics.loglikelihood_random_baseline("brier_score")


def test_item_checks_its_per_choice_contexts():
    with pytest.raises(ValueError, match="2 contexts for 1 choices"):
        Item(task="t", doc_id=0, context="a\n\nb", contexts=("a", "b"), choices=(" x",), gold=0)
    with pytest.raises(ValueError, match="display form"):
        Item(task="t", doc_id=0, context="a", contexts=("a", "b"), choices=(" x", " x"), gold=0)


# --- end to end on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory, one_torch_thread):
    return evaluate_tiny(tiny_model_dir, tmp_path_factory.mktemp("pythia_run"), TASKS)


def test_results_have_every_tasks_metrics(tiny_run):
    results, records = tiny_run
    specs = registry.all_specs()
    for name in TASKS:
        entry = results["tasks"][name]
        assert entry["n"] == 3 and entry["prompt_type"] == "zeroshot" and entry["num_fewshot"] == 0
        assert list(entry["metrics"]) == list(specs[name].metrics)
        assert entry["output_type"] == ("loglikelihood" if name == "lambada_openai" else "multiple_choice")
        for metric, value in entry["metrics"].items():
            assert value["n"] == 3 and math.isfinite(value["value"]), (name, metric)
    assert results["tasks"]["sciq"]["metrics"]["acc"]["random_baseline"] == pytest.approx(0.25)
    assert results["tasks"]["winogrande"]["metrics"]["brier_score"]["random_baseline"] == pytest.approx(0.5)
    lambada = [r for r in records if r["task"] == "lambada_openai"]
    ppl = results["tasks"]["lambada_openai"]["metrics"]["perplexity"]
    assert ppl["value"] == pytest.approx(math.exp(-sum(r["choice_logprobs"][0] for r in lambada) / 3), rel=1e-12)
    assert ppl["value"] > 1 and ppl["random_baseline"] is None and ppl["higher_is_better"] is False
    acc = results["tasks"]["lambada_openai"]["metrics"]["acc"]
    assert acc["value"] == pytest.approx(sum(r["choice_is_greedy"][0] for r in lambada) / 3)


def test_per_choice_contexts_score_like_a_plain_forward(tiny_run, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, records = tiny_run
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = build("winogrande", BuildOptions(data_dir=DATA, limit=3))
    by_doc = {r["doc_id"]: r for r in records if r["task"] == "winogrande"}
    for item in items:
        record = by_doc[item.doc_id]
        assert record["prompt_sha256"] == hashlib.sha256(item.context.encode("utf-8")).hexdigest()
        for j, (context, continuation) in enumerate(zip(item.contexts, item.choices)):
            # lm-eval's split: the context's tokens, then the rest of the whole string's tokens
            context_ids = tokenizer.encode(context)
            continuation_ids = tokenizer.encode(context + continuation)[len(context_ids):]
            ids = torch.tensor([context_ids + continuation_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            picked = logprobs[len(context_ids) - 1 :].gather(1, torch.tensor(continuation_ids)[:, None])
            assert record["choice_logprobs"][j] == pytest.approx(picked.sum().item(), abs=1e-4)
        # the two choices differ only in their contexts, so a shared-context bug would tie them
        assert record["choice_logprobs"][0] != record["choice_logprobs"][1]


def test_harness_prompt_prints_every_per_choice_context(capsys):
    from harness import cli

    assert cli.main(["prompt", "--task", "winogrande", "--index", "2", "--data-dir", str(DATA)]) == 0
    out, err = capsys.readouterr()
    item = build("winogrande")[2]
    assert out == item.context + "\n"
    info = json.loads(err.strip().splitlines()[-1])
    assert info["contexts"] == list(item.contexts) and info["choices"] == list(item.choices) and info["gold"] == 1
    assert cli.main(["prompt", "--task", "lambada_openai", "--index", "0", "--data-dir", str(DATA)]) == 0
    info = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert info["choices"] == [" signs"] and info["gold"] is None
