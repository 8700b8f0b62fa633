"""BIG-bench family: rows, golden prompts, shot selection, modes and errors on task.json excerpts.

The fixtures under tests/fixtures/data/bigbench are the first examples of BIG-bench's own task.json
files (Apache-2.0, see LICENSE there) with every other field byte-for-byte as published.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.errors import UserError
from harness.items.families import bigbench
from harness.items.registry import TaskSelection, all_specs, load_prompt, resolve
from harness.spec import BuildOptions

from conftest import FIXTURES

DATA = FIXTURES / "data"

ADDITION_HEAD = "In the following lines, the symbol -> represents a simple mathematical operation.\n"
BOOKS_1 = (
    "On a shelf, there are three books: a black book, an orange book, and a blue book. "
    "The blue book is to the right of the orange book. The orange book is to the right of the black book."
)
BOOKS_2 = (
    "On a shelf, there are three books: a purple book, a red book, and a yellow book. "
    "The purple book is to the right of the yellow book. The yellow book is to the right of the red book."
)
LOGICAL_PREFIX = (
    "The following paragraphs each describe a set of three objects arranged in a fixed order. "
    "The statements are logically consistent within each paragraph.\n\n"
)


def rows(task: str, **opts) -> dict:
    spec = all_specs()["bigbench"]
    return bigbench.build_rows(TaskSelection(spec, task), BuildOptions(data_dir=DATA, **opts))


def row_info(items: list) -> dict:
    """{"mode", "metrics", "primary_metric"} of a built row, read from its first item."""
    return {"mode": items[0].meta["mode"], "metrics": list(items[0].metrics), "primary_metric": items[0].primary_metric}


def only_row(task: str, **opts) -> list:
    (items,) = rows(task, **opts).values()
    return items


def test_spec_from_yaml():
    spec = all_specs()["bigbench"]
    assert (spec.family, spec.has_subtasks, spec.num_fewshot, spec.prompt_type) == ("bigbench", True, 3, "fewshot")
    assert (spec.split, spec.max_new_tokens, spec.prompt, spec.primary_metric) == ("default", 256, "bigbench", "exact_match")
    assert spec.metrics == (
        "exact_match", "bleu", "numeric_match", "acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"
    )
    (selection,) = resolve("bigbench:arithmetic/2_digit_addition")
    assert selection.subtask == "arithmetic/2_digit_addition"
    # BIG-bench's defaults for absent fields, as in json_task.py
    defaults = load_prompt("bigbench")["defaults"]
    assert defaults["example_input_prefix"] == "\nQ: " and defaults["example_output_prefix"] == "\nA: "
    assert defaults["choice_prefix"] == "\n  choice: " and defaults["few_shot_example_separator"] == "\n"
    assert load_prompt("bigbench")["default_output_regex"] == r"[^\.\?\!\;\n]+"


def test_parent_tasks_expand_to_one_row_per_subtask():
    assert list(rows("modified_arithmetic")) == [
        f"bigbench:modified_arithmetic/{sub}"
        for sub in (
            "three_digit_addition_control", "three_digit_addition_plus_one", "three_digit_subtraction_control",
            "three_digit_subtraction_plus_one", "two_digit_multiplication_control", "two_digit_multiplication_plus_one",
        )
    ]
    assert list(rows("unit_conversion")) == [
        "bigbench:unit_conversion/si_conversion",
        "bigbench:unit_conversion/unit_addition_same",
    ]
    assert list(rows("arithmetic/2_digit_addition")) == ["bigbench:arithmetic/2_digit_addition"]
    assert list(rows("word_unscrambling")) == ["bigbench:word_unscrambling"]
    everything = rows(None)
    assert len(everything) == 12 and "bigbench:logical_deduction/three_objects" in everything
    assert all(item.task == name for name, items in everything.items() for item in items)


def test_subtasks_lists_the_tasks_under_the_data_dir():
    assert bigbench.subtasks(all_specs()["bigbench"], BuildOptions(data_dir=DATA)) == [
        "arithmetic",
        "international_phonetic_alphabet_transliterate",
        "logical_deduction",
        "modified_arithmetic",
        "unit_conversion",
        "word_unscrambling",
    ]


def test_golden_modified_arithmetic_item_after_the_shots():
    items = only_row("modified_arithmetic/three_digit_addition_control")
    item = items[4]
    assert item.doc_id == 4
    assert item.context == (
        ADDITION_HEAD + "102 + 435 -> 537\n860 + 270 -> 1130\n106 + 71 -> 177\n700 + 20 -> 720\n"
        "614 + 121 -> 735\n466 + 214 -> 680"
        "\n\n"
        + ADDITION_HEAD + "330 + 458 -> 788\n87 + 372 -> 459\n99 + 871 -> 970\n663 + 130 -> 793\n"
        "661 + 308 -> 969\n769 + 343 -> 1112"
        "\n\n"
        + ADDITION_HEAD + "491 + 413 -> 904\n805 + 385 -> 1190\n191 + 955 -> 1146\n276 + 160 -> 436\n"
        "459 + 313 -> 772\n21 + 252 -> 273"
        "\n\n"
        + ADDITION_HEAD + "957 + 686 -> 1643\n957 + 562 -> 1519\n875 + 566 -> 1441\n243 + 831 -> 1074\n"
        "504 + 130 -> 634\n484 + 818 -> "
    )
    assert item.targets == ("1302",)
    assert item.choices == () and item.gold is None
    # BIG-bench does not stop generating at the separator or a newline: the answer is read afterwards
    assert item.stop == ()
    assert item.max_new_tokens == 256
    assert item.meta["mode"] == "gen"
    assert item.stop_string is None and item.output_regex == r"[-+]?\d+"
    assert item.metrics == ("exact_match",) and item.primary_metric == "exact_match"


def test_golden_logical_deduction_multiple_choice():
    item = only_row("logical_deduction/three_objects")[3]
    assert item.context == (
        LOGICAL_PREFIX
        + BOOKS_1 + " The black book is the leftmost."
        + "\n\n" + BOOKS_1 + " The orange book is the second from the left."
        + "\n\n" + BOOKS_1 + " The blue book is the rightmost."
        + "\n\n" + BOOKS_2 + " "
    )
    # the bare choice strings, in task.json order, as BIG-bench's cond_log_prob scores them
    assert item.choices == (
        "The purple book is the leftmost.",
        "The red book is the leftmost.",
        "The yellow book is the leftmost.",
    )
    assert item.gold == 1 and item.targets == () and item.stop == ()
    assert item.meta["mode"] == "mc" and item.primary_metric == "acc"
    assert item.metrics == ("acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score")
    # lm-evaluation-harness's boundary rule moves the context's trailing space into the continuation,
    # so the model scores " The red book is the leftmost." after "...the red book."
    context, continuation = item.context.rstrip(), item.context[len(item.context.rstrip()) :] + item.choices[1]
    assert context.endswith("to the right of the red book.")
    assert continuation == " The red book is the leftmost."


def test_golden_word_unscrambling_default_prefixes():
    items = only_row("word_unscrambling")
    assert items[0].context == (
        "\nQ: The word nad is a scrambled version of the English word \nA: and"
        "\n"
        "\nQ: The word ofr is a scrambled version of the English word \nA: for"
        "\n"
        "\nQ: The word ahtt is a scrambled version of the English word \nA: that"
        "\n"
        "\nQ: The word hte is a scrambled version of the English word \nA: "
    )
    assert items[0].targets == ("the",)
    # a list target keeps every accepted answer; as a shot only the first would be shown
    assert items[4].targets == ("this", "hits", "hist", "shit", "sith")
    assert items[0].stop == ()
    assert items[0].output_regex == r"[^\.\?\!\;\n]+"  # BIG-bench's default: no stop_string, no regex


def test_shots_are_the_first_k_examples_other_than_the_item():
    items = only_row("modified_arithmetic/two_digit_multiplication_plus_one")
    assert [item.meta["fewshot_doc_ids"] for item in items] == [
        [1, 2, 3], [0, 2, 3], [0, 1, 3]
    ] + [[0, 1, 2]] * (len(items) - 3)
    shared = items[3].context[: items[3].context.rindex("\n\n") + 2]
    assert all(item.context.startswith(shared) for item in items[3:])
    assert not any(item.context.startswith(shared) for item in items[:3])
    # item 0 opens with example 1; its own text appears once, at the end
    example_0, example_1 = items[0].context.split("\n\n")[-1], items[1].context.split("\n\n")[-1]
    assert items[0].context.startswith(example_1 + items[1].targets[0] + "\n\n")
    assert items[0].context.count(example_0) == 1 and items[0].context.endswith(example_0)


def test_target_scores_shot_answer_is_the_best_choice():
    # logical_deduction shots have only target_scores: the shot shows the 1-scored choice
    item = only_row("logical_deduction/three_objects", num_fewshot=1)[0]
    assert item.context == LOGICAL_PREFIX + BOOKS_1 + " The orange book is the second from the left.\n\n" + BOOKS_1 + " "
    assert item.choices[item.gold] == "The black book is the leftmost."


def test_limit_applies_per_subtask():
    built = rows("modified_arithmetic", limit=2)
    assert [len(items) for items in built.values()] == [2] * 6
    assert [item.doc_id for items in built.values() for item in items] == [0, 1] * 6
    # the limit picks items; the shots still come from the whole row
    assert built["bigbench:modified_arithmetic/three_digit_addition_control"][1].meta["fewshot_doc_ids"] == [0, 2, 3]
    assert [len(items) for items in rows("unit_conversion", limit=3).values()] == [3, 3]


def test_zero_shots():
    item = only_row("logical_deduction/three_objects", num_fewshot=0)[0]
    assert item.context == LOGICAL_PREFIX + BOOKS_1 + " "
    assert item.meta["fewshot_doc_ids"] == []
    ipa = only_row("international_phonetic_alphabet_transliterate", num_fewshot=0)[1]
    assert ipa.context == (
        "Transliterate the following sentences between the International Phonetic Alphabet (IPA) and English.\n"
        "\n\nEnglish: The 1931 Malay census was an alarm bell."
    )


def test_too_few_examples_for_the_shots():
    assert only_row("word_unscrambling", num_fewshot=7)[0].meta["fewshot_doc_ids"] == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(UserError, match="8 distinct examples, too few for 8 shots"):
        rows("word_unscrambling", num_fewshot=8)


def test_arithmetic_generative_by_default_and_multiple_choice_on_request():
    gen = only_row("arithmetic/2_digit_addition")[0]
    mc = only_row("arithmetic/2_digit_addition", bigbench_mode="mc")[0]
    assert only_row("arithmetic/2_digit_addition", bigbench_mode="gen")[0] == gen
    # BIG-bench appends the choices to the input whenever an example has target_scores: one prompt, two scorings
    assert gen.context == mc.context
    assert gen.context.endswith(
        "\nQ: What is 80 plus 29?\n  choice: 378\n  choice: 388\n  choice: 4\n  choice: 54942"
        "\n  choice: banana\n  choice: house\n  choice: 109\nA: "
    )
    assert gen.context.startswith("\nQ: What is 36 plus 97?\n  choice: 749\n")
    assert "\nA: 133\n\nQ: What is 72 plus 42?" in gen.context
    assert (gen.targets, gen.choices, gen.stop) == (("109",), (), ())
    assert gen.meta["mode"] == "gen" and gen.metrics == ("exact_match",)
    assert mc.choices == ("378", "388", "4", "54942", "banana", "house", "109") and mc.gold == 6
    assert mc.targets == () and mc.meta["mode"] == "mc" and mc.primary_metric == "acc"
    assert row_info([mc]) == {
        "mode": "mc",
        "metrics": ["acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"],
        "primary_metric": "acc",
    }


def test_a_mode_the_examples_cannot_support_falls_back():
    assert only_row("logical_deduction/three_objects", bigbench_mode="gen")[0].meta["mode"] == "mc"
    assert only_row("word_unscrambling", bigbench_mode="mc")[0].meta["mode"] == "gen"
    with pytest.raises(UserError, match="unknown BIG-bench mode 'both'"):
        rows("word_unscrambling", bigbench_mode="both")


def test_ipa_is_scored_by_bleu_and_read_up_to_its_stop_string():
    items = only_row("international_phonetic_alphabet_transliterate")
    info = row_info(items)
    assert info == {"mode": "gen", "metrics": ["exact_match", "bleu", "rouge1", "rouge2", "rougeLsum"], "primary_metric": "bleu"}
    assert items[4].stop == ()  # the answer is cut after "\n" once generated, not the decode
    assert items[4].stop_string == "\n" and items[4].output_regex is None
    assert items[0].targets == ("English: You don't want to push the button lightly, but rather punch it hard.",)
    # example_output_prefix "": the answer follows the input directly
    assert "bell.IPA: ðə 1931 ˈmeɪleɪ ˈsɛnsəs wɑz ən əˈlɑrm bɛl.\n\n\n" in items[4].context


def test_unit_addition_same_numeric_match_and_deduplication():
    items = only_row("unit_conversion/unit_addition_same")
    info = row_info(items)
    assert info == {"mode": "gen", "metrics": ["exact_match", "numeric_match"], "primary_metric": "numeric_match"}
    # examples 6 and 7 are the same json: 7 is dropped, doc_ids keep file positions
    assert [item.doc_id for item in items] == [0, 1, 2, 3, 4, 5, 6]
    assert items[6].targets == ("8",)
    assert items[4].context == (
        "\n5 minutes - 1 minute = ____ minutes4"
        "\nIf I add 5km to 8km how many kilometres do I have?13"
        "\n6 torrs + 4 torrs = ____ torrs10"
        "\nIf I take 1m^3 from 4m^3 how many cubic metres do I have?"
    )


def test_unit_conversion_multiple_choice_subtask():
    item = only_row("unit_conversion/si_conversion", num_fewshot=0)[0]
    assert item.context == "\n23.5 daN expressed in units of N is "
    assert item.choices == ("120.0 N.", "0.00235 daN.", "2350.0 hN.", "439.0 N.", "235.0 N.") and item.gold == 4


def test_unknown_task_lists_the_tasks_present():
    with pytest.raises(UserError) as err:
        rows("no_such_task")
    message = str(err.value)
    assert "unknown BIG-bench task 'no_such_task'" in message
    assert "arithmetic, international_phonetic_alphabet_transliterate, logical_deduction" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="its subtasks: three_objects"):
        rows("logical_deduction/four_objects")
    with pytest.raises(UserError, match="unknown subtask 'x' of BIG-bench task word_unscrambling"):
        rows("word_unscrambling/x")


def test_missing_data_dir():
    spec = all_specs()["bigbench"]
    with pytest.raises(UserError) as err:
        bigbench.build_rows(TaskSelection(spec, "modified_arithmetic"), BuildOptions())
    message = str(err.value)
    assert "--data-dir" in message and "bigbench/benchmark_tasks/<task>/task.json" in message
    assert "hub" in message and "\n" not in message
    with pytest.raises(UserError, match="--data-dir"):
        bigbench.subtasks(spec, BuildOptions())
    elsewhere = BuildOptions(data_dir=DATA / "mmlu")
    with pytest.raises(UserError) as err:
        bigbench.build_rows(TaskSelection(spec, "modified_arithmetic/three_digit_addition_control"), elsewhere)
    message = str(err.value)
    assert str(DATA / "mmlu" / "bigbench" / "benchmark_tasks" / "modified_arithmetic" / "task.json") in message
    assert "--data-dir DIR expects bigbench/benchmark_tasks/<task>[/<subtask>]/task.json" in message
    with pytest.raises(UserError, match="missing BIG-bench folder"):
        bigbench.build_rows(TaskSelection(spec, None), elsewhere)


def test_no_chain_of_thought_and_zeroshot_means_no_shots():
    spec = replace(all_specs()["bigbench"], prompt_type="cot")
    with pytest.raises(UserError, match="no chain-of-thought"):
        bigbench.build_rows(TaskSelection(spec, "word_unscrambling"), BuildOptions(data_dir=DATA))
    zero = bigbench.build_rows(
        TaskSelection(all_specs()["bigbench"], "word_unscrambling"), BuildOptions(data_dir=DATA, prompt_type="zeroshot")
    )
    (items,) = zero.values()
    assert all(item.meta["fewshot_doc_ids"] == [] for item in items)


def _score(item, generation: str) -> dict:
    from harness.scoring import records as scoring

    spec = all_specs()["bigbench"]
    return scoring.score_generation(spec, item, generation, scoring.row_metrics(spec, [item])[0])


def test_answers_are_read_as_bigbench_reads_them():
    """Through the family and the scorer: BIG-bench's postprocess_output, then exact_str_match as is."""
    word = only_row("word_unscrambling")[0]  # default regex, target "the"
    record = _score(word, "\nthe\nQ: The word")
    assert record["extracted"] == {"answer": "the"} and record["metrics"]["exact_match"] == 1.0  # leading newline
    assert _score(word, "the. Next")["metrics"]["exact_match"] == 1.0
    assert _score(word, " the")["metrics"]["exact_match"] == 0.0  # a leading space is part of the answer
    arithmetic = only_row("modified_arithmetic/three_digit_addition_control")[0]
    assert _score(arithmetic, "\n\n" + arithmetic.targets[0] + "\n")["metrics"]["exact_match"] == 1.0
    ipa = only_row("international_phonetic_alphabet_transliterate")[0]  # stop_string "\n", no regex
    assert _score(ipa, "ju doʊnt\nIPA: next")["extracted"] == {"answer": "ju doʊnt\n"}  # the stop string stays
    assert _score(ipa, "\nju\nIPA:")["extracted"] == {"answer": "\nju\nIPA:"}  # at position 0 nothing is cut
    # BIG-bench's one max_length bounds tokens and characters alike: 256, as its HuggingFace models
    target = ipa.targets[0]
    assert len(target) == 77 and ipa.max_new_tokens == 256
    assert _score(ipa, target)["metrics"]["exact_match"] == 1.0
    assert _score(ipa, target + "x" * 300)["extracted"] == {"answer": (target + "x" * 300)[:256]}


def test_the_engine_may_stop_once_the_answer_is_settled():
    from harness.scoring import records as scoring

    spec = all_specs()["bigbench"]
    word = only_row("word_unscrambling")[0]
    settled = scoring.answer_settled(spec, word)
    assert (settled.max_length, settled.stop_string, settled.output_regex) == (256, None, r"[^\.\?\!\;\n]+")
    assert not settled.is_final("\nthe") and settled.is_final("\nthe\n")
    assert scoring.answer_settled(all_specs()["gsm8k"], word) is None  # other families decode to their stops


@pytest.mark.parametrize(
    "regex, message",
    [(r"(\d+", "is not a Python regex"), (r"(\d+)-(\d+)", "has 2 groups, BIG-bench allows one")],
)
def test_an_output_regex_bigbench_cannot_use_is_a_user_error(regex, message):
    with pytest.raises(UserError, match=message):
        bigbench.task_format({"output_regex": regex}, load_prompt("bigbench"))
    assert bigbench.task_format({"output_regex": ""}, load_prompt("bigbench")).output_regex == ""  # "" = no regex
