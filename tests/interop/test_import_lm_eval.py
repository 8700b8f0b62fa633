"""``harness import-lm-eval``: Pythia's published v0.3 results and real lm-eval 0.4.13 output as our results.json."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.interop.import_lm_eval import import_lm_eval
from harness.interop.lm_eval_results import our_metric_name, parse_model_args, read_results_file
from harness.table import results_table

from conftest import FIXTURES

V03 = FIXTURES / "lm_eval_results" / "v0.3"
V04 = FIXTURES / "lm_eval_results" / "v0.4"
PYTHIA_V1 = V03 / "evals" / "pythia-v1"

# fixture file -> (model, step, our folder name): read off the files' model_args by hand.
V03_FILES = {
    "pythia-160m/zero-shot/160m_step1000.json": ("EleutherAI/pythia-160m", 1000, "EleutherAI__pythia-160m@step1000"),
    "pythia-160m/zero-shot/160m_step143000.json": ("EleutherAI/pythia-160m", 143000, "EleutherAI__pythia-160m@step143000"),
    "pythia-1b-bf16/zero-shot/1b-bf16-5shot_step512.json": ("EleutherAI/pythia-1b", 512, "EleutherAI__pythia-1b@step512"),
    "pythia-410m-deduped/zero-shot/410m-deduped_step0.json": ("EleutherAI/pythia-410m-deduped", 0, "EleutherAI__pythia-410m-deduped@step0"),
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _v03_expected(raw: dict) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(our task, our metric) -> (value, stderr) straight from a v0.3 file, renamed by the issue's rules."""
    expected = {}
    for task, metrics in raw["results"].items():
        ours = "mmlu_pythia_v0:" + task[len("hendrycksTest-"):] if task.startswith("hendrycksTest-") else task
        ours = {"sciq": "sciq_pythia_v0", "wsc": "wsc_pythia_v0"}.get(ours, ours)  # 0.3's prompts, our replicas
        for metric, value in metrics.items():
            if not metric.endswith("_stderr"):
                expected[(ours, "perplexity" if metric == "ppl" else metric)] = (value, metrics.get(f"{metric}_stderr"))
    return expected


@pytest.fixture(scope="module")
def v03_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported-v03")
    written = import_lm_eval(V03, out, log=lambda msg: None).written
    assert sorted(p.parent.name for p in written) == sorted(folder for _, _, folder in V03_FILES.values())
    return out


@pytest.fixture(scope="module")
def v04_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported-v04")
    import_lm_eval(V04, out, log=lambda msg: None)
    return out


@pytest.mark.parametrize("name", list(V03_FILES))
def test_pythia_v03_file_imports_every_metric(v03_out, name):
    model, step, folder = V03_FILES[name]
    results = _load(v03_out / folder / "results.json")
    assert results["model"]["model"] == model
    assert results["model"]["revision"] == f"step{step}" and results["step"] == step
    assert results["model"]["source"] == "lm-eval-import"
    assert results["model"]["resolved_revision"] is None and results["model"]["dtype"] is None
    assert results["loss"] is None
    assert results["tokens_per_step"] == 2_097_152  # Pythia's 1024 x 2048 tokens per step
    assert results["imported_from"] == [{
        "path": str(PYTHIA_V1 / name), "layout": "v0.3", "lm_eval_version": None,
        "model_args": _load(PYTHIA_V1 / name)["config"]["model_args"],
    }]
    expected = _v03_expected(_load(PYTHIA_V1 / name))
    got = {
        (task, metric): (m["value"], m["stderr"])
        for task, entry in results["tasks"].items() for metric, m in entry["metrics"].items()
        if task != "mmlu_pythia_v0"  # the parent row we add (test_mmlu_parent_row)
    }
    assert got == expected
    assert len(results["tasks"]) == 88  # 8 tasks + 57 MMLU subjects and their parent + 22 crows_pairs rows
    for task, entry in results["tasks"].items():
        assert entry["num_fewshot"] == 0 and entry["prompt_type"] == "zeroshot"
        # MMLU's n is known (the whole test split); other v0.3 rows do not record theirs
        assert (entry["n"] is not None) == task.startswith("mmlu_pythia_v0"), task


def test_pythia_v03_literal_values(v03_out):
    # Numbers read off 160m_step1000.json by eye.
    tasks = _load(v03_out / "EleutherAI__pythia-160m@step1000" / "results.json")["tasks"]
    lambada = tasks["lambada_openai"]
    assert lambada["metrics"]["perplexity"] == {
        "value": 2591.451412162786, "stderr": 111.22201519272778, "n": None, "random_baseline": None, "higher_is_better": False,
    }
    assert lambada["metrics"]["acc"]["value"] == 0.06462254997089074 and lambada["primary_metric"] == "acc"
    anatomy = tasks["mmlu_pythia_v0:anatomy"]
    assert anatomy["task_family"] == "mmlu_pythia_v0" and anatomy["parent"] == "mmlu_pythia_v0"
    assert anatomy["n"] == 135 and anatomy["metrics"]["acc"]["n"] == 135  # anatomy_test.csv's rows
    assert anatomy["metrics"]["acc"]["value"] == 0.22962962962962963
    assert anatomy["metrics"]["acc_norm"]["stderr"] == 0.03853254836552003
    assert anatomy["metrics"]["acc"]["higher_is_better"] is True
    assert "hendrycksTest-anatomy" not in tasks
    crows = tasks["crows_pairs_english_age"]["metrics"]
    assert crows["pct_stereotype"]["higher_is_better"] is False  # lm-eval's crows_pairs: lower is better
    assert tasks["crows_pairs_english_age"]["primary_metric"] == "likelihood_difference"


def test_pythia_params_and_shots_from_config_not_name(v03_out):
    one_b = _load(v03_out / "EleutherAI__pythia-1b@step512" / "results.json")
    assert (one_b["model"]["params_total"], one_b["model"]["params_non_embedding"]) == (1_011_781_632, 805_736_448)
    # The file is named 1b-bf16-5shot_step512.json but its config says num_fewshot 0.
    assert {entry["num_fewshot"] for entry in one_b["tasks"].values()} == {0}
    assert one_b["tasks"]["arc_easy"]["metrics"]["acc"]["value"] == 0.2916666666666667  # read off the file
    dedup = _load(v03_out / "EleutherAI__pythia-410m-deduped@step0" / "results.json")
    assert (dedup["model"]["params_total"], dedup["model"]["params_non_embedding"]) == (405_334_016, 302_311_424)


def test_table_over_imported_pythia_results(v03_out):
    frame = results_table(v03_out)
    assert len(frame) == 4 * 176  # every file: 14 + 57*2 + 22*2 metric rows, and the MMLU parent's 4
    assert sorted(set(zip(frame["model"], frame["step"]))) == sorted((m, s) for m, s, _ in V03_FILES.values())
    row = frame[(frame["model"] == "EleutherAI/pythia-160m") & (frame["step"] == 143000)
                & (frame["task"] == "mmlu_pythia_v0:anatomy") & (frame["metric"] == "acc")]
    raw = _load(PYTHIA_V1 / "pythia-160m/zero-shot/160m_step143000.json")["results"]["hendrycksTest-anatomy"]
    assert len(row) == 1 and row["value"].item() == raw["acc"] and row["stderr"].item() == raw["acc_stderr"]
    assert row["params"].item() == 162_322_944 and row["params_non_embedding"].item() == 85_056_000
    assert row["size"].item() == "160m"
    # Pythia's 2,097,152 tokens per step, and compute = 6 * N_non_embedding * tokens seen.
    assert row["tokens_seen"].item() == 143000 * 2_097_152
    assert row["compute"].item() == pytest.approx(6 * 85_056_000 * 143000 * 2_097_152, rel=1e-12)
    assert bool(row["primary"].item()) is True
    ppl = frame[(frame["task"] == "lambada_openai") & (frame["metric"] == "perplexity")]
    assert len(ppl) == 4 and not ppl["higher_is_better"].any()


def _v04_files() -> dict[tuple[str, str], tuple[Path, dict]]:
    """(revision, tasks run) -> (path, data) of the three lm-eval 0.4.13 files, whatever their dated names."""
    files = {}
    for path in sorted(V04.rglob("results_*.json")):
        data = _load(path)
        key = (data["config"]["model_args"]["revision"], "tiny_ppl" if "tiny_ppl" in data["results"] else "tiny_suite")
        files[key] = (path, data)
    assert sorted(files) == [("step100", "tiny_ppl"), ("step100", "tiny_suite"), ("step200", "tiny_suite")]
    return files


def test_lm_eval_v04_output_imports_and_merges_one_checkpoint(v04_out):
    files = _v04_files()
    assert sorted(p.name for p in v04_out.iterdir()) == ["harness-test__tiny-neox@step100", "harness-test__tiny-neox@step200"]
    step100 = _load(v04_out / "harness-test__tiny-neox@step100" / "results.json")
    assert step100["model"]["model"] == "harness-test/tiny-neox" and step100["step"] == 100
    assert step100["model"]["dtype"] == "float32"  # model_args dtype=float32
    assert step100["model"]["params_total"] is None and step100["tokens_per_step"] is None  # not a Pythia model
    assert sorted(step100["tasks"]) == ["tiny_arith", "tiny_ppl", "tiny_suite", "tiny_words"]
    assert sorted(s["path"] for s in step100["imported_from"]) == sorted(
        str(files[("step100", t)][0]) for t in ("tiny_ppl", "tiny_suite"))
    assert {(s["layout"], s["lm_eval_version"]) for s in step100["imported_from"]} == {("v0.4", "0.4.13")}

    for (revision, run), (_, raw) in files.items():
        tasks = _load(v04_out / f"harness-test__tiny-neox@{revision}" / "results.json")["tasks"]
        for task, values in raw["results"].items():
            entry = tasks[task]
            assert entry["num_fewshot"] == raw["n-shot"][task]
            for key, value in values.items():
                metric, sep, filter_name = key.partition(",")
                if not sep or metric.endswith("_stderr") or not isinstance(value, float):
                    continue
                stderr = values[f"{metric}_stderr,{filter_name}"]
                assert entry["metrics"][metric]["value"] == value
                assert entry["metrics"][metric]["stderr"] == (None if stderr == "N/A" else stderr)
                assert entry["metrics"][metric]["higher_is_better"] == raw["higher_is_better"][task][metric]

    suite = step100["tasks"]
    assert (suite["tiny_arith"]["prompt_type"], suite["tiny_arith"]["num_fewshot"]) == ("fewshot", 2)
    assert (suite["tiny_ppl"]["prompt_type"], suite["tiny_ppl"]["num_fewshot"]) == ("zeroshot", 0)
    assert suite["tiny_arith"]["parent"] == suite["tiny_words"]["parent"] == "tiny_suite"
    assert suite["tiny_suite"]["subtasks"] == ["tiny_arith", "tiny_words"]
    assert (suite["tiny_arith"]["n"], suite["tiny_words"]["n"], suite["tiny_suite"]["n"]) == (4, 3, 7)
    # The group's acc is lm-eval's size-weighted mean of its subtasks'.
    group_acc = (4 * suite["tiny_arith"]["metrics"]["acc"]["value"] + 3 * suite["tiny_words"]["metrics"]["acc"]["value"]) / 7
    assert math.isclose(suite["tiny_suite"]["metrics"]["acc"]["value"], group_acc, rel_tol=1e-12)
    assert suite["tiny_ppl"]["metrics"]["bits_per_byte"]["stderr"] is None  # lm-eval wrote "N/A"
    assert suite["tiny_ppl"]["primary_metric"] == "word_perplexity"

    step200 = _load(v04_out / "harness-test__tiny-neox@step200" / "results.json")
    assert step200["step"] == 200 and step200["model"]["dtype"] == "float32"  # from config.model_dtype
    assert {e["num_fewshot"] for e in step200["tasks"].values()} == {0}


def test_table_over_imported_v04_results(v04_out):
    frame = results_table(v04_out)
    # step100: tiny_arith 2 + tiny_words 2 + tiny_suite 1 + tiny_ppl 3; step200: 5.
    assert len(frame) == 13
    assert list(frame.groupby("step").size().items()) == [(100, 8), (200, 5)]
    words = frame[(frame["task"] == "tiny_words") & (frame["metric"] == "acc_norm")].set_index("step")["value"]
    raw = {rev: data["results"]["tiny_words"]["acc_norm,none"] for (rev, run), (_, data) in _v04_files().items() if run == "tiny_suite"}
    assert words.to_dict() == {100: raw["step100"], 200: raw["step200"]}
    assert words[100] != words[200]  # the two checkpoints really differ, so a mix-up would show


def _copy_v03(tmp: Path, name: str, edit=None) -> Path:
    target = tmp / "evals" / "pythia-v1" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    data = _load(PYTHIA_V1 / name)
    if edit is not None:
        edit(data)
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


def test_model_and_step_fall_back_to_the_path(tmp_path):
    def drop_model(data):
        data["config"]["model_args"] = "use_accelerate=True"

    path = _copy_v03(tmp_path / "src", "pythia-160m/zero-shot/160m_step1000.json", drop_model)
    imported = read_results_file(path)
    assert (imported.model, imported.revision, imported.step) == ("EleutherAI/pythia-160m", "step1000", 1000)
    reference = read_results_file(PYTHIA_V1 / "pythia-160m/zero-shot/160m_step1000.json")
    assert imported.tasks == reference.tasks


def test_step_of_a_local_checkpoint_comes_from_pretrained(tmp_path):
    _, raw = _v04_files()[("step100", "tiny_ppl")]
    raw = {**raw, "config": {**raw["config"], "model_args": "pretrained=/ckpts/run1/checkpoint-0"}}
    del raw["model_name"]
    (tmp_path / "results_x.json").write_text(json.dumps(raw), encoding="utf-8")
    imported = read_results_file(tmp_path / "results_x.json")
    assert (imported.model, imported.revision, imported.step) == ("/ckpts/run1/checkpoint-0", None, 0)
    assert imported.dtype == "float32"  # lm-eval's config.model_dtype "torch.float32"


def test_files_of_one_checkpoint_merge_and_reimport_is_idempotent(tmp_path):
    def only(tasks):
        def edit(data):
            data["results"] = {k: v for k, v in data["results"].items() if k in tasks}
        return edit

    name = "pythia-160m/zero-shot/160m_step1000.json"
    first = _copy_v03(tmp_path / "a", name, only({"arc_easy", "piqa"}))
    second = _copy_v03(tmp_path / "b", name, only({"piqa", "sciq"}))
    out = tmp_path / "out"
    import_lm_eval(first, out, log=lambda m: None)
    import_lm_eval(tmp_path / "b", out, log=lambda m: None)
    import_lm_eval(first, out, log=lambda m: None)
    (path,) = out.rglob("results.json")
    results = _load(path)
    assert sorted(results["tasks"]) == ["arc_easy", "piqa", "sciq_pythia_v0"]
    assert [s["path"] for s in results["imported_from"]] == [str(first), str(second)]


def test_same_task_with_other_numbers_is_an_error(tmp_path):
    def five_shot(data):
        data["config"]["num_fewshot"] = 5

    name = "pythia-160m/zero-shot/160m_step1000.json"
    _copy_v03(tmp_path / "src" / "zero", name)
    _copy_v03(tmp_path / "src" / "five", name, five_shot)
    with pytest.raises(UserError, match="differs between"):
        import_lm_eval(tmp_path / "src", tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_never_overwrites_our_own_run(tmp_path):
    target = tmp_path / "out" / "EleutherAI__pythia-160m@step1000" / "results.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"model": {"source": "hub"}, "tasks": {}}), encoding="utf-8")
    with pytest.raises(UserError, match="run of our own"):
        import_lm_eval(PYTHIA_V1 / "pythia-160m/zero-shot/160m_step1000.json", tmp_path / "out", log=lambda m: None)
    assert _load(target) == {"model": {"source": "hub"}, "tasks": {}}


def test_other_json_is_skipped_with_a_note_and_nothing_found_is_an_error(tmp_path):
    (tmp_path / "notes.json").write_text('{"results": [1, 2]}', encoding="utf-8")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    notes = []
    with pytest.raises(UserError, match="no lm-evaluation-harness results JSON"):
        import_lm_eval(tmp_path, tmp_path / "out", log=notes.append)
    assert len(notes) == 2 and all(n.startswith("note: skipped") for n in notes)
    with pytest.raises(UserError, match="does not exist"):
        import_lm_eval(tmp_path / "missing", tmp_path / "out", log=notes.append)


def test_command_prints_a_summary_and_lists_files_only_when_verbose(tmp_path, capsys):
    from harness import cli

    src = tmp_path / "src"
    shutil.copytree(PYTHIA_V1, src / "pythia-v1")
    (src / "notes.json").write_text('{"results": [1, 2]}', encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["import-lm-eval", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    folders = sorted(folder for _, _, folder in V03_FILES.values())
    assert printed.out.splitlines() == [
        f"read 4 lm-evaluation-harness results files under {src}: 3 models, 4 checkpoints, 88 tasks",
        f"wrote 4 results files (704 metric values) under {out}; harness table {out}; --verbose lists each file",
        f"skipped 1 other JSON file (e.g. {src / 'notes.json'}: not an lm-evaluation-harness results file)",
    ]
    assert not any(folder in printed.out + printed.err for folder in folders) and printed.err == ""
    # the counts are the table's: one row per (checkpoint, task, metric)
    table = results_table(out)
    assert len(table) == 704 and table["task"].nunique() == 88 and table["model"].nunique() == 3

    assert cli.main(["import-lm-eval", str(src), "--out", str(out), "--verbose"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[:4] == [str(out / folder / "results.json") for folder in folders]
    assert printed.out.splitlines()[4].startswith("read 4 lm-evaluation-harness results files")
    assert printed.err.strip() == f"note: skipped {src / 'notes.json'}: not an lm-evaluation-harness results file"


def test_names():
    assert parse_model_args("use_accelerate=True,pretrained=EleutherAI/pythia-v1.1-160m,revision=step1000") == {
        "use_accelerate": "True", "pretrained": "EleutherAI/pythia-v1.1-160m", "revision": "step1000"}
    assert parse_model_args({"pretrained": "x", "revision": "step5"}) == {"pretrained": "x", "revision": "step5"}
    assert parse_model_args(None) == {}
    assert our_metric_name("ppl") == "perplexity"
    assert our_metric_name("acc", "none") == "acc"
    assert our_metric_name("exact_match", "strict-match") == "exact_match_strict"
    assert our_metric_name("exact_match", "flexible-extract") == "exact_match_flexible"
    assert our_metric_name("exact_match", "maj@8") == "exact_match,maj@8"


def test_command_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    src = tmp_path / "src"
    shutil.copytree(PYTHIA_V1 / "pythia-160m", src / "pythia-160m")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.interop.import_lm_eval", str(src), "--out", str(tmp_path / "out"), "--verbose"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    written = [
        str(tmp_path / "out" / "EleutherAI__pythia-160m@step1000" / "results.json"),
        str(tmp_path / "out" / "EleutherAI__pythia-160m@step143000" / "results.json"),
    ]
    assert proc.stdout.splitlines()[:2] == written  # listed with --verbose
    assert proc.stdout.splitlines()[2].startswith("read 2 lm-evaluation-harness results files")
    missing = subprocess.run(
        [sys.executable, "-m", "harness.interop.import_lm_eval", str(tmp_path / "nowhere")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr


def test_mmlu_parent_row_aggregates_the_subjects_like_our_own_runs(v03_out):
    from harness.interop.lm_eval_results import MMLU_TEST_SIZES

    assert len(MMLU_TEST_SIZES) == 57 and sum(MMLU_TEST_SIZES.values()) == 14042  # MMLU's test split
    tasks = _load(v03_out / "EleutherAI__pythia-160m@step143000" / "results.json")["tasks"]
    subjects = {name: entry for name, entry in tasks.items() if name.startswith("mmlu_pythia_v0:")}
    parent = tasks["mmlu_pythia_v0"]
    assert parent["subtasks"] == sorted(subjects) and parent["n"] == 14042 and parent["parent"] is None
    weighted = sum(e["metrics"]["acc"]["value"] * e["n"] for e in subjects.values()) / 14042
    macro = sum(e["metrics"]["acc"]["value"] for e in subjects.values()) / 57
    assert parent["metrics"]["acc"]["value"] == pytest.approx(weighted, abs=1e-12)
    assert parent["metrics"]["acc_macro"]["value"] == pytest.approx(macro, abs=1e-12)
    stderr = sum((e["metrics"]["acc_norm"]["stderr"] * e["n"] / 14042) ** 2 for e in subjects.values()) ** 0.5
    assert parent["metrics"]["acc_norm"]["stderr"] == pytest.approx(stderr, rel=1e-12)


# -- harness export --format lm-eval, and back ------------------------------------------------------

EXPORT_TASKS = ["mmlu:abstract_algebra", "gsm8k", "bigbench:modified_arithmetic"]  # choices, filters, subtasks


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory, one_torch_thread):
    """A tiny model's eval (3 items per (sub)task, with its loss), exported with samples and imported back."""
    from harness.interop.export_lm_eval import export_lm_eval

    from conftest import evaluate_tiny

    root = tmp_path_factory.mktemp("export")
    evaluate_tiny(tiny_model_dir, root / "ours", EXPORT_TASKS, loss_corpus=FIXTURES / "loss_corpus.jsonl",
                  loss_window=64, loss_tokens=400)
    before = set(root.rglob("*"))
    written = export_lm_eval(root / "ours", root / "lm-eval", samples=True, log=lambda m: None)
    new = set(root.rglob("*")) - before
    assert new and all(root / "lm-eval" in p.parents or p == root / "lm-eval" for p in new)  # nothing outside --out
    import_lm_eval(root / "lm-eval", root / "back", log=lambda m: None)
    (view,) = [_load(p) for p in (root / "ours").rglob("results.json")]
    return {"root": root, "written": written, "view": view}


def test_export_then_import_gives_the_same_table(exported):
    root = exported["root"]
    ours, back = results_table(root / "ours"), results_table(root / "back")
    assert len(ours) > 40 and ours["loss"].notna().all()
    # every column: what lm-eval's fields carry (value, stderr) and what our field restores (loss, the
    # checkpoint, n, shots, limit, unit keys, weights); `latest` (which units the last run asked for)
    # belongs to a run folder, not to an import
    columns = [c for c in ours.columns if c != "latest"]
    pd.testing.assert_frame_equal(ours[columns], back[columns])
    for column in ("task", "metric", "value", "stderr", "n", "loss", "loss_bits_per_byte", "model", "revision", "step",
                   "resolved_revision", "num_fewshot", "limit", "prompt_type", "weights"):
        assert column in columns


def test_exported_file_is_lm_eval_results(exported):
    (path,) = exported["written"]
    view = exported["view"]
    assert path.name.startswith("results_") and path.parent.relative_to(exported["root"] / "lm-eval") == \
        next((exported["root"] / "ours").rglob("results.json")).parent.relative_to(exported["root"] / "ours")
    data = _load(path)
    assert {"results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
            "config"} <= set(data)
    mmlu, ours = data["results"]["mmlu:abstract_algebra"], view["tasks"]["mmlu:abstract_algebra"]
    assert mmlu["acc,none"] == ours["metrics"]["acc"]["value"] and mmlu["acc_stderr,none"] == ours["metrics"]["acc"]["stderr"]
    assert data["results"]["gsm8k"]["exact_match,strict-match"] == view["tasks"]["gsm8k"]["metrics"]["exact_match_strict"]["value"]
    assert "exact_match_stderr,flexible-extract" in data["results"]["gsm8k"]
    assert data["n-shot"]["mmlu:abstract_algebra"] == 5 and data["n-shot"]["gsm8k"] == 8
    assert data["versions"]["gsm8k"] == ours["config"]["scoring_version"]
    parent = "bigbench:modified_arithmetic"
    assert sorted(data["group_subtasks"][parent]) == sorted(view["tasks"][parent]["subtasks"]) and parent in data["groups"]
    # configs and n-samples name the scored (sub)tasks, as lm-eval's do, not the groups
    assert set(data["configs"]) == set(data["n-samples"]) == set(view["tasks"]) - {parent}
    assert data["configs"]["gsm8k"]["output_type"] == "generate_until" and data["configs"]["gsm8k"]["num_fewshot"] == 8
    assert data["higher_is_better"]["mmlu:abstract_algebra"]["brier_score"] is False
    assert data["config"]["model_args"]["pretrained"] == view["checkpoint"]["model"] and data["config"]["limit"] == 3
    block = data["emergence_harness"]
    assert block["loss"] == view["loss"] and block["loss_units"]["loss"] == "nats/token"
    assert block["identity"] == view["identity"] and block["units"][ours["unit_key"]] == ours["config"]


def test_lm_eval_reads_the_export(exported):
    """lm-eval's own readers: its results table, and the names its hub uploader parses out of file names."""
    pytest.importorskip("lm_eval")
    from lm_eval import utils

    (path,) = exported["written"]
    data = _load(path)
    table = utils.make_table(data)
    assert "mmlu:abstract_algebra" in table and "strict-match" in table
    assert "bigbench:modified_arithmetic" in utils.make_table(data, "groups")
    files = [str(p) for p in path.parent.iterdir()]
    assert utils.get_results_filenames(files) == [str(path)]
    samples = utils.get_sample_results_filenames(files)
    date = utils.get_file_datetime(path.stem)  # its own quirk: it strips only ".jsonl"
    assert {utils.get_file_datetime(Path(f).name) for f in samples} == {date}
    names = {utils.get_file_task_name(Path(f).name) for f in samples}
    assert names == {utils.sanitize_task_name(t) for t in data["configs"]}
    lines = [json.loads(line) for line in (path.parent / f"samples_mmlu_abstract_algebra_{date}.jsonl").read_text().splitlines()]
    assert [line["doc_id"] for line in lines] == [0, 1, 2]
    for line in lines:
        record = line["emergence_harness"]
        assert line["prompt_hash"] == record["prompt_sha256"] and line["target"] == str(record["gold"])
        assert [float(lp) for lp, _ in line["filtered_resps"]] == record["choice_logprobs"]
        assert line["acc"] == record["metrics"]["acc"] and "acc" in line["metrics"]


def test_export_read_as_a_plain_lm_eval_file_gives_the_same_numbers(exported, tmp_path):
    """Without our field, the importer's lm-eval rules (``acc,none`` -> acc, gsm8k's filters -> our
    names) find every value and stderr the export wrote."""
    (path,) = exported["written"]
    data = _load(path)
    del data["emergence_harness"]
    (tmp_path / "results_x.json").write_text(json.dumps(data), encoding="utf-8")
    plain = read_results_file(tmp_path / "results_x.json")
    for task, entry in exported["view"]["tasks"].items():
        for metric, m in entry["metrics"].items():
            got = plain.tasks[task]["metrics"][metric]
            assert (got["value"], got["stderr"], got["n"]) == (m["value"], m["stderr"], m["n"]), (task, metric)
        assert plain.tasks[task]["num_fewshot"] == entry["num_fewshot"] and plain.tasks[task]["parent"] == entry["parent"]


def test_export_again_replaces_its_own_files_only(exported, tmp_path):
    from harness.interop.export_lm_eval import export_lm_eval

    out = tmp_path / "out"
    (first,) = export_lm_eval(exported["root"] / "ours", out, log=lambda m: None)
    stale = first.parent / "results_2020-01-01T00-00-00.000000.json"
    stale.write_text(json.dumps({**_load(first), "results": {}}), encoding="utf-8")
    foreign = first.parent / "results_2021-01-01T00-00-00.000000.json"
    foreign.write_text('{"results": {}}', encoding="utf-8")
    (again,) = export_lm_eval(exported["root"] / "ours", out, log=lambda m: None)
    assert again == first and not stale.exists() and foreign.exists()
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, foreign.name])


def test_export_command_line(exported, tmp_path, capsys):
    from harness.cli import main

    assert main(["export", str(exported["root"] / "ours"), "--format", "lm-eval", "--out", str(tmp_path / "lm")]) == 0
    (printed,) = capsys.readouterr().out.split()
    assert Path(printed).parent.parent.parent == tmp_path / "lm" and Path(printed).name.startswith("results_")
    assert not list((tmp_path / "lm").rglob("samples_*"))  # only with --samples
    assert main(["import-lm-eval", str(tmp_path / "lm"), "--out", str(tmp_path / "back")]) == 0
    frame = results_table(tmp_path / "back")
    assert frame["loss"].notna().all() and set(frame["task"]) >= set(EXPORT_TASKS)
