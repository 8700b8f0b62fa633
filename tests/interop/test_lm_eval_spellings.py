"""lm-evaluation-harness habits accepted as they are written: its task names where the task is ours,
"did you mean" for a near miss, ``--model_args``, underscore flags and ``--batch_size auto:N``."""

from __future__ import annotations

import pytest

from harness.cli import build_parser, lm_eval_spellings, main
from harness.errors import UserError
from harness.items.registry import lm_eval_alias, resolve

from conftest import FIXTURES


@pytest.mark.parametrize("theirs, ours", [
    ("mmlu_abstract_algebra", "mmlu:abstract_algebra"),
    ("mmlu_high_school_us_history", "mmlu:high_school_us_history"),
    ("ceval-valid_law", "ceval:law"),
    ("bigbench_modified_arithmetic_generate_until", "bigbench:modified_arithmetic"),
])
def test_lm_eval_task_names_resolve_to_ours(theirs, ours):
    assert lm_eval_alias(theirs) == ours
    assert [s.label for s in resolve(theirs)] == [ours]


def test_our_names_win_over_the_alias_rule():
    # mmlu_pythia_v0 is a task of ours, not MMLU's subject "pythia_v0"
    assert [s.label for s in resolve("mmlu_pythia_v0,mmlu_pythia_v0:anatomy,gsm8k")] == [
        "mmlu_pythia_v0", "mmlu_pythia_v0:anatomy", "gsm8k"]
    assert lm_eval_alias("gsm8k") is None and lm_eval_alias("mmlu_") is None


@pytest.mark.parametrize("typo, suggestion", [("hellaswg", "hellaswag"), ("gsm8kk", "gsm8k"), ("winogrand", "winogrande")])
def test_a_near_miss_gets_did_you_mean(typo, suggestion):
    with pytest.raises(UserError, match=f"did you mean {suggestion}"):
        resolve(typo)


def test_an_lm_eval_subject_that_does_not_exist_is_refused_with_the_subjects():
    from harness.items.rows import build_task_rows
    from harness.spec import BuildOptions

    with pytest.raises(UserError, match="abstract_algebra"):
        build_task_rows(resolve("mmlu_abstract_algebr"), BuildOptions(data_dir=FIXTURES / "data", limit=1))


def test_model_args_and_underscore_flags_become_our_flags():
    argv = lm_eval_spellings(["eval", "--model_args", "pretrained=EleutherAI/pythia-70m,revision=step1000,dtype=float32,"
                              "trust_remote_code=False,add_bos_token=True", "--tasks", "mmlu_anatomy",
                              "--num_fewshot", "0", "--batch_size", "auto:4", "--data_dir=data"])
    args = build_parser().parse_args(argv)
    assert (args.model, args.revision, args.dtype) == ("EleutherAI/pythia-70m", "step1000", "float32")
    assert args.trust_remote_code is False and args.add_bos_token is True
    assert (args.num_fewshot, args.batch_size, str(args.data_dir)) == (0, "auto", "data")
    assert lm_eval_spellings(["eval", "--model_args=pretrained=m"]) == ["eval", "--model", "m"]


@pytest.mark.parametrize("model_args, words", [
    ("pretrained=m,max_length=2048", "max_length=2048"),
    ("pretrained=m,parallelize", "parallelize"),
    ("pretrained=m,trust_remote_code=maybe", "True or False"),
])
def test_model_args_we_do_not_map_are_one_line_errors(model_args, words, capsys):
    assert main(["eval", "--model_args", model_args, "--tasks", "mmlu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "--model" in err and "Traceback" not in err


def test_a_bad_batch_size_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["eval", "--model", "m", "--tasks", "mmlu", "--batch_size", "auto:x"])
    assert exit_.value.code == 2
