"""Answer extraction: golden cases by hand, and lm-eval 0.4.13's own filters and metric as the reference."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from harness.items.families.gsm8k import final_answer
from harness.scoring.extraction import (
    BIGBENCH_DEFAULT_OUTPUT_REGEX,
    GSM8K_REGEXES_TO_IGNORE,
    bigbench_exact_match,
    bigbench_numeric_match,
    bigbench_postprocess,
    gsm8k_flexible,
    gsm8k_hash_answer,
    gsm8k_strict,
    lm_eval_exact_match,
    numeric_equal,
)

# --- GSM8K, by hand --------------------------------------------------------------------------


def test_dollar_thousands():
    text = "She pays $1,000.00 in total"
    assert gsm8k_flexible(text) == "$1,000.00"
    # lm-eval's metric removes "," and "$" but keeps ".00": "1000.00" != "1000".
    assert lm_eval_exact_match(gsm8k_flexible(text), "1000") is False
    assert numeric_equal(gsm8k_flexible(text), "1000") is True


def test_negative_numbers():
    assert gsm8k_strict("The answer is -3.") == "-3"
    assert gsm8k_flexible("It went from 4 to -3 degrees") == "-3"
    assert numeric_equal("-5", "-5.0") is True
    assert numeric_equal("-5", "5") is False


def test_no_number_is_invalid():
    assert gsm8k_strict("I do not know.") == "[invalid]"
    assert gsm8k_flexible("I do not know.") == "[invalid]"
    assert gsm8k_hash_answer("I do not know.") == "[invalid]"
    assert numeric_equal("[invalid]", "0") is False


def test_thousands_separator_with_final_period():
    # Greedy "[0-9.,]+" first takes "1,234." and then the pattern's final "." (any character)
    # has nothing left to match, so the group backs off to "1,234".
    assert gsm8k_strict("The answer is 1,234.") == "1,234"
    assert lm_eval_exact_match("1,234", "1234") is True
    assert numeric_equal("1,234", "1234") is True


def test_flexible_takes_the_last_number():
    text = "Natalia sold 48 clips in April and 48 / 2 = 24 in May, so 48 + 24 = 72 altogether."
    assert gsm8k_flexible(text) == "72"
    # A lone digit only matches the second alternative: findall gives ('', '7').
    assert gsm8k_flexible("12 apples, then 7") == "7"


def test_trailing_period():
    # The flexible pattern's character class includes ".", so a sentence-final period is kept...
    assert gsm8k_flexible("So the total is 18.") == "18."
    # ...and the metric's r"\.$" (and numeric_equal) remove it.
    assert lm_eval_exact_match("18.", "18") is True
    assert numeric_equal("18.", "18") is True
    # The strict pattern's unescaped final "." eats the period when the number ends the text...
    assert gsm8k_strict("The answer is 18.") == "18"
    # ...but when nothing follows, it eats the number's last digit instead.
    assert gsm8k_strict("The answer is 12.5") == "12."


def test_hash_answer_and_target():
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert final_answer(answer) == "72"
    assert gsm8k_hash_answer(answer) == "72"
    assert gsm8k_hash_answer("#### -1,000 and #### 5") == "-1,000"
    assert final_answer("no hashes here ") == "no hashes here"
    # The metric's r"(?s).*#### " strips a 5-shot style continuation down to its answer.
    assert lm_eval_exact_match("work...\n#### 72", "72") is True


def test_numeric_equal_rejects_non_numbers():
    assert numeric_equal("$1,000.00", "1000") is True
    assert numeric_equal(" 3.50 ", "3.5") is True
    assert numeric_equal("1e3", "1000") is True
    for text in ("nan", "inf", "1_000", "12 apples", "", "."):
        assert numeric_equal(text, text) is False, text


# --- GSM8K, against lm-eval itself ------------------------------------------------------------

CROSS_CHECK_TEXTS = [
    "There are 15 trees originally. 21 - 15 = 6. The answer is 6.",
    "The answer is $1,000.00.",
    "The answer is -3.",
    "I have no idea.",
    "The answer is 1,234. Q: next question",
    "So 3 + 4 = 7 and 7 * 2 = 14 dollars.",
    "The answer is 5\n\nQ: How many? A: The answer is 7.",
    "Total: 12.5. The answer is 12.5",
    "#### 42",
    "The answer is .",
    "-7 apples and -8 pears",
    "a 1 b",
    "it costs $5",
    "Step 1: 2,000 - 1,500 = 500.\n#### 500",
    "",
]


def _lm_eval_filter_list(task_file: str) -> dict[str, list[dict]]:
    config = yaml.safe_load(resources.files("lm_eval.tasks.gsm8k").joinpath(task_file).read_text())
    return {entry["name"]: entry["filter"] for entry in config["filter_list"]}


def _apply_lm_eval_filters(steps: list[dict], text: str) -> str:
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    filters = {"regex": RegexFilter, "take_first": TakeFirstFilter}
    responses = [[text]]
    for step in steps:
        kwargs = {k: v for k, v in step.items() if k != "function"}
        responses = filters[step["function"]](**kwargs).apply(responses, [{}])
    return list(responses)[0]


def test_gsm8k_cot_filters_equal_lm_eval_regex_filter():
    filter_list = _lm_eval_filter_list("gsm8k-cot.yaml")
    for text in CROSS_CHECK_TEXTS:
        assert gsm8k_strict(text) == _apply_lm_eval_filters(filter_list["strict-match"], text), text
        assert gsm8k_flexible(text) == _apply_lm_eval_filters(filter_list["flexible-extract"], text), text


def test_gsm8k_filters_equal_lm_eval_regex_filter():
    filter_list = _lm_eval_filter_list("gsm8k.yaml")
    for text in CROSS_CHECK_TEXTS:
        assert gsm8k_hash_answer(text) == _apply_lm_eval_filters(filter_list["strict-match"], text), text
        assert gsm8k_flexible(text) == _apply_lm_eval_filters(filter_list["flexible-extract"], text), text


def test_exact_match_equals_lm_eval_exact_match_hf_evaluate():
    from lm_eval.api.metrics import exact_match_hf_evaluate

    config = yaml.safe_load(resources.files("lm_eval.tasks.gsm8k").joinpath("gsm8k-cot.yaml").read_text())
    metric = config["metric_list"][0]
    assert tuple(metric["regexes_to_ignore"]) == GSM8K_REGEXES_TO_IGNORE
    pairs = [
        ("$1,000.00", "1000"),
        ("1,000", "1000"),
        ("18.", "18"),
        ("18. ", "18"),
        ("[invalid]", "72"),
        ("work\n#### 72", "72"),
        ("ABC", "abc"),
        ("-3", "3"),
        ("12.5", "12.50"),
        ("$5", "5"),
        ("5..", "5."),
    ]
    for prediction, reference in pairs:
        expected = exact_match_hf_evaluate(
            predictions=[prediction],
            references=[reference],
            regexes_to_ignore=metric["regexes_to_ignore"],
            ignore_case=metric["ignore_case"],
        )["exact_match"]
        assert lm_eval_exact_match(prediction, reference) == bool(expected), (prediction, reference)
        expected_case = exact_match_hf_evaluate(predictions=[prediction], references=[reference], regexes_to_ignore=[])
        assert lm_eval_exact_match(prediction, reference, (), ignore_case=False) == bool(expected_case["exact_match"])
    # Spot values, by hand: "," "$" removed, one trailing "." removed, case folded
    # (so "5.." → "5." but "5." → "5").
    assert [lm_eval_exact_match(p, r) for p, r in pairs] == [
        False, True, True, False, False, True, True, False, False, True, False,
    ]  # fmt: skip


# --- BIG-bench ------------------------------------------------------------------------------


# The full table against BIG-bench's postprocess_output, and the early-stop rule: test_bigbench_postprocess.py


def test_bigbench_postprocess_with_output_regex():
    # modified_arithmetic's output_regex: the first match, after any leading newlines
    assert bigbench_postprocess(" 680\n\n102 + 3", 64, None, r"[-+]?\d+") == "680"
    assert bigbench_postprocess("\n680", 64, None, r"[-+]?\d+") == "680"
    assert bigbench_postprocess("abc", 64, None, r"[-+]?\d+") == ""
    # one group: re.findall gives the group, as BIG-bench reads it
    assert bigbench_postprocess("x = 42", 64, None, r"= (\d+)") == "42"


def test_bigbench_postprocess_with_stop_string():
    # cut after the stop string, which stays
    assert bigbench_postprocess(" Paris\nQ: And Spain?", 64, "\n", None) == " Paris\n"
    assert bigbench_postprocess(" no stop here ", 64, "\n", None) == " no stop here "
    # at position 0 nothing is cut, later occurrences included
    assert bigbench_postprocess("\nParis\nQ:", 64, "\n", None) == "\nParis\nQ:"
    # the stop string first, then the regex on what is left
    assert bigbench_postprocess(" 12 then\n34", 64, "\n", r"\d+") == "12"
    assert bigbench_postprocess("abc\n34", 64, "\n", r"\d+") == ""


def test_bigbench_postprocess_default_regex():
    assert BIGBENCH_DEFAULT_OUTPUT_REGEX == r"[^\.\?\!\;\n]+"
    assert bigbench_postprocess(" Paris. It is the capital", 64, None, BIGBENCH_DEFAULT_OUTPUT_REGEX) == " Paris"
    assert bigbench_postprocess("\nParis\n", 64, None, BIGBENCH_DEFAULT_OUTPUT_REGEX) == "Paris"
    assert bigbench_postprocess("...", 64, None, BIGBENCH_DEFAULT_OUTPUT_REGEX) == ""
    # no regex given: none applied (json_task.py, not postprocess_output, supplies the default)
    assert bigbench_postprocess(" Paris. It is", 64, None, None) == " Paris. It is"


def test_bigbench_exact_match():
    assert bigbench_exact_match("680", ["680"]) is True
    assert bigbench_exact_match("680", ["681", "680"]) is True
    assert bigbench_exact_match("680", [" 680 "]) is False  # exact_str_match strips nothing
    assert bigbench_exact_match("Paris", ["paris"]) is False
    assert bigbench_exact_match("", ["0"]) is False


def test_bigbench_numeric_match():
    assert bigbench_numeric_match("105", ["100"]) is True  # |105-100|/100 = 0.05
    assert bigbench_numeric_match("110", ["100"]) is True  # 10/100 = 0.1 ≤ 0.1
    assert bigbench_numeric_match("111", ["100"]) is False  # 0.11
    assert bigbench_numeric_match("-105", ["-100"]) is True  # 5/|-100| = 0.05
    # BIG-bench: (50 - -100) / -100 = -1.5 ≤ 0.1 would count; with |target| it is 1.5.
    assert bigbench_numeric_match("50", ["-100"]) is False
    assert bigbench_numeric_match("0.05", ["0"]) is True  # absolute error for a zero target
    assert bigbench_numeric_match("0.2", ["0"]) is False
    assert bigbench_numeric_match("abc", ["1"]) is False
    assert bigbench_numeric_match("1", ["abc"]) is False
    assert bigbench_numeric_match("12", ["10"], rel_error=0.25) is True
    assert bigbench_numeric_match("12", ["10", "12"]) is False  # only the first target counts
    with pytest.raises(ValueError):
        bigbench_numeric_match("1", [])
