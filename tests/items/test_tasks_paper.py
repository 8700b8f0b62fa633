"""ARC, HellaSwag, TriviaQA and RACE: golden prompts, positions, errors, scoring, a cross-check of
every context, choice, gold and stop list against lm-evaluation-harness 0.4.13 building the same
tasks from the same rows, and an end-to-end run on the tiny model.

ARC, HellaSwag and TriviaQA are Hub-only: their rows are hand-written in the Hub's format
(tests/fixtures/hub/<repo>/<config>/<split>.jsonl) and served through a real, offline Hub cache,
so they go through the same parquet reader as a user's cached dataset.  RACE is read from the
released files in tests/fixtures/data/race/ and, for the Hub path, from those files regrouped the
way EleutherAI/race was built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness import store
from harness.errors import UserError
from harness.items import registry
from harness.items.families import race as race_family
from harness.scoring import companions, extraction
from harness.scoring import records as scoring
from harness.spec import BuildOptions

from conftest import FIXTURES, assert_scores_equal_lm_eval, hub_dataset_repo

DATA = FIXTURES / "data"
HUB_ROWS = FIXTURES / "hub"
LOCAL = BuildOptions(data_dir=DATA)
HUB = BuildOptions()

# Where each fixture split lives in a Hub snapshot (the datasets' parquet layouts).
HUB_FILES = {
    "allenai/ai2_arc": {
        "ARC-Easy/test-00000-of-00001.parquet": "allenai/ai2_arc/ARC-Easy/test.jsonl",
        "ARC-Easy/train-00000-of-00001.parquet": "allenai/ai2_arc/ARC-Easy/train.jsonl",
        "ARC-Challenge/test-00000-of-00001.parquet": "allenai/ai2_arc/ARC-Challenge/test.jsonl",
    },
    "Rowan/hellaswag": {
        "data/validation-00000-of-00001.parquet": "Rowan/hellaswag/validation.jsonl",
        # the validation rows again as a train split: drawing exemplars from a pool that holds the
        # item shows lm-eval's rule of leaving the item out (hellaswag has no test split)
        "data/train-00000-of-00001.parquet": "Rowan/hellaswag/validation.jsonl",
    },
    "mandarjoshi/trivia_qa": {
        "rc.nocontext/train-00000-of-00001.parquet": "mandarjoshi/trivia_qa/rc.nocontext/train.jsonl",
        "rc.nocontext/validation-00000-of-00001.parquet": "mandarjoshi/trivia_qa/rc.nocontext/validation.jsonl",
    },
}


def hub_rows(relative: str) -> list[dict]:
    return [json.loads(line) for line in (HUB_ROWS / relative).read_text(encoding="utf-8").splitlines()]


def race_file(name: str) -> dict:
    return json.loads((DATA / "race/test" / name).read_text(encoding="utf-8"))


def eleutherai_race_rows(names: list[str]) -> list[dict]:
    """EleutherAI/race rows as that dataset was made (lm-eval 0.3's RACE._collate_data over the
    per-question Hub ``race``): questions grouped on the article text, in order of appearance, and
    ``problems`` stored as the repr of [{"question", "answer", "options"}]; written independently
    of harness.items.race_articles."""
    grouped: dict[str, list[dict]] = {}
    for name in names:
        data = race_file(name)
        for question, answer, options in zip(data["questions"], data["answers"], data["options"]):
            grouped.setdefault(data["article"], []).append({"question": question, "answer": answer, "options": options})
    return [{"article": article, "problems": str(problems)} for article, problems in grouped.items()]


# The release tarball's order is not the sorted one; any other order shows that doc_ids follow the Hub's.
RACE_HUB_ORDER = ["high/20685.txt", "high/11747.txt", "high/1412.txt"]
RACE_FILES = {"high": ["high/11747.txt", "high/1412.txt", "high/20685.txt"], "middle": ["middle/2565.txt", "middle/774.txt"]}


@pytest.fixture
def cached_hub(empty_hub) -> Path:
    for repo_id, files in HUB_FILES.items():
        hub_dataset_repo(empty_hub, repo_id, {parquet: hub_rows(jsonl) for parquet, jsonl in files.items()})
    hub_dataset_repo(empty_hub, "EleutherAI/race", {"high/test-00000-of-00001.parquet": eleutherai_race_rows(RACE_HUB_ORDER)})
    return empty_hub


def build(name: str, opts: BuildOptions = HUB) -> dict:
    selection = registry.resolve(name)[0]
    return registry.family_module(selection.spec).build_rows(selection, opts)


# --- golden prompts -----------------------------------------------------------------------------


def test_golden_arc(cached_hub):
    easy = build("arc_easy")["arc_easy"]
    assert [i.doc_id for i in easy] == [0, 1, 2, 3]
    assert easy[1].context == (
        "Question: A student's bean plant grew 2 cm in one week. What did the plant most likely need to grow?\nAnswer:"
    )
    assert easy[1].choices == (" sunlight and water", " sand only", " complete darkness", " cold air")
    assert easy[1].gold == 0  # label "1" of labels "1".."4"
    assert easy[2].context == 'Question: Which property describes the "hardness" of a mineral?\nAnswer:'
    assert easy[2].choices == (" its luster", " its resistance to being scratched", " its color") and easy[2].gold == 1
    assert len(easy[3].choices) == 5 and easy[3].gold == 0
    challenge = build("arc_challenge")["arc_challenge"]
    assert challenge[2].context == "Question: Which gas do plants take in from the air to make food?\nAnswer:"
    assert challenge[2].gold == 2  # answerKey "3"
    assert all(i.choice_texts == tuple(c[1:] for c in i.choices) and i.meta == {} for i in easy + challenge)


def test_golden_hellaswag(cached_hub):
    items = build("hellaswag")["hellaswag"]
    # ctx_b is capitalised; " [title]" -> ". ", other [..] dropped, then "  " -> " "
    assert items[1].context == (
        "Home and Garden: How to water a cactus. Check the soil first. Push a finger into the soil up to the first"
        " knuckle. If the soil is dry, water the plant."
    )
    assert items[1].choices == (
        " Cacti never need water at all.. Leave it in the dark.",
        "  Pour the water slowly until it drains from the bottom of the pot.",  # the dropped tag leaves its space
        "  Put the cactus in the freezer overnight.",
        " Paint the soil green so that it looks healthy.",
    )
    assert items[1].gold == 1
    assert items[0].context == "Washing dishes: A woman stands at a kitchen sink full of plates. She"
    assert items[2].context == "Playing guitar: A boy sits on a bed holding a guitar."  # empty ctx_b: stripped
    assert items[2].gold == 2


TRIVIAQA_0 = (
    "Question: What is the capital of Canada??\nAnswer: Ottawa\n\n"
    "Question: Who wrote the play Romeo and Juliet??\nAnswer: William Shakespeare\n\n"
    "Question: Which planet is known as the Red Planet??\nAnswer: Mars\n\n"
    "Question: How many sides does a hexagon have??\nAnswer: 6\n\n"
    "Question: Which ocean lies between Africa and Australia??\nAnswer: Indian Ocean\n\n"
    "Question: Which composer wrote the Moonlight Sonata??\nAnswer:"
)


def test_golden_triviaqa(cached_hub):
    items = build("triviaqa")["triviaqa"]
    assert items[0].context == TRIVIAQA_0
    assert items[0].meta["fewshot_doc_ids"] == [6, 3, 0, 4, 5]
    assert items[0].targets == ("Ludwig van Beethoven", "Beethoven", "L. van Beethoven")
    assert items[0].stop == ("\n", ".", ",")
    assert items[0].max_new_tokens == 256
    # a question without "?" gets one; an exemplar's answer is its first alias
    assert items[1].context.endswith("Question: What is the largest mammal?\nAnswer:")
    assert "Question: What is the chemical symbol for gold?\nAnswer: Au\n\n" in items[2].context
    assert [i.doc_id for i in items] == [0, 1, 2, 3]


RACE_HIGH_3 = (
    "Article: " + race_file("high/11747.txt")["article"] + "\n\n"
    'Question: The word GARDEN in the passage means"  _  ".\nAnswer: a piece of land for growing plants\n'
    "At first many students thought gardening was boring\n"  # a cloze: "  _  ." cut to " ", then the answer
    "Question: What did the cooks make with the tomatoes?\nAnswer: Soup.\n"
    "According to the headmaster, the garden taught students  _  ."
)


def test_golden_race():
    items = build("race:high", LOCAL)["race:high"]
    assert items[3].context == RACE_HIGH_3
    texts = ["how to cook", "how to read faster", "how to build a library", "patience, teamwork and respect for nature"]
    assert items[3].choices == tuple(" " + t for t in texts)
    assert items[3].gold == 3
    assert items[3].meta == {
        "level": "high",
        "article": 0,
        "file": "high/11747.txt",
        "question_index": 3,
        "last_in_article": True,
    }
    assert items[3].choice_texts == tuple(texts)
    # the first question of an article: the article and the question only
    assert items[4].context == "Article: " + race_file("high/1412.txt")["article"] + "\n\nTom went to the village  _  ."
    assert "caf\u00e9 she runs" in items[4].context  # the file's \u escapes are read as text
    assert items[5].context.endswith(
        "\n\nTom went to the village to visit his grandmother\nWhat did Tom and his grandmother do every morning?"
    )


# --- positions, limit, shots, errors ---------------------------------------------------------------


def test_race_doc_id_is_the_canonical_position():
    rows = build("race", LOCAL)
    assert list(rows) == ["race:high", "race:middle"]
    for level, names in RACE_FILES.items():
        items = rows[f"race:{level}"]
        expected = [(name, q) for name in names for q in range(len(race_file(name)["questions"]))]
        assert [(i.meta["file"], i.meta["question_index"]) for i in items] == expected
        assert [i.doc_id for i in items] == list(range(len(expected)))
        for item, (name, q) in zip(items, expected):
            assert item.gold == "ABCD".index(race_file(name)["answers"][q])
            assert item.meta["last_in_article"] == (q == len(race_file(name)["questions"]) - 1)
    assert len(rows["race:high"]) == 10 and len(rows["race:middle"]) == 9


def test_race_limit_and_fewshot_draw_other_articles():
    full = build("race:high", LOCAL)["race:high"]
    assert build("race:high", BuildOptions(data_dir=DATA, limit=3))["race:high"] == full[:3]
    shots = build("race:high", BuildOptions(data_dir=DATA, num_fewshot=2))["race:high"]
    assert build("race:high", BuildOptions(data_dir=DATA, num_fewshot=2, limit=5))["race:high"] == shots[:5]
    articles = [race_file(name) for name in RACE_FILES["high"]]
    for item, plain in zip(shots, full):
        picked = item.meta["fewshot_articles"]
        assert len(picked) == 2 and item.meta["article"] not in picked
        assert item.meta["fewshot_source"] == "other articles of high test, random.Random(1234)"
        exemplars = ""
        for position in picked:
            last = full[[i.meta["article"] for i in full].index(position) + len(articles[position]["questions"]) - 1]
            assert last.meta["last_in_article"]
            exemplars += last.context + last.choices[last.gold] + "\n\n"
        assert item.context == exemplars + plain.context
    with pytest.raises(UserError, match=r"race:middle: 2 shots asked but only 1 other articles exist"):
        build("race:middle", BuildOptions(data_dir=DATA, num_fewshot=2))


def test_race_errors(tmp_path, empty_hub):
    with pytest.raises(UserError, match=r"unknown race level 'low'; known levels: high, middle"):
        build("race:low", LOCAL)
    with pytest.raises(UserError, match=r"no RACE files in .*race/test/high; --data-dir DIR expects race/test/\{high,middle\}/\*\.txt"):
        build("race:high", BuildOptions(data_dir=tmp_path))
    bad = tmp_path / "race/test/middle"
    bad.mkdir(parents=True)
    (bad / "1.txt").write_text(json.dumps({"article": "a", "questions": ["q"], "options": [["x", "y"]], "answers": ["A"]}))
    with pytest.raises(UserError, match=r"1.txt: question 0 needs 4 options and an answer letter A-D"):
        build("race:middle", BuildOptions(data_dir=tmp_path))
    with pytest.raises(UserError) as err:
        build("race:middle", HUB)
    assert str(err.value) == (
        "EleutherAI/race (lm-eval's RACE data) has no middle level, only high;"
        " evaluate race:middle with --data-dir DIR (race/test/{high,middle}/*.txt (RACE's released files))"
    )


def test_hub_only_tasks_ignore_data_dir_and_limit_keeps_first_items(cached_hub):
    for name in ("arc_easy", "hellaswag", "triviaqa"):
        full = build(name)[name]
        assert build(name, BuildOptions(data_dir=DATA))[name] == full
        assert build(name, BuildOptions(limit=2))[name] == full[:2]


def test_hub_only_offline_without_cache_is_a_one_line_error(empty_hub):
    for name, repo in (("arc_easy", "allenai/ai2_arc"), ("hellaswag", "Rowan/hellaswag"), ("triviaqa", "mandarjoshi/trivia_qa")):
        with pytest.raises(UserError) as err:
            build(name, BuildOptions(data_dir=DATA))
        message = str(err.value)
        assert message.startswith(f"dataset {repo} is not in the Hub cache and the Hub could not be reached (")
        assert message.endswith("; connect to the Hub once to cache it (it has no --data-dir copy)")
        assert "\n" not in message


def test_arc_fewshot_and_bad_rows(cached_hub):
    items = build("arc_easy", BuildOptions(num_fewshot=2))["arc_easy"]
    # ARC's lm-eval config has a test split, so its sampler draws exactly k (no item to leave out)
    assert items[0].meta["fewshot_doc_ids"] == [3, 0]
    assert items[0].context == (
        "Question: What causes day and night on Earth?\nAnswer: Earth's rotation on its axis\n\n"
        "Question: Which form of energy does a battery store?\nAnswer: chemical energy\n\n"
        "Question: Which tool is best for measuring the mass of a small rock?\nAnswer:"
    )
    with pytest.raises(UserError, match=r"arc_easy: 5 shots asked but the train split has 4 rows"):
        build("arc_easy", BuildOptions(num_fewshot=5))
    with pytest.raises(UserError, match=r"answerKey 'E' is not one of its labels"):
        from harness.items.families.hub_choice import arc_doc

        arc_doc({"id": "x", "question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"})


def test_specs():
    specs = registry.all_specs()
    for name, primary in (("arc_easy", "acc"), ("arc_challenge", "acc_norm"), ("hellaswag", "acc_norm"), ("race", "acc")):
        spec = specs[name]
        assert spec.metrics == ("acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score")
        assert (spec.primary_metric, spec.output_type, spec.num_fewshot, spec.prompt_type) == (primary, "multiple_choice", 0, "zeroshot")
    assert (specs["arc_easy"].hub_path, specs["arc_easy"].hub_name, specs["arc_easy"].split) == ("allenai/ai2_arc", "ARC-Easy", "test")
    assert (specs["hellaswag"].hub_path, specs["hellaswag"].split) == ("Rowan/hellaswag", "validation")
    trivia = specs["triviaqa"]
    assert (trivia.num_fewshot, trivia.fewshot_split, trivia.split, trivia.metrics) == (5, "train", "validation", ("exact_match",))
    assert (trivia.hub_path, trivia.hub_name, trivia.family) == ("mandarjoshi/trivia_qa", "rc.nocontext", "triviaqa")
    assert (trivia.extractor, trivia.scorer, trivia.gold_continuation) == ("strip", "triviaqa_exact_match", "delimited_targets")
    assert race_family.subtasks(specs["race"], LOCAL) == ["high", "middle"]
    assert "race:<subtask>" in registry.known_task_names()


# --- TriviaQA scoring ----------------------------------------------------------------------------


def test_triviaqa_exact_match_by_hand():
    aliases = ("Ludwig van Beethoven", "Beethoven", "L. van Beethoven")
    assert extraction.triviaqa_exact_match(" Beethoven", aliases)  # the filter strips
    assert extraction.triviaqa_exact_match("l van beethoven", aliases)  # "." removed from the alias
    assert extraction.triviaqa_exact_match("BEETHOVEN!", aliases)  # case and punctuation ignored
    assert not extraction.triviaqa_exact_match("Beethoven was", aliases)
    assert not extraction.triviaqa_exact_match("Ludwig  van Beethoven", aliases)  # inner spaces are kept
    assert extraction.triviaqa_normalise("People's Republic of China") == "peoples republic of china"
    assert not extraction.triviaqa_exact_match("", ("1989",))


# --- cross-check with lm-evaluation-harness 0.4.13 -----------------------------------------------


def lm_eval_task(task_yaml: str, splits: dict[str, list[dict]], tmp_path: Path, limit: int | None = None, **config):
    """lm-eval's own task from its YAML, its dataset swapped for parquet files of the given rows."""
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    files = {}
    for split, rows in splits.items():
        files[split] = str(tmp_path / f"{split}.parquet")
        pd.DataFrame(rows).to_parquet(files[split], index=False)
    cfg = load_yaml(Path(lm_eval.__file__).parent / "tasks" / task_yaml)
    cfg.update(dataset_path="parquet", dataset_name=None, **config)
    if cfg["output_type"] == "multiple_choice":  # every accuracy lm-eval computes, to compare with ours
        cfg["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm", "acc_bytes")]
    cfg["dataset_kwargs"] = {"data_files": files, "cache_dir": str(tmp_path / "datasets_cache")}
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(1234)  # lm-eval's default fewshot_random_seed
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task


def by_doc(instances) -> dict[int, list]:
    grouped: dict[int, list] = {}
    for inst in instances:
        grouped.setdefault(inst.doc_id, []).append(inst)
    return grouped


@pytest.mark.parametrize(
    ("task_yaml", "ours", "splits", "changes"),
    [
        ("arc/arc_easy.yaml", "arc_easy", {"test": "allenai/ai2_arc/ARC-Easy/test.jsonl"}, {}),
        ("arc/arc_challenge.yaml", "arc_challenge", {"test": "allenai/ai2_arc/ARC-Challenge/test.jsonl"}, {}),
        (
            "arc/arc_easy.yaml",
            "arc_easy",
            {"test": "allenai/ai2_arc/ARC-Easy/test.jsonl", "train": "allenai/ai2_arc/ARC-Easy/train.jsonl"},
            {"num_fewshot": 3},
        ),
        ("hellaswag/hellaswag.yaml", "hellaswag", {"validation": "Rowan/hellaswag/validation.jsonl"}, {}),
        (
            "hellaswag/hellaswag.yaml",
            "hellaswag",
            {"validation": "Rowan/hellaswag/validation.jsonl", "train": "Rowan/hellaswag/validation.jsonl"},
            {"num_fewshot": 2},
        ),
    ],
)
def test_multiple_choice_equals_lm_eval(task_yaml, ours, splits, changes, cached_hub, tmp_path):
    present = {"training_split": "train" if "train" in splits else None, "validation_split": None}
    if "validation" in splits:
        present["validation_split"] = "validation"
    task = lm_eval_task(task_yaml, {s: hub_rows(f) for s, f in splits.items()}, tmp_path, **present, **changes)
    instances = by_doc(task.instances)
    items = build(ours, BuildOptions(num_fewshot=changes.get("num_fewshot")))[ours]
    assert sorted(instances) == [i.doc_id for i in items] and len(items) >= 3
    if changes.get("num_fewshot") and ours == "hellaswag":
        assert all(item.doc_id not in item.meta["fewshot_doc_ids"] for item in items)
    for item in items:
        assert [inst.arguments for inst in instances[item.doc_id]] == [(item.context, c) for c in item.choices]
        assert task.doc_to_target(instances[item.doc_id][0].doc) == item.gold
        assert_scores_equal_lm_eval(task, instances[item.doc_id][0].doc, item)


@pytest.mark.parametrize("changes", [{}, {"limit": 2}, {"num_fewshot": 2}])
def test_triviaqa_equals_lm_eval(changes, cached_hub, tmp_path):
    from lm_eval.filters.extraction import WhitespaceFilter

    splits = {s: hub_rows(f"mandarjoshi/trivia_qa/rc.nocontext/{s}.jsonl") for s in ("train", "validation")}
    config = {"num_fewshot": changes.get("num_fewshot", 5)}
    task = lm_eval_task("triviaqa/default.yaml", splits, tmp_path, limit=changes.get("limit"), **config)
    items = build("triviaqa", BuildOptions(limit=changes.get("limit"), num_fewshot=changes.get("num_fewshot")))["triviaqa"]
    assert len(task.instances) == len(items) == changes.get("limit", 4)
    spec = registry.all_specs()["triviaqa"]
    generations = [" Beethoven.", "blue WHALE", "  People's Republic of China", "1990"]
    for inst, item, generation in zip(task.instances, items, generations):
        context, kwargs = inst.arguments
        assert (inst.doc_id, context) == (item.doc_id, item.context)
        assert tuple(kwargs["until"]) == item.stop
        assert tuple(task.doc_to_target(inst.doc)) == item.targets
        # scoring: lm-eval's filter then its process_results, against ours on the same generation
        filtered = WhitespaceFilter().apply([[generation]], [inst.doc])[0][0]
        expected = task.process_results(inst.doc, [filtered])["exact_match"]
        ours = scoring.score_generation(spec, item, generation, spec.metrics)
        assert ours["metrics"]["exact_match"] == expected
        assert ours["extracted"]["answer"] == filtered
    assert [scoring.score_generation(spec, i, g, spec.metrics)["metrics"]["exact_match"] for i, g in zip(items, generations)] == [
        1.0, 1.0, 1.0, 0.0
    ][: len(items)]


@pytest.mark.parametrize("level", ["high", "middle"])
def test_race_last_questions_equal_lm_eval(level, tmp_path):
    task = lm_eval_task("race/race.yaml", {"test": eleutherai_race_rows(RACE_FILES[level])}, tmp_path)
    instances = by_doc(task.instances)
    ours = {i.meta["file"]: i for i in build(f"race:{level}", LOCAL)[f"race:{level}"] if i.meta["last_in_article"]}
    assert len(instances) == len(ours) == len(RACE_FILES[level])
    for doc_id, name in enumerate(RACE_FILES[level]):  # lm-eval's doc = one article, in the rows' order
        item = ours[name]
        assert [inst.arguments for inst in instances[doc_id]] == [(item.context, c) for c in item.choices]
        assert task.doc_to_target(instances[doc_id][0].doc) == item.gold
        assert_scores_equal_lm_eval(task, instances[doc_id][0].doc, item)

    # race_lm_eval is lm-eval's docs themselves: one item per article, doc_id = lm-eval's doc index
    lm_items = build(f"race_lm_eval:{level}", LOCAL)[f"race_lm_eval:{level}"]
    assert [i.doc_id for i in lm_items] == list(range(len(instances)))
    for doc_id, item in enumerate(lm_items):
        assert [inst.arguments for inst in instances[doc_id]] == [(item.context, c) for c in item.choices]
        assert task.doc_to_target(instances[doc_id][0].doc) == item.gold


def test_race_from_the_hub_equals_the_files_per_article(cached_hub, tmp_path):
    hub = build("race:high", HUB)["race:high"]
    local = build("race:high", LOCAL)["race:high"]
    assert len(hub) == len(local) == 10
    # Hub order: the articles in EleutherAI/race's row order, questions in file order; no file names.
    order = [name for name in RACE_HUB_ORDER for _ in race_file(name)["questions"]]
    assert [i.meta["file"] for i in hub] == [None] * 10 and [i.doc_id for i in hub] == list(range(10))
    by_file = {(i.meta["file"], i.meta["question_index"]): i for i in local}
    for item, name in zip(hub, order):
        twin = by_file[(name, item.meta["question_index"])]
        assert (item.context, item.choices, item.gold) == (twin.context, twin.choices, twin.gold)
    # and lm-eval reads the same rows into the same last-question prompts
    task = lm_eval_task("race/race.yaml", {"test": eleutherai_race_rows(RACE_HUB_ORDER)}, tmp_path)
    lasts = [i for i in hub if i.meta["last_in_article"]]
    assert [inst.arguments for inst in task.instances] == [(i.context, c) for i in lasts for c in i.choices]


# --- end to end on the tiny model -------------------------------------------------------------------


def test_end_to_end_on_the_tiny_model(cached_hub, tiny_model_dir, one_torch_thread, tmp_path):
    from harness.runs.evaluate import eval_spec, evaluate

    tasks = ("arc_easy", "arc_challenge", "hellaswag", "triviaqa", "race")
    spec = eval_spec(str(tiny_model_dir), tasks, data_dir=DATA, limit=3, batch_size=4, out=tmp_path / "out", progress=False)
    results_path = evaluate(spec, log=lambda message: None).results
    results = json.loads(results_path.read_text(encoding="utf-8"))
    rows = results["tasks"]
    choice_metrics = {"acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"}
    for row in ("arc_easy", "arc_challenge", "hellaswag", "race:high", "race:middle"):
        assert set(rows[row]["metrics"]) == choice_metrics and rows[row]["n"] == 3, row
        assert 0.0 <= rows[row]["metrics"]["acc"]["value"] <= 1.0
    assert rows["hellaswag"]["metrics"]["acc"]["random_baseline"] == pytest.approx(0.25)
    # ARC items here have 4, 4 and 3 choices
    assert rows["arc_easy"]["metrics"]["acc"]["random_baseline"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 3) / 3)
    assert set(rows["race"]["metrics"]) >= choice_metrics and rows["race"]["subtasks"] == ["race:high", "race:middle"]
    trivia = rows["triviaqa"]
    # exact match and the continuous companions every generative row reports (harness.scoring.companions)
    assert set(trivia["metrics"]) == {"exact_match", *companions.LOGPROB_METRICS, *companions.EDIT_DISTANCE_METRICS}
    assert trivia["n"] == 3 and trivia["num_fewshot"] == 5
    assert trivia["metrics"]["exact_match"]["random_baseline"] == 0.0
    records = [r for r in store.checkpoint_items(results_path.parent) if r["task"] == "triviaqa"]
    targets = [row["answer"]["aliases"] for row in hub_rows("mandarjoshi/trivia_qa/rc.nocontext/validation.jsonl")]
    for record, aliases in zip(records, targets):
        assert record["target"] == aliases and record["extracted"]["answer"] == record["generation"].strip()
        assert record["metrics"]["exact_match"] == float(extraction.triviaqa_exact_match(record["generation"], aliases))
    assert "fewshot_source" not in rows["race:high"]


def test_race_fewshot_source_is_recorded_in_the_results(tiny_model_dir, one_torch_thread, tmp_path):
    from harness.runs.evaluate import eval_spec, evaluate

    spec = eval_spec(str(tiny_model_dir), ("race:middle",), data_dir=DATA, limit=2, num_fewshot=1, batch_size=4,
                     out=tmp_path / "out", progress=False)
    entry = json.loads(evaluate(spec, log=lambda message: None).results.read_text(encoding="utf-8"))["tasks"]["race:middle"]
    assert entry["fewshot_source"] == "other articles of middle test, random.Random(1234)"
    assert entry["num_fewshot"] == 1 and entry["n"] == 2
