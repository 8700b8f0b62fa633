"""Data sources: the local readers on the committed excerpts, and the Hub path through a real
Hugging Face cache layout built in a temp dir (offline), cross-checked against the local files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.items import registry, sources
from harness.spec import BuildOptions

from conftest import FIXTURES, HUB_COMMIT, hub_dataset_repo

DATA = FIXTURES / "data"


# --- local readers ------------------------------------------------------------------------------


def test_read_mmlu_csv_keeps_cells_verbatim_and_maps_to_hub_columns():
    rows = sources.read_mmlu_csv(DATA / "mmlu/dev/abstract_algebra_dev.csv", "abstract_algebra")
    assert len(rows) == 5
    assert rows[0] == {
        "question": "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.",
        "subject": "abstract_algebra",
        "choices": ["0", "1", "2", "3"],  # strings, not numbers
        "answer": 1,  # "B"
    }
    assert rows[1]["choices"] == ["True, True", "False, False", "True, False", "False, True"]  # quoted commas
    assert [r["answer"] for r in rows] == [1, 1, 2, 0, 0]  # B B C A A


def test_read_mmlu_csv_rejects_a_malformed_row(tmp_path):
    bad = tmp_path / "x_test.csv"
    bad.write_text("question,A,B,C,D,E\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"x_test.csv:1: expected question,A,B,C,D,answer-letter"):
        sources.read_mmlu_csv(bad, "x")


def test_read_ceval_csv_dev_and_val():
    dev = sources.read_ceval_csv(DATA / "ceval/dev/computer_network_dev.csv")
    assert dev[3] == {
        "id": 3,
        "question": "以太网的MAC地址长度为____位。",
        "A": "32",
        "B": "48",
        "C": "64",
        "D": "128",
        "answer": "B",
        "explanation": "1. MAC地址由6个字节组成，共48位。",
    }
    val = sources.read_ceval_csv(DATA / "ceval/val/high_school_mathematics_val.csv")
    assert [r["id"] for r in val] == [0, 1, 2, 3, 4, 5]
    assert val[3]["A"] == "$(-1,1)$" and val[3]["D"] == "$[-1,1]$"  # quoted cells with commas
    assert val[4]["question"] == "已知向量$a=(1,2)$，$b=(3,4)$，则$a\\cdot b=$____"
    assert all(r["explanation"] == "" for r in val)  # the val split has no explanation column


def test_read_jsonl_in_file_order():
    train = sources.read_jsonl(DATA / "gsm8k/train.jsonl")
    assert len(train) == 10
    assert train[0]["question"].startswith("Natalia sold clips to 48 of her friends in April")
    assert train[0]["answer"].endswith("#### 72")
    test = sources.read_jsonl(DATA / "gsm8k/test.jsonl")
    assert [r["answer"].rsplit("#### ", 1)[1] for r in test] == ["18", "3", "70000", "540", "20"]


def test_require_files_names_first_missing_files_and_count(tmp_path):
    present = tmp_path / "here.csv"
    present.write_text("x", encoding="utf-8")
    sources.require_files([present], "hint")  # nothing missing: no error
    missing = [tmp_path / f"m{i}.csv" for i in range(5)]
    with pytest.raises(UserError) as err:
        sources.require_files([present, *missing], "--data-dir DIR expects the layout")
    message = str(err.value)
    assert message == (
        f"missing 5 of 6 data files: {missing[0]}, {missing[1]}, {missing[2]} (+2 more);"
        " --data-dir DIR expects the layout"
    )
    assert "\n" not in message


# --- the Hub, through a real cache layout --------------------------------------------------------


def _mmlu_hub_frame(path: Path, subject: str) -> pd.DataFrame:
    # Independent of harness.items.sources: the csv module and cais/mmlu's column names.
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return pd.DataFrame(
        {
            "question": [r[0] for r in rows],
            "subject": [subject] * len(rows),
            "choices": [r[1:5] for r in rows],
            "answer": ["ABCD".index(r[5]) for r in rows],
        }
    )


def _ceval_hub_frame(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["id"] = frame["id"].astype("int32")
    if "explanation" not in frame:
        frame["explanation"] = ""  # ceval-exam has the column in every split
    return frame


def _gsm8k_hub_frame(path: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()])


@pytest.fixture
def cached_hub(empty_hub):
    """cais/mmlu (anatomy, abstract_algebra), ceval/ceval-exam (computer_network), openai/gsm8k (main)."""
    mmlu = {}
    for subject in ("anatomy", "abstract_algebra"):
        for split in ("test", "dev"):
            mmlu[f"{subject}/{split}-00000-of-00001.parquet"] = _mmlu_hub_frame(
                DATA / f"mmlu/{split}/{subject}_{split}.csv", subject
            )
    hub_dataset_repo(empty_hub, "cais/mmlu", mmlu)
    hub_dataset_repo(
        empty_hub,
        "ceval/ceval-exam",
        {
            f"computer_network/{split}-00000-of-00001.parquet": _ceval_hub_frame(
                DATA / f"ceval/{split}/computer_network_{split}.csv"
            )
            for split in ("val", "dev")
        },
    )
    hub_dataset_repo(
        empty_hub,
        "openai/gsm8k",
        {f"main/{split}-00000-of-00001.parquet": _gsm8k_hub_frame(DATA / f"gsm8k/{split}.jsonl") for split in ("test", "train")},
    )
    return empty_hub


def test_hub_mmlu_records_equal_local_csv(cached_hub):
    hub = sources.hub_split_records("cais/mmlu", "anatomy", "test", None)
    assert hub == sources.read_mmlu_csv(DATA / "mmlu/test/anatomy_test.csv", "anatomy")
    assert isinstance(hub[0]["choices"], list) and hub[0]["answer"] == 0


def test_hub_items_equal_local_items(cached_hub):
    local, hub = BuildOptions(data_dir=DATA), BuildOptions(data_dir=None)
    for name in ("mmlu:anatomy", "mmlu:abstract_algebra", "ceval:computer_network", "gsm8k", "gsm8k:fewshot"):
        selection = registry.resolve(name)[0]
        build = registry.family_module(selection.spec).build_rows
        from_files, from_hub = build(selection, local), build(selection, hub)
        assert from_hub == from_files, name
        assert [i.meta for r in from_hub.values() for i in r] == [i.meta for r in from_files.values() for i in r]
        assert sum(len(items) for items in from_hub.values()) in (5, 6, 20)  # fixture sizes: gsm8k test 5, anatomy 6, abstract_algebra 20


def test_hub_ceval_uses_the_chinese_name_table_of_the_spec(cached_hub):
    selection = registry.resolve("ceval:computer_network")[0]
    item = registry.family_module(selection.spec).build_rows(selection, BuildOptions())["ceval:computer_network"][0]
    assert item.context.startswith("以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n")
    assert sources.hub_split_records("ceval/ceval-exam", "computer_network", "val", None)[0]["explanation"] == ""


def test_hub_shards_are_read_in_order_and_data_folder_is_accepted(empty_hub):
    first = pd.DataFrame({"question": ["q0", "q1"], "answer": ["#### 0", "#### 1"]})
    second = pd.DataFrame({"question": ["q2"], "answer": ["#### 2"]})
    hub_dataset_repo(
        empty_hub,
        "someone/sharded",
        {
            "main/test-00001-of-00002.parquet": second,
            "main/test-00000-of-00002.parquet": first,
            "data/train-00000-of-00001.parquet": first,
        },
    )
    rows = sources.hub_split_records("someone/sharded", "main", "test", None)
    assert [r["question"] for r in rows] == ["q0", "q1", "q2"]
    no_folder = sources.hub_split_records("someone/sharded", "default", "train", None)
    assert [r["question"] for r in no_folder] == ["q0", "q1"]


def test_hub_not_cached_offline_is_a_one_line_user_error(empty_hub):
    with pytest.raises(UserError) as err:
        sources.hub_split_records("openai/gsm8k", "main", "test", None)
    message = str(err.value)
    assert "openai/gsm8k" in message and "--data-dir" in message and "\n" not in message


def test_hub_cached_repo_without_the_split_is_a_user_error(cached_hub):
    with pytest.raises(UserError, match=r"cais/mmlu .*astronomy.*--data-dir"):
        sources.hub_split_records("cais/mmlu", "astronomy", "test", None)


def test_a_script_dataset_is_read_from_the_hubs_parquet_branch(empty_hub):
    """EleutherAI/logiqa's main branch holds a loading script; its rows are on refs/convert/parquet
    as <config>/<split>/NNNN.parquet (cached under refs/refs/convert/parquet)."""
    repo = hub_dataset_repo(empty_hub, "someone/scripted", {})
    (repo / "snapshots" / HUB_COMMIT).mkdir(parents=True)
    (repo / "snapshots" / HUB_COMMIT / "scripted.py").write_text("# a datasets loading script\n", encoding="utf-8")
    converted = "c" * 40
    (repo / "refs" / "refs" / "convert").mkdir(parents=True)
    (repo / "refs" / "refs" / "convert" / "parquet").write_text(converted, encoding="utf-8")
    for name, frame in (("0000.parquet", pd.DataFrame({"q": ["a", "b"]})), ("0001.parquet", pd.DataFrame({"q": ["c"]}))):
        path = repo / "snapshots" / converted / "logiqa" / "test" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    assert [r["q"] for r in sources.hub_split_records("someone/scripted", "logiqa", "test", None)] == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"someone/scripted \(config logiqa, split validation\)"):
        sources.hub_split_records("someone/scripted", "logiqa", "validation", None)


def test_data_revision_selects_the_hub_datasets_revision(empty_hub, capsys):
    """--data-revision reaches the hub reader: a dataset cached only at tag v1 is read at v1."""
    from harness import cli

    repo = hub_dataset_repo(
        empty_hub, "openai/gsm8k",
        {f"main/{split}-00000-of-00001.parquet": _gsm8k_hub_frame(DATA / f"gsm8k/{split}.jsonl") for split in ("test", "train")},
    )
    (repo / "refs" / "main").rename(repo / "refs" / "v1")
    assert cli.main(["prompt", "--task", "gsm8k:fewshot", "--index", "0", "--data-revision", "v1"]) == 0
    first_question = json.loads((DATA / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()[0])["question"]
    assert first_question in capsys.readouterr().out
    assert cli.main(["prompt", "--task", "gsm8k:fewshot", "--index", "0"]) == 2  # main is not cached
    assert "openai/gsm8k is not in the Hub cache" in capsys.readouterr().err


def test_a_malformed_jsonl_line_is_a_one_line_user_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "a"}\n\n{"question": "b",\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"rows.jsonl:3: not valid JSON .*one JSON object per line"):
        sources.read_jsonl(path)
    path.write_text('{"question": "a"}\n["b"]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"rows.jsonl:2: a list, not a JSON object"):
        sources.read_jsonl(path)
