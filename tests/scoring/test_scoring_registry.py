"""Scoring names in tasks/*.yaml → the one registry (harness.scoring.registry), and the direction of
flow: nothing downstream of the items (scoring, engine, runs) imports a task family or asks which
family built an item."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.items import registry as tasks
from harness.requests import Item
from harness.scoring import companions, extraction, records, registry

ROOT = Path(__file__).resolve().parents[2] / "harness"
DOWNSTREAM = ("scoring", "engine", "runs")
GENERATIVE = [spec for spec in tasks.all_specs().values() if spec.output_type == "generate"]


def test_every_generative_task_names_its_scoring():
    assert {spec.name for spec in GENERATIVE} >= {"gsm8k", "gsm8k:fewshot", "bigbench", "triviaqa", "nlpcc_kbqa", "gsm8k_zh"}
    for spec in GENERATIVE:
        assert spec.extractor and spec.scorer and spec.gold_continuation, spec.name


@pytest.mark.parametrize("spec", GENERATIVE, ids=[spec.name for spec in GENERATIVE])
def test_each_yaml_named_entry_resolves(spec):
    rules = registry.generation_rules(spec)
    assert rules.scorer is registry.SCORERS[spec.scorer]
    assert rules.extractor is registry.EXTRACTORS[spec.extractor]
    assert rules.gold_continuation is registry.GOLD_CONTINUATIONS[spec.gold_continuation]


def test_every_registered_entry_is_named_by_a_task():
    # an entry no task names is dead code (or a task that lost its name)
    assert set(registry.SCORERS) == {spec.scorer for spec in GENERATIVE}
    assert set(registry.EXTRACTORS) == {spec.extractor for spec in GENERATIVE}
    assert set(registry.GOLD_CONTINUATIONS) == {spec.gold_continuation for spec in GENERATIVE}


def test_tasks_that_are_not_generative_name_none():
    for spec in tasks.all_specs().values():
        if spec.output_type != "generate":
            assert (spec.extractor, spec.scorer, spec.gold_continuation) == (None, None, None), spec.name


@pytest.mark.parametrize(
    "field, table", [("scorer", registry.SCORERS), ("extractor", registry.EXTRACTORS), ("gold_continuation", registry.GOLD_CONTINUATIONS)]
)
def test_an_unknown_name_is_a_one_line_error_listing_the_known_ones(field, table):
    spec = dataclasses.replace(tasks.all_specs()["triviaqa"], **{field: "no_such_thing"})
    with pytest.raises(UserError) as error:
        registry.generation_rules(spec)
    message = str(error.value)
    assert "\n" not in message
    assert "triviaqa" in message and "'no_such_thing'" in message and field in message
    assert all(name in message for name in table)


def test_a_generative_task_without_a_scorer_says_what_to_add():
    spec = dataclasses.replace(tasks.all_specs()["triviaqa"], scorer=None)
    with pytest.raises(UserError, match=r"names no scorer; add 'scorer: <name>'.*triviaqa_exact_match") as error:
        records.score_generation(spec, Item(task="t", doc_id=0, context="Q:", targets=("a",)), "a", ("exact_match",))
    assert "\n" not in str(error.value)


def test_an_unknown_name_fails_before_anything_is_generated():
    # the engine's requests need the gold continuation and the settled rule: both resolve all three names
    spec = dataclasses.replace(tasks.all_specs()["bigbench"], scorer="bigbench_typo")
    item = Item(task="b", doc_id=0, context="Q: ", targets=("2",), max_new_tokens=4)
    with pytest.raises(UserError, match="bigbench_typo"):
        companions.gold_continuation(spec, item)
    with pytest.raises(UserError, match="bigbench_typo"):
        records.answer_settled(spec, item)


def test_the_extractor_decides_when_decoding_may_stop():
    item = Item(task="b", doc_id=0, context="Q: ", targets=("2",), max_new_tokens=8, output_regex=r"\d+")
    specs = tasks.all_specs()
    assert records.answer_settled(specs["bigbench"], item) == extraction.BigbenchAnswer(8, None, r"\d+")
    assert records.answer_settled(specs["gsm8k"], item) is None
    assert records.answer_settled(specs["triviaqa"], item) is None


def test_the_same_family_is_scored_by_what_its_spec_names():
    # gsm8k and gsm8k:fewshot share a family; only their names tell the strict answer apart
    specs = tasks.all_specs()
    item = Item(task="g", doc_id=0, context="Q:", targets=("5",), solution="2 + 3 = 5\n#### 5", max_new_tokens=8)
    text = "The answer is 5.\n#### 4"
    cot = records.score_generation(specs["gsm8k"], item, text, ("exact_match_strict",))
    hashed = records.score_generation(specs["gsm8k:fewshot"], item, text, ("exact_match_strict",))
    assert (cot["extracted"]["strict"], cot["metrics"]["exact_match_strict"]) == ("5", 1.0)
    assert (hashed["extracted"]["strict"], hashed["metrics"]["exact_match_strict"]) == ("4", 0.0)
    assert companions.gold_continuation(specs["gsm8k"], item).final_answer == " The answer is 5."
    assert companions.gold_continuation(specs["gsm8k:fewshot"], item).final_answer == "#### 5"
    assert companions.gold_continuation(specs["gsm8k_zh"], item).texts == ("2 + 3 = 5\n#### 5",)


def _downstream_modules() -> list[Path]:
    files = [path for stage in DOWNSTREAM for path in sorted((ROOT / stage).rglob("*.py"))]
    assert len(files) > 10
    return files


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            # importlib.import_module("harness.items.families.x") and the like
            names += [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
    return names


@pytest.mark.parametrize("path", _downstream_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_downstream_imports_a_task_family(path):
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    reaching_back = [name for name in imported if name.startswith("harness.items.families")]
    assert not reaching_back, f"{path.relative_to(ROOT)} imports {reaching_back}: name a scorer/extractor in tasks/*.yaml instead"


@pytest.mark.parametrize("path", sorted((ROOT / "scoring").rglob("*.py")), ids=lambda p: p.name)
def test_scoring_never_looks_a_family_up(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    by_family = [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("family", "family_module")
    ]
    assert not by_family, f"{path.name} lines {by_family} decide by task family: look the spec's named entry up instead"
