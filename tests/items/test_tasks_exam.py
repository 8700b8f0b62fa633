"""MMLU, C-Eval and GSM8K items: golden prompts, file positions, options, errors, and a cross-check
of contexts and continuations against lm-evaluation-harness 0.4.13 building the same tasks offline
from the committed excerpts."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.items import fewshot, registry
from harness.items.families import choice_exam
from harness.spec import BuildOptions

from conftest import FIXTURES

DATA = FIXTURES / "data"
LOCAL = BuildOptions(data_dir=DATA)


def build(name: str, opts: BuildOptions = LOCAL) -> dict:
    selection = registry.resolve(name)[0]
    return registry.family_module(selection.spec).build_rows(selection, opts)


def options(**changes) -> BuildOptions:
    return BuildOptions(data_dir=DATA, **changes)


def csv_rows(relative: str) -> list[list[str]]:
    with open(DATA / relative, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def jsonl_rows(relative: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / relative).read_text(encoding="utf-8").splitlines()]


# --- golden prompts -----------------------------------------------------------------------------

MMLU_ABSTRACT_ALGEBRA_0 = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
    "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are"
    " subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\n"
    "Answer: B\n\n"
    "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric"
    " group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n"
    "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup of"
    " an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n"
    "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\n"
    "Answer:"
)

CEVAL_HIGH_SCHOOL_MATHEMATICS_4 = (
    "以下是中国关于高中数学考试的单项选择题，请选出其中的正确答案。\n\n"
    "已知集合$A=\\{1,2,3\\}$，$B=\\{2,3,4\\}$，则$A\\cap B=$____\n"
    "A. $\\{1\\}$\nB. $\\{2,3\\}$\nC. $\\{1,2,3,4\\}$\nD. $\\{4\\}$\n答案：B\n\n"
    "函数$f(x)=x^2$在$x=3$处的导数为____\nA. 3\nB. 6\nC. 9\nD. 2\n答案：B\n\n"
    "$\\sin 30^\\circ$的值为____\nA. $\\frac{1}{2}$\nB. $\\frac{\\sqrt{2}}{2}$\nC. $\\frac{\\sqrt{3}}{2}$\nD. 1\n"
    "答案：A\n\n"
    "等差数列$\\{a_n\\}$中，$a_1=2$，公差$d=3$，则$a_5=$____\nA. 11\nB. 14\nC. 17\nD. 12\n答案：B\n\n"
    "若$\\log_2 x=3$，则$x=$____\nA. 6\nB. 9\nC. 8\nD. 5\n答案：C\n\n"
    "已知向量$a=(1,2)$，$b=(3,4)$，则$a\\cdot b=$____\nA. 10\nB. 11\nC. 7\nD. 14\n答案："
)

GSM8K_COT_0_START = (
    "Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done,"
    " there will be 21 trees. How many trees did the grove workers plant today?\n"
    "A: There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have"
    " been 21 - 15 = 6. The answer is 6.\n\n"
    "Q: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?\n"
)
GSM8K_COT_0_END = (
    "A: Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars"
    " left. 23 - 15 is 8. The answer is 8.\n\n"
    "Q: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her"
    " friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg."
    " How much in dollars does she make every day at the farmers' market?\nA:"
)

# Item 1 of gsm8k:fewshot: Random(1234)'s second draw of 5 from the 10 train rows is [0, 1, 8, 6, 2].
GSM8K_FEWSHOT_1 = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    " How many clips did Natalia sell altogether in April and May?\n"
    "Answer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\n"
    "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting."
    " How much did she earn?\n"
    "Answer: Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10\n\n"
    "Question: Alexis is applying for a new job and bought a new set of business clothes to wear to the interview."
    " She went to a department store with a budget of $200 and spent $30 on a button-up shirt, $46 on suit pants,"
    " $38 on a suit coat, $11 on socks, and $18 on a belt. She also purchased a pair of shoes, but lost the receipt"
    " for them. She has $16 left from her budget. How much did Alexis pay for the shoes?\n"
    "Answer: Let S be the amount Alexis paid for the shoes.\n"
    "She spent S + 30 + 46 + 38 + 11 + 18 = S + <<+30+46+38+11+18=143>>143.\n"
    "She used all but $16 of her budget, so S + 143 = 200 - 16 = 184.\n"
    "Thus, Alexis paid S = 184 - 143 = $<<184-143=41>>41 for the shoes.\n#### 41\n\n"
    "Question: Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas."
    " A large pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does he eat"
    " that day?\n"
    "Answer: He eats 32 from the largest pizzas because 2 x 16 = <<2*16=32>>32\n"
    "He eats 16 from the small pizza because 2 x 8 = <<2*8=16>>16\n"
    "He eats 48 pieces because 32 + 16 = <<32+16=48>>48\n#### 48\n\n"
    "Question: Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs."
    " Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents."
    " How much more money does Betty need to buy the wallet?\n"
    "Answer: In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n"
    "Betty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\n"
    "This means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5\n\n"
    "Question: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it"
    " take?\nAnswer:"
)

GSM8K_ZEROSHOT_COT_1 = (
    "Q: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?\n"
    "A: Let's think step by step."
)


def test_golden_mmlu():
    item = build("mmlu:abstract_algebra")["mmlu:abstract_algebra"][0]
    assert item.context == MMLU_ABSTRACT_ALGEBRA_0
    assert item.choices == (" A", " B", " C", " D")
    assert item.gold == 1  # B
    assert item.meta == {"subject": "abstract_algebra"}


def test_golden_ceval():
    item = build("ceval:high_school_mathematics")["ceval:high_school_mathematics"][4]
    assert item.context == CEVAL_HIGH_SCHOOL_MATHEMATICS_4
    assert item.choices == ("A", "B", "C", "D")  # no leading space after "答案："
    assert item.gold == 1  # B


def test_golden_gsm8k_cot():
    item = build("gsm8k")["gsm8k"][0]
    assert item.context.startswith(GSM8K_COT_0_START)
    assert item.context.endswith(GSM8K_COT_0_END)
    assert len(item.context) == 2427
    assert item.context.count("\n\nQ: ") == 8  # 8 exemplars, then the item
    assert item.targets == ("18",)
    assert item.stop == ("Q:", "</s>", "<|im_end|>")
    assert item.max_new_tokens == 256


def test_golden_gsm8k_fewshot():
    item = build("gsm8k:fewshot")["gsm8k:fewshot"][1]
    assert item.context == GSM8K_FEWSHOT_1
    assert item.meta["fewshot_doc_ids"] == [0, 1, 8, 6, 2]
    assert item.targets == ("3",)
    assert item.stop == ("Question:", "</s>", "<|im_end|>")


def test_golden_gsm8k_zeroshot_cot():
    item = build("gsm8k:zeroshot_cot")["gsm8k:zeroshot_cot"][1]
    assert item.context == GSM8K_ZEROSHOT_COT_1
    assert item.targets == ("3",)
    assert item.stop == ("Q:", "</s>", "<|im_end|>")


# --- positions, limit, shots ---------------------------------------------------------------------


def test_mmlu_doc_id_is_the_row_of_the_test_file():
    items = build("mmlu:anatomy")["mmlu:anatomy"]
    rows = csv_rows("mmlu/test/anatomy_test.csv")
    assert [i.doc_id for i in items] == list(range(len(rows))) == list(range(6))
    for item, row in zip(items, rows):
        assert item.task == "mmlu:anatomy"
        assert item.context.endswith(f"\n\n{row[0].strip()}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer:")
        assert item.gold == "ABCD".index(row[5])


def test_gsm8k_doc_id_is_the_line_of_the_test_file():
    items = build("gsm8k")["gsm8k"]
    lines = jsonl_rows("gsm8k/test.jsonl")
    assert [i.doc_id for i in items] == [0, 1, 2, 3, 4]
    assert [i.targets for i in items] == [("18",), ("3",), ("70000",), ("540",), ("20",)]
    assert all(i.solution == line["answer"] for i, line in zip(items, lines))


def test_limit_takes_the_first_items_of_each_row_unchanged():
    full, limited = build("mmlu:anatomy"), build("mmlu:anatomy", options(limit=2))
    assert limited == {"mmlu:anatomy": full["mmlu:anatomy"][:2]}
    # The random sampler draws item by item, so the first items keep their exemplars.
    full, limited = build("gsm8k:fewshot"), build("gsm8k:fewshot", options(limit=3))
    assert limited["gsm8k:fewshot"] == full["gsm8k:fewshot"][:3]


def test_zero_shots_leave_the_description_and_the_item():
    for opts in (options(num_fewshot=0), options(prompt_type="zeroshot")):
        item = build("mmlu:anatomy", opts)["mmlu:anatomy"][2]
        assert item.context == (
            "The following are multiple choice questions (with answers) about anatomy.\n\n"
            "Which of the following best describes the structure that collects urine in the body?\n"
            "A. Bladder\nB. Kidney\nC. Ureter\nD. Urethra\nAnswer:"
        )
    item = build("ceval:computer_network", options(num_fewshot=0))["ceval:computer_network"][5]
    assert item.context == (
        "以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n"
        "IPv6地址的长度为____位。\nA. 32\nB. 64\nC. 128\nD. 256\n答案："
    )
    item = build("gsm8k", options(prompt_type="zeroshot"))["gsm8k"][1]
    assert item.context == (
        "Q: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it"
        " take?\nA:"
    )


def test_num_fewshot_takes_the_first_cot_exemplars():
    item = build("gsm8k", options(num_fewshot=2))["gsm8k"][0]
    assert item.context.startswith(GSM8K_COT_0_START)
    assert item.context.count("\n\nQ: ") == 2
    assert item.context.endswith("The answer is 5.\n\n" + GSM8K_COT_0_END.split("\n\n", 1)[1])


def test_more_shots_than_exemplars_is_a_user_error():
    with pytest.raises(UserError, match=r"9 shots asked but only 8 exemplars"):
        build("gsm8k", options(num_fewshot=9))
    with pytest.raises(UserError, match=r"mmlu:anatomy: 6 shots asked but the dev split has 5 items"):
        build("mmlu:anatomy", options(num_fewshot=6))


def test_mmlu_strips_the_question_but_not_the_choices(tmp_path):
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
    (tmp_path / "mmlu/test/anatomy_test.csv").write_text('"  Why?\n",a ,b,c,d,A\n', encoding="utf-8")
    (tmp_path / "mmlu/dev/anatomy_dev.csv").write_text("", encoding="utf-8")
    item = build("mmlu:anatomy", BuildOptions(data_dir=tmp_path, num_fewshot=0))["mmlu:anatomy"][0]
    assert item.context.endswith("anatomy.\n\nWhy?\nA. a \nB. b\nC. c\nD. d\nAnswer:")


def test_mmlu_builds_one_row_per_subject_in_order(tmp_path):
    subjects = registry.all_specs()["mmlu"].options["subjects"]
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        for subject in subjects:
            shutil.copy(DATA / f"mmlu/{split}/anatomy_{split}.csv", tmp_path / f"mmlu/{split}/{subject}_{split}.csv")
    rows = build("mmlu", BuildOptions(data_dir=tmp_path, limit=1))
    assert list(rows) == [f"mmlu:{s}" for s in sorted(subjects)]
    assert len(rows) == 57
    assert rows["mmlu:high_school_us_history"][0].context.startswith(
        "The following are multiple choice questions (with answers) about high school us history.\n\n"
    )
    assert rows["mmlu:virology"][0].task == "mmlu:virology"


# --- errors --------------------------------------------------------------------------------------


def test_unknown_subject_lists_the_subjects():
    with pytest.raises(UserError) as err:
        build("mmlu:astrology")
    message = str(err.value)
    assert message.startswith("unknown mmlu subject 'astrology'; known subjects: abstract_algebra, anatomy, astronomy,")
    assert message.endswith("virology, world_religions")
    with pytest.raises(UserError, match=r"known subjects: computer_network, high_school_mathematics$"):
        build("ceval:accountant")


def test_missing_data_files_name_the_files_and_the_layout(tmp_path):
    with pytest.raises(UserError) as err:
        build("mmlu")  # the excerpts hold 2 of the 57 subjects
    root = DATA / "mmlu"
    assert str(err.value) == (
        f"missing 110 of 114 data files: {root}/test/astronomy_test.csv, {root}/dev/astronomy_dev.csv,"
        f" {root}/test/business_ethics_test.csv (+107 more);"
        " --data-dir DIR expects mmlu/{dev,val,test}/<subject>_{dev,val,test}.csv (headerless CSV as released)"
    )
    with pytest.raises(UserError, match=r"missing 2 of 2 data files: .*gsm8k/test.jsonl, .*gsm8k/train.jsonl; --data-dir"):
        build("gsm8k:fewshot", BuildOptions(data_dir=tmp_path))
    with pytest.raises(UserError, match=r"missing 1 of 1 data files: .*ceval/subject_mapping.json; --data-dir DIR"):
        build("ceval", BuildOptions(data_dir=tmp_path))


# --- specs ---------------------------------------------------------------------------------------


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def test_specs_match_the_lm_eval_task_lists():
    specs = registry.all_specs()
    mmlu, ceval = specs["mmlu"], specs["ceval"]
    lm_mmlu = sorted(p.stem.removeprefix("mmlu_") for p in (lm_eval_tasks_dir() / "mmlu/default").glob("mmlu_*.yaml"))
    assert mmlu.options["subjects"] == lm_mmlu and len(lm_mmlu) == 57
    lm_ceval = sorted(p.stem.removeprefix("ceval-valid_") for p in (lm_eval_tasks_dir() / "ceval").glob("ceval-valid_*.yaml"))
    assert sorted(ceval.options["subjects"]) == lm_ceval and len(lm_ceval) == 52
    assert ceval.options["subjects"]["computer_network"] == "计算机网络"
    for spec in (mmlu, ceval):
        assert spec.metrics == ("acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score")
        assert (spec.primary_metric, spec.output_type, spec.prompt_type, spec.num_fewshot) == ("acc", "multiple_choice", "fewshot", 5)
        assert spec.has_subtasks
    assert (mmlu.split, mmlu.fewshot_split, mmlu.hub_path) == ("test", "dev", "cais/mmlu")
    assert (ceval.split, ceval.fewshot_split, ceval.hub_path) == ("val", "dev", "ceval/ceval-exam")
    assert choice_exam.subtasks(ceval, LOCAL) == ["computer_network", "high_school_mathematics"]
    assert len(choice_exam.subtasks(ceval, BuildOptions())) == 52
    expected = {"gsm8k": ("gsm8k_cot_strict", 8, "cot"), "gsm8k:fewshot": ("gsm8k_hash_strict", 5, "fewshot"),
                "gsm8k:zeroshot_cot": ("gsm8k_cot_strict", 0, "cot")}
    for name, (extractor, shots, prompt_type) in expected.items():
        spec = specs[name]
        assert (spec.extractor, spec.num_fewshot, spec.prompt_type) == (extractor, shots, prompt_type)
        assert spec.scorer == "gsm8k_exact_match"
        assert spec.metrics == ("exact_match_strict", "exact_match_flexible", "exact_match_numeric")
        assert (spec.primary_metric, spec.output_type, spec.max_new_tokens) == ("exact_match_strict", "generate", 256)
        assert (spec.hub_path, spec.hub_name, spec.split) == ("openai/gsm8k", "main", "test")


# --- cross-check with lm-evaluation-harness 0.4.13 -----------------------------------------------


def lm_eval_instances(
    task_yaml: str, dataset_path: str, data_files: dict, tmp_path: Path, limit: int | None = None, **config
) -> list:
    """Requests lm-eval builds for one of its own task YAMLs, its data swapped for local files."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(lm_eval_tasks_dir() / task_yaml)
    cfg.update(dataset_path=dataset_path, dataset_name=None, **config)
    cfg["dataset_kwargs"] = {"data_files": data_files, "cache_dir": str(tmp_path / "datasets_cache")}
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(1234)  # lm-eval's default fewshot_random_seed
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task.instances


def by_doc(instances) -> dict[int, list]:
    grouped: dict[int, list] = {}
    for inst in instances:
        grouped.setdefault(inst.doc_id, []).append(inst)
    return grouped


@pytest.mark.parametrize("subject", ["anatomy", "abstract_algebra"])
def test_mmlu_equals_lm_eval(subject, tmp_path):
    files = {}
    for split in ("test", "dev"):  # cais/mmlu's columns, written independently of harness.items.sources
        rows = csv_rows(f"mmlu/{split}/{subject}_{split}.csv")
        frame = pd.DataFrame(
            {"question": [r[0] for r in rows], "subject": subject, "choices": [r[1:5] for r in rows], "answer": ["ABCD".index(r[5]) for r in rows]}
        )
        files[split] = str(tmp_path / f"{split}.parquet")
        frame.to_parquet(files[split], index=False)
    instances = by_doc(lm_eval_instances(f"mmlu/default/mmlu_{subject}.yaml", "parquet", files, tmp_path, num_fewshot=5))
    items = build(f"mmlu:{subject}")[f"mmlu:{subject}"]
    assert sorted(instances) == [i.doc_id for i in items]
    for item in items:
        assert [inst.arguments for inst in instances[item.doc_id]] == [(item.context, c) for c in item.choices]
        assert instances[item.doc_id][0].doc["answer"] == item.gold


GSM8K_FILES = {"train": str(DATA / "gsm8k/train.jsonl"), "test": str(DATA / "gsm8k/test.jsonl")}


@pytest.mark.parametrize(
    ("lm_eval_yaml", "ours", "changes"),
    [
        ("gsm8k/gsm8k-cot.yaml", "gsm8k", {}),
        ("gsm8k/gsm8k.yaml", "gsm8k:fewshot", {}),  # lm-eval's default (random) sampler
        ("gsm8k/gsm8k.yaml", "gsm8k:fewshot", {"limit": 2}),
        ("gsm8k/gsm8k-cot-zeroshot.yaml", "gsm8k:zeroshot_cot", {}),
        ("gsm8k/gsm8k-cot-zeroshot.yaml", "gsm8k:zeroshot_cot", {"num_fewshot": 3}),
    ],
)
def test_gsm8k_equals_lm_eval(lm_eval_yaml, ours, changes, tmp_path):
    instances = lm_eval_instances(lm_eval_yaml, "json", GSM8K_FILES, tmp_path, **changes)
    items = build(ours, options(**changes))[ours]
    assert len(instances) == len(items) == changes.get("limit", 5)
    for inst, item in zip(instances, items):
        context, generation = inst.arguments
        assert (inst.doc_id, context) == (item.doc_id, item.context)
        assert tuple(generation["until"]) == item.stop
        assert item.targets == (inst.doc["answer"].split("####")[-1].strip(),)


def test_random_draw_equals_lm_eval_sampler_when_the_item_is_in_the_pool():
    from lm_eval.api.samplers import ContextSampler

    pool = [{"q": i % 7} for i in range(12)]  # duplicates: the item can be drawn twice
    ours, theirs = random.Random(1234), ContextSampler(list(pool), rnd=1234)
    for doc in pool:
        picked = fewshot.lm_eval_random_draw(ours, pool, 4, eval_doc=doc)
        assert [pool[i] for i in picked] == list(theirs.sample(4, eval_doc=doc))
        assert doc not in [pool[i] for i in picked]
    assert [pool[i] for i in fewshot.lm_eval_random_draw(ours, pool, 3)] == list(theirs.sample(3))
