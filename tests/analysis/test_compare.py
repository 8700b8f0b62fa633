"""``harness compare``: published Pythia results against themselves agree everywhere; a reproduction
allows max(1 item, 0.5% of n) and no more; independent samples are a z test checked by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness import cli
from harness.analysis.compare import compare, compare_frames
from harness.interop.import_lm_eval import import_lm_eval

from conftest import FIXTURES

PYTHIA_V1 = FIXTURES / "lm_eval_results" / "v0.3" / "evals" / "pythia-v1"
TWO_FILES = ["pythia-160m/zero-shot/160m_step1000.json", "pythia-160m/zero-shot/160m_step143000.json"]
SHIFT = 0.05


def _import(files: list[str], root: Path) -> Path:
    source = root / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PYTHIA_V1 / name, source / name)
    out = root / "imported"
    import_lm_eval(source, out, log=lambda msg: None)
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path]:
    ours = _import(TWO_FILES, tmp_path_factory.mktemp("ours"))
    reference = _import(TWO_FILES, tmp_path_factory.mktemp("reference"))
    return ours, reference


def test_published_results_against_themselves_agree_in_every_cell(imported, tmp_path, capsys):
    ours, reference = imported
    comparison = compare(ours, reference)
    # 2 checkpoints x (8 tasks' 14 metrics + 57 MMLU subjects x 2 + the MMLU parent's 4 + 22 crows rows x 2)
    assert len(comparison.cells) == 2 * 176
    assert comparison.agreeing == len(comparison.cells) and comparison.only_ours == comparison.only_reference == 0
    assert (comparison.cells["diff"] == 0).all()

    assert cli.main(["compare", str(ours), str(reference), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "352 of 352 cells agree (100.0%; reproduction:" in printed
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(table) == 352 and table["agree"].all()
    assert (tmp_path / "cmp" / "figures" / "lambada_openai__acc.png").stat().st_size > 10_000
    assert "100.0%" in (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")


def test_a_shifted_copy_is_reported(imported, tmp_path, capsys):
    ours, reference = imported
    shifted = tmp_path / "shifted"
    shutil.copytree(ours, shifted)
    for path in shifted.rglob("results.json"):
        results = json.loads(path.read_text(encoding="utf-8"))
        for entry in results["tasks"].values():
            if "acc" in entry["metrics"]:
                entry["metrics"]["acc"]["value"] += SHIFT
        path.write_text(json.dumps(results), encoding="utf-8")
    comparison = compare(shifted, reference, independent=True)
    cells = comparison.cells
    acc = cells[cells["metric"] == "acc"]
    assert acc["diff"].to_numpy() == pytest.approx([SHIFT] * len(acc))
    assert (cells.loc[cells["metric"] != "acc", "diff"] == 0).all()
    # independent samples: a 0.05 shift is > 2 combined stderr wherever the stderr is below 0.0177
    small_se = acc["combined_stderr"] < SHIFT / 2
    assert small_se.sum() > 10 and not acc.loc[small_se, "agree"].any()
    assert acc.loc[~small_se, "agree"].all()
    assert comparison.agreeing == len(cells) - int(small_se.sum())
    # a reproduction: 5 points is many items wherever n is known; the cells outside come first
    reproduction = compare(shifted, reference)
    outside = reproduction.cells[~reproduction.cells["agree"]]
    assert len(outside) == len(acc) and (outside["metric"] == "acc").all()
    assert not reproduction.cells["agree"].iloc[: len(outside)].any()

    assert cli.main(["compare", str(shifted), str(reference), "--out", str(tmp_path / "cmp"), "--independent"]) == 0
    printed = capsys.readouterr().out
    assert f"{comparison.agreeing} of 352 cells agree" in printed and "(100.0%" not in printed
    assert cli.main(["compare", str(shifted), str(reference), "--out", str(tmp_path / "cmp"), "--fail-on-disagree"]) == 1
    assert cli.main(["compare", str(ours), str(reference), "--out", str(tmp_path / "cmp"), "--fail-on-disagree"]) == 0


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["model", "step", "task", "metric", "value", "stderr"])
    return frame.assign(size=None, parent=None, primary=True, higher_is_better=True, n=100, status="done")


def test_differences_in_combined_stderr_by_hand():
    ours = _frame([("m", 1, "t", "acc", 0.50, 0.03), ("m", 2, "t", "acc", 0.52, 0.03), ("m", 1, "t", "ppl", 10.0, None),
                   ("m", 2, "t", "ppl", 10.0, None), ("m", 3, "t", "acc", 0.1, 0.01)])
    ref = _frame([("m", 1, "t", "acc", 0.40, 0.04), ("m", 2, "t", "acc", 0.41, 0.04), ("m", 1, "t", "ppl", 10.0, None),
                  ("m", 2, "t", "ppl", 10.5, None), ("m", 4, "t", "acc", 0.1, 0.01)])
    comparison = compare_frames(ours, ref, independent=True)
    cells = comparison.cells.set_index(["step", "metric"])
    assert cells.loc[(1, "acc"), "z"] == pytest.approx(0.10 / 0.05)  # sqrt(0.03^2 + 0.04^2) = 0.05: exactly 2, agrees
    assert bool(cells.loc[(1, "acc"), "agree"]) is True
    assert cells.loc[(2, "acc"), "z"] == pytest.approx(0.11 / 0.05) and not cells.loc[(2, "acc"), "agree"]
    assert bool(cells.loc[(1, "ppl"), "agree"]) is True and not cells.loc[(2, "ppl"), "agree"]  # no stderr: equal or not
    assert comparison.only_ours == 1 and comparison.only_reference == 1
    assert compare_frames(ours, ref, independent=True, tolerance=3).agreeing == 3  # z = 2.2 agrees; unequal ppl never


@pytest.mark.parametrize("shift_items, agrees", [(0, True), (1, True), (-1, True), (2, False), (3, False)])
def test_a_reproduction_allows_one_item_in_a_hundred(shift_items, agrees):
    ours = _frame([("m", 1, "t", "acc", 0.50 + shift_items / 100, 0.05)])
    ref = _frame([("m", 1, "t", "acc", 0.50, 0.05)])
    cell = compare_frames(ours, ref).cells.iloc[0]
    assert cell["diff_items"] == pytest.approx(shift_items) and cell["diff_points"] == pytest.approx(shift_items)
    assert bool(cell["agree"]) is agrees and cell["verdict"] == ("agree" if agrees else "disagree")
    # independent samples: even 3 items in 100 is well inside 2 combined stderr (0.14)
    assert bool(compare_frames(ours, ref, independent=True).cells.iloc[0]["agree"]) is True


def test_a_reproduction_in_large_cells_and_its_other_rules():
    # 0.5% of 2000 items is 10: a 10-item difference agrees, 11 does not; --tolerance-items overrides
    ours = _frame([("m", 1, "t", "acc", 0.5 + 10 / 2000, None), ("m", 2, "t", "acc", 0.5 + 11 / 2000, None)]).assign(n=2000)
    ref = _frame([("m", 1, "t", "acc", 0.5, None), ("m", 2, "t", "acc", 0.5, None)]).assign(n=2000)
    assert compare_frames(ours, ref).cells.set_index("step")["agree"].to_dict() == {1: True, 2: False}
    assert compare_frames(ours, ref, tolerance_items=11).agreeing == 2
    # a continuous metric: float noise only
    ppl_ours = _frame([("m", 1, "t", "word_perplexity", 20.001, None), ("m", 2, "t", "word_perplexity", 20.01, None)])
    ppl_ref = _frame([("m", 1, "t", "word_perplexity", 20.0, None), ("m", 2, "t", "word_perplexity", 20.0, None)])
    assert compare_frames(ppl_ours, ppl_ref).cells.set_index("step")["agree"].to_dict() == {1: True, 2: False}
    # the reference must have scored as many items; a side without n takes the other's
    other_n = compare_frames(_frame([("m", 1, "t", "acc", 0.5, None)]), _frame([("m", 1, "t", "acc", 0.5, None)]).assign(n=90))
    assert other_n.cells.iloc[0]["verdict"] == "different n" and other_n.agreeing == 0
    no_n = compare_frames(_frame([("m", 1, "t", "acc", 0.51, None)]), _frame([("m", 1, "t", "acc", 0.5, None)]).assign(n=None))
    assert no_n.cells.iloc[0]["n"] == 100 and bool(no_n.cells.iloc[0]["agree"]) is True


def test_nothing_in_common_is_a_one_line_error(imported, tmp_path, capsys):
    ours, _ = imported
    other = _import(["pythia-410m-deduped/zero-shot/410m-deduped_step0.json"], tmp_path)
    assert cli.main(["compare", str(ours), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no (model, step, task, metric)" in err and len(err.splitlines()) == 1
