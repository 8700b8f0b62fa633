"""The Chinese tasks: C3 and CLUEWSC2020 (OpenCompass's ppl prompts), NLPCC-KBQA (our prompt,
exact match), and the user-supplied ClozeT and GSM8K-Chinese: golden prompts, a cross-check against
OpenCompass's data loaders and template rendering transcribed independently, errors, the CLI, and a
run on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import cli
from harness.errors import UserError
from harness.items import registry, sources
from harness.items.families import nlpcc_kbqa
from harness.requests import Item
from harness.scoring import companions
from harness.scoring import records as scoring
from harness.spec import BuildOptions

from conftest import FIXTURES, evaluate_tiny

DATA = FIXTURES / "data"
USER = FIXTURES / "user_tasks"
TASK_FILES = (("clozet", str(USER / "clozet.jsonl")), ("gsm8k_zh", str(USER / "gsm8k_zh.jsonl")))
LOCAL = BuildOptions(data_dir=DATA, task_files=TASK_FILES)


def build(name: str, opts: BuildOptions = LOCAL) -> list[Item]:
    selection = registry.resolve(name)[0]
    (items,) = registry.family_module(selection.spec).build_rows(selection, opts).values()
    return items


# --- C3 -------------------------------------------------------------------------------------------

C3_SHOTS = (
    "文章：男：你喝茶还是喝咖啡？ 女：喝茶吧。\n问题：女的要喝什么?\n答案：茶\n"
    "文章：女：明天会下雨吗？ 男：天气预报说是晴天。\n问题：明天天气怎么样?\n答案：晴天\n"
    "文章：男：你的车呢？ 女：送去修了，今天坐公共汽车来的。\n问题：女的今天怎么来的?\n答案：坐公共汽车\n"
    "文章：这家饭馆的饺子很有名，每到周末都要排队。\n问题：这家饭馆什么有名?\n答案：饺子\n"
    "文章：这家饭馆的饺子很有名，每到周末都要排队。\n问题：周末人多吗?\n答案：多\n"
)


def test_c3_golden_prompt_and_canonical_order():
    items = build("c3")
    assert [item.meta["document"] for item in items] == [
        "c3-d-dev.json:t-d-1", "c3-d-dev.json:t-d-2", "c3-d-dev.json:t-d-2", "c3-m-dev.json:t-m-1", "c3-m-dev.json:t-m-1",
    ]
    assert [item.doc_id for item in items] == [0, 1, 2, 3, 4]
    item = items[1]
    assert item.context == C3_SHOTS + "文章：女：这件衣服多少钱？ 男：一百块，打八折。 女：那我买两件。\n问题：一件衣服打折后多少钱?\n答案："
    assert item.choices == ("八十块", "一百块", "二十块") and item.gold == 0  # 3 choices: not padded
    assert items[4].choices == ("很累", "让人有精神") and items[4].gold == 1
    zero = build("c3", BuildOptions(data_dir=DATA, num_fewshot=0))
    assert zero[0].context == "文章：男：今天下午你有空吗？ 女：有空，我们去图书馆吧。\n问题：他们下午要去哪儿?\n答案："
    assert "fewshot_source" not in zero[0].meta and items[0].meta["fewshot_source"] == "first 5 questions of train"


def opencompass_c3(path: Path) -> list[tuple[list[str], int]]:
    """Transcribed from OpenCompass: datasets/c3.py C3Dataset.load (content, padding to 4 choices with
    the first) and CLUE_C3_ppl_588820's rounds joined by "\\n" (models/base.py, no meta template)."""
    rows = []
    for document in json.loads(path.read_text(encoding="utf-8")):
        content_str = " ".join(["".join(paragraph) for paragraph in document[0]])
        for question in document[1]:
            label = question["choice"].index(question["answer"])
            choices = question["choice"] + [question["choice"][0]] * (4 - len(question["choice"]))
            human = f"文章：{content_str}\n问题：{question['question']}"
            rows.append(([human + "\n" + f"答案：{choice}" for choice in choices], label))
    return rows


def test_c3_equals_opencompass_strings():
    expected = opencompass_c3(DATA / "c3" / "c3-d-dev.json") + opencompass_c3(DATA / "c3" / "c3-m-dev.json")
    items = build("c3", BuildOptions(data_dir=DATA, num_fewshot=0))
    assert len(items) == len(expected)
    for item, (strings, label) in zip(items, expected):
        assert item.gold == label
        # OpenCompass pads to four with copies of the first choice; the real choices come first
        assert [item.context + choice for choice in item.choices] == strings[: len(item.choices)]
        assert set(strings[len(item.choices):]) <= {item.context + item.choices[0]}


# --- CLUEWSC2020 ----------------------------------------------------------------------------------


def opencompass_cluewsc(path: Path) -> list[tuple[list[str], int]]:
    """Transcribed from OpenCompass: datasets/cluewsc.py CluewscDataset (answer = label == "true") and
    FewCLUE_cluewsc_ppl_868415's template {0: ...否, 1: ...是}, rounds joined by "\\n"."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        example = json.loads(line)
        human = "{text}\n此处，代词“{span2}“被用于指代“{span1}“吗?".format(
            text=example["text"], span2=example["target"]["span2_text"], span1=example["target"]["span1_text"]
        )
        rows.append(([human + "\n" + "否", human + "\n" + "是"], 1 if example["label"] == "true" else 0))
    return rows


def test_cluewsc_golden_prompt_and_opencompass_strings():
    items = build("cluewsc2020")
    assert items[0].context == "小王把书借给了小李，因为他已经读完了。\n此处，代词“他“被用于指代“小王“吗?\n"
    assert items[0].choices == ("否", "是")
    assert [item.gold for item in items] == [1, 0, 0]
    for item, (strings, label) in zip(items, opencompass_cluewsc(DATA / "cluewsc2020" / "dev.json")):
        assert [item.context + choice for choice in item.choices] == strings and item.gold == label
    with pytest.raises(UserError, match="cluewsc2020 is zero-shot"):
        build("cluewsc2020", BuildOptions(data_dir=DATA, num_fewshot=2))


def test_clue_data_errors(tmp_path):
    with pytest.raises(UserError, match=r"c3 is read from local files only \(no Hub copy\); --data-dir DIR expects c3/"):
        build("c3", BuildOptions())
    with pytest.raises(UserError, match=r"missing 2 of 2 data files: .*c3-d-dev.json, .*c3-m-dev.json; --data-dir DIR expects"):
        build("c3", BuildOptions(data_dir=tmp_path))
    (tmp_path / "cluewsc2020").mkdir()
    (tmp_path / "cluewsc2020" / "dev.json").write_text('{"text": "x", "label": "maybe"}', encoding="utf-8")
    with pytest.raises(UserError, match=r"dev.json:1: expected a CLUEWSC2020 row with label true/false"):
        build("cluewsc2020", BuildOptions(data_dir=tmp_path))


# --- NLPCC-KBQA -----------------------------------------------------------------------------------


def test_nlpcc_reader_and_golden_prompt():
    records = nlpcc_kbqa.read_kbqa(DATA / "nlpcc_kbqa" / "nlpcc-iccpol-2016.kbqa.testing-data")
    assert records[2] == {"id": 3, "question": "珠穆朗玛峰有多高？", "triple": "珠穆朗玛峰 ||| 海拔 ||| 8848米", "answer": "8848米"}
    items = build("nlpcc_kbqa")
    assert items[1].context == (
        "问题：长江的长度是多少？\n答案：6300公里\n\n"
        "问题：《静夜思》的作者是谁？\n答案：李白\n\n"  # the trailing space of the question is dropped
        "问题：北京大学是哪一年创办的？\n答案：1898年\n\n"
        "问题：熊猫主要吃什么？\n答案：竹子\n\n"
        "问题：太阳系中最大的行星是哪个？\n答案：木星\n\n"
        "问题：《红楼梦》的作者是谁？\n答案："
    )
    assert items[1].targets == ("曹雪芹",) and items[1].stop == ("\n",) and items[1].max_new_tokens == 32
    assert build("nlpcc_kbqa", BuildOptions(data_dir=DATA, num_fewshot=0))[0].context == "问题：中国的首都是哪里？\n答案："


def test_nlpcc_exact_match_scorer():
    spec = registry.all_specs()["nlpcc_kbqa"]
    item = build("nlpcc_kbqa")[1]
    row = scoring.row_metrics(spec, [item])[0]
    assert scoring.score_generation(spec, item, " 曹雪芹 ", row)["metrics"]["exact_match"] == 1.0
    assert scoring.score_generation(spec, item, "曹雪", row)["metrics"]["exact_match"] == 0.0
    assert scoring.score_generation(spec, item, "曹雪芹。", row)["metrics"]["exact_match"] == 0.0
    assert companions.gold_continuation(spec, item).texts == ("曹雪芹",)  # no space after "答案："


def test_nlpcc_malformed_file(tmp_path):
    path = tmp_path / "nlpcc_kbqa" / "nlpcc-iccpol-2016.kbqa.testing-data"
    path.parent.mkdir()
    path.write_text("<question id=1>\tq\r\n<answer id=1>\ta\r\n" + "=" * 50 + "\r\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"testing-data:3: an item without its question, triple and answer lines"):
        nlpcc_kbqa.read_kbqa(path)
    path.write_text("<question id=1>\tq\r\n<triple id=2>\tt\r\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"testing-data:2: id 2 inside item 1"):
        nlpcc_kbqa.read_kbqa(path)


# --- user-supplied: ClozeT and GSM8K-Chinese -------------------------------------------------------


def test_clozet_items_and_errors(tmp_path):
    items = build("clozet")
    assert items[1].context == "天突然下起了大雨，路上的行人纷纷"
    assert items[1].choices == ("拿出雨伞。", "脱下外套晒太阳。") and [i.gold for i in items] == [0, 0, 1]
    with pytest.raises(UserError, match=r"clozet has no bundled data \(no public copy\); pass --task-file clozet=PATH.jsonl"):
        build("clozet", BuildOptions())
    with pytest.raises(UserError, match=r"--task-file clozet=missing.jsonl: no such file"):
        build("clozet", BuildOptions(task_files=(("clozet", "missing.jsonl"),)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "choices": ["a", "b"], "label": 2}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"clozet row 0: expected \{\"context\""):
        build("clozet", BuildOptions(task_files=(("clozet", str(bad)),)))


def test_user_task_from_a_hub_id(monkeypatch):
    calls = []

    def fake_hub(repo_id, config, split, revision):
        calls.append((repo_id, config, split, revision))
        return [{"question": "1加1等于几？", "answer": "2"}]

    monkeypatch.setattr(sources, "hub_split_records", fake_hub)
    items = build("gsm8k_zh", BuildOptions(task_files=(("gsm8k_zh", "someone/gsm8k-zh:main"),), hub_revision="abc"))
    assert calls == [("someone/gsm8k-zh", "main", "test", "abc")]
    assert items[0].context == "问题：1加1等于几？\n答案：" and items[0].targets == ("2",)


def test_gsm8k_zh_items_shots_and_scoring():
    items = build("gsm8k_zh")
    assert [item.targets for item in items] == [("8",), ("36",), ("20",)]
    assert items[0].context == "问题：小红有3个苹果，妈妈又给了她5个。她现在有几个苹果？\n答案："
    assert items[0].stop == ("问题：", "\n\n") and items[0].max_new_tokens == 256
    shot = build("gsm8k_zh", BuildOptions(task_files=TASK_FILES, num_fewshot=1))
    assert shot[0].meta["fewshot_doc_ids"] == [1] and shot[1].meta["fewshot_doc_ids"] == [0]
    assert shot[0].context == "问题：一本书12元，买3本要多少元？\n答案：36\n\n" + items[0].context
    spec = registry.all_specs()["gsm8k_zh"]
    row = scoring.row_metrics(spec, items[:1])[0]
    strict = scoring.score_generation(spec, items[0], "3+5=8\n#### 8", row)["metrics"]
    assert strict["exact_match_strict"] == 1.0 and strict["exact_match_flexible"] == 1.0
    flexible = scoring.score_generation(spec, items[0], "她一共有8个苹果。", row)["metrics"]
    assert flexible["exact_match_strict"] == 0.0 and flexible["exact_match_flexible"] == 1.0
    assert scoring.score_generation(spec, items[0], "7", row)["metrics"]["exact_match_flexible"] == 0.0


# --- CLI ------------------------------------------------------------------------------------------


def test_tasks_verbose_prints_every_prompt_we_define(capsys):
    assert cli.main(["tasks", "--verbose"]) == 0
    out = capsys.readouterr().out
    for prompt in ("c3", "cluewsc2020", "nlpcc_kbqa", "clozet", "gsm8k_zh", "mmlu_pythia_v0"):
        for key, value in registry.load_prompt(prompt).items():
            assert f"{key}:" in out
            for text in value if isinstance(value, list) else [value]:
                for line in str(text).split("\n"):
                    assert line.strip() in out, (prompt, key, line)
    assert "no copy bundled: pass --task-file clozet=PATH.jsonl" in out
    assert "no copy bundled: pass --task-file gsm8k_zh=PATH.jsonl" in out
    assert '"label": index of the right one' in out


def test_prompt_command_with_task_file(capsys):
    assert cli.main(["prompt", "--task", "clozet", "--index", "2", "--task-file", f"clozet={USER / 'clozet.jsonl'}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "妈妈做了一桌好菜，全家人围坐在一起。\n"
    assert '"choices": ["饭菜很快就凉了，没有人吃。", "大家一边吃一边聊，非常开心。"], "gold": 1' in captured.err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["prompt", "--task", "clozet", "--task-file", "clozet"])


# --- end to end on the tiny model ------------------------------------------------------------------

TASKS = ("c3", "cluewsc2020", "nlpcc_kbqa", "clozet", "gsm8k_zh")


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory, one_torch_thread):
    return evaluate_tiny(tiny_model_dir, tmp_path_factory.mktemp("chinese_run"), TASKS, task_files=TASK_FILES)


def test_results_have_every_tasks_metrics(tiny_run):
    results, records = tiny_run
    specs = registry.all_specs()
    for name in TASKS:
        entry = results["tasks"][name]
        assert entry["n"] == 3 and entry["num_fewshot"] == specs[name].num_fewshot
        for metric in specs[name].metrics:
            value = entry["metrics"][metric]
            assert value["n"] == 3 and math.isfinite(value["value"]), (name, metric)
    assert results["tasks"]["cluewsc2020"]["metrics"]["acc"]["random_baseline"] == pytest.approx(0.5)
    # C3's first three questions have 4, 3 and 4 choices: the baseline averages 1/C per item
    assert results["tasks"]["c3"]["metrics"]["acc"]["random_baseline"] == pytest.approx((1 / 4 + 1 / 3 + 1 / 4) / 3)
    kbqa = [r for r in records if r["task"] == "nlpcc_kbqa"]
    assert [r["target"] for r in kbqa] == ["北京", "曹雪芹", "8848米"]
    assert all(r["metrics"]["exact_match"] == float(r["generation"].strip() == r["target"]) for r in kbqa)
