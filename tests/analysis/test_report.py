"""``harness report`` end to end on synthetic results folders written in our results.json schema."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image
from scipy import stats

from harness import store
from harness.analysis import figures, report
from harness.analysis.arguments import add_report_arguments
from harness.analysis.points import POOLED, series_of
from harness.errors import UserError
from harness.table import results_table

# (name, non-embedding params): three sizes of a made-up suite
SIZES = (("toy-70m", 19_000_000), ("toy-410m", 300_000_000), ("toy-1b", 800_000_000))
STEPS = (1000, 2000, 4000, 8000, 16000, 32000, 48000, 64000, 96000, 143000)
ITEMS = 1000
ETA = 2.6  # where the synthetic MC accuracy starts to rise


def synthetic_loss(params: int, step: int) -> float:
    # Chinchilla's fitted law L = E + A/N^α + B/D^β, D = step × 2M tokens: sizes separate late in training.
    return 1.69 + 406.4 / params**0.34 + 410.7 / (step * 2_097_152) ** 0.28


def _entry(value: float, stderr: float | None, baseline: float | None, higher: bool = True) -> dict:
    return {"value": value, "stderr": stderr, "n": ITEMS, "random_baseline": baseline, "higher_is_better": higher}


def _proportion(rng, p: float) -> tuple[float, float]:
    v = rng.binomial(ITEMS, min(max(p, 0.0), 1.0)) / ITEMS
    return v, math.sqrt(v * (1 - v) / (ITEMS - 1))


def checkpoint_results(name: str, params: int, step: int, rng, with_loss: bool = True) -> dict:
    loss = synthetic_loss(params, step)
    rise = max(ETA - loss, 0.0)
    acc = _proportion(rng, 0.25 + 0.9 * rise)
    gsm = _proportion(rng, 0.6 * max(2.45 - loss, 0.0))
    flat = _proportion(rng, 0.25)
    ccp = 0.25 + 0.5 * rise + 0.03 * max(3.2 - loss, 0) + rng.normal(0, 0.002)
    brier = 0.75 - 0.7 * rise - 0.03 * max(3.2 - loss, 0) + rng.normal(0, 0.002)
    def mc(metrics, primary):
        return {"parent": None, "primary_metric": primary, "metrics": metrics}

    return {
        "schema": 1,
        "model": {"model": f"org/{name}", "revision": f"step{step}", "resolved_revision": f"{step:040x}",
                  "params_total": params + 50_000_000, "params_non_embedding": params, "dtype": "float32"},
        "step": step,
        "loss": {"loss": loss, "bits_per_byte": loss / math.log(2) / 4, "source": "corpus"} if with_loss else None,
        "tasks": {
            "mmlu": mc({"acc": _entry(*acc, 0.25), "correct_choice_prob": _entry(ccp, 0.004, 0.25),
                        "brier_score": _entry(brier, 0.004, 0.75, higher=False)}, "acc"),
            "gsm8k": mc({"exact_match_strict": _entry(*gsm, 0.0)}, "exact_match_strict"),
            "coin_flip": mc({"acc": _entry(*flat, 0.25)}, "acc"),
            "mmlu:anatomy": {**mc({"acc": _entry(*acc, 0.25)}, "acc"), "parent": "mmlu"},
        },
    }


def write_sweep(root: Path, sizes=SIZES, steps=STEPS, seed: int = 0, with_loss: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    for name, params in sizes:
        for step in steps:
            path = root / store.checkpoint_dirname(f"org/{name}", f"step{step}") / store.RESULTS_NAME
            store.write_json_atomic(path, checkpoint_results(name, params, step, rng, with_loss))
    return root


def report_args(results: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    return parser.parse_args([str(results), "--out", str(out), "--bootstrap", "200", *extra])


def _png(path: Path) -> np.ndarray:
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels[..., :3].var() > 1e-4, f"{path.name} is blank"
    return pixels


def _expected_shape(rows: int, cols: int) -> tuple[int, int]:
    width, height = figures.figure_inches(rows, cols)
    return round(height * figures.DPI), round(width * figures.DPI)


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = write_sweep(root / "results")
    out = root / "report"
    assert report.run(report_args(results, out)) == 0
    return out


def test_report_writes_pages_tables_and_figures(sweep_report, capsys):
    out = sweep_report
    for name in ("index.html", "report.md", "thresholds.csv", "correlations.csv", "points.csv"):
        assert (out / name).stat().st_size > 0, name
    # three top-level tasks in a 1×3 grid: 12.6 × 4.2 inches at 100 dpi
    assert _expected_shape(1, 3) == (420, 1260)
    for x in ("loss", "step"):
        assert _png(out / "figures" / f"performance_vs_{x}.png").shape[:2] == (420, 1260)
        assert (out / "figures" / f"performance_vs_{x}.svg").read_text().lstrip().startswith("<?xml")
    assert _png(out / "figures" / "multiple_choice_mmlu.png").shape[:2] == (420, 1260)
    # no tokens_seen in today's table: no compute figure, and the report says why
    assert not (out / "figures" / "performance_vs_compute.png").exists()
    markdown = (out / "report.md").read_text()
    assert "figure against training compute is skipped" in markdown
    assert "![Performance against pre-training loss](figures/performance_vs_loss.png)" in markdown
    page = (out / "index.html").read_text()
    assert '<img src="figures/multiple_choice_mmlu.png"' in page and "<table" in page
    # the subtask is not reported by default, only the top-level tasks
    assert set(pd.read_csv(out / "thresholds.csv")["task"]) == {"mmlu", "gsm8k", "coin_flip"}


def test_report_thresholds_match_the_synthetic_truth(sweep_report):
    table = pd.read_csv(sweep_report / "thresholds.csv")
    pooled = table[table["scope"] == POOLED].set_index("task")
    mmlu = pooled.loc["mmlu"]
    # 4-choice accuracy: the reference is the larger of chance and the measured plateau (~0.25 here)
    assert abs(mmlu["reference"] - 0.25) < 0.03
    assert mmlu["status"] == "emerged" and mmlu["eta_low"] <= ETA <= mmlu["eta_high"]
    # gsm8k exact match: plateau reference (0 at high loss), rises below 2.45
    gsm = pooled.loc["gsm8k"]
    assert gsm["reference"] == 0.0
    assert gsm["status"] == "emerged" and gsm["eta_low"] <= 2.45 <= gsm["eta_high"]
    coin = pooled.loc["coin_flip"]
    assert coin["status"] in ("no emergence", "above reference from the start") and np.isnan(coin["eta"])
    # per model: the 70m model never gets below η = 2.6 (its final loss is ~2.77), the others do
    models = table[(table["task"] == "mmlu") & (table["scope"] != POOLED)].set_index("scope")
    assert list(models.index) == ["toy-70m (19M)", "toy-410m (300M)", "toy-1b (800M)"]
    assert models.loc["toy-70m (19M)", "status"] != "emerged" and np.isnan(models.loc["toy-70m (19M)", "eta"])
    assert models.loc["toy-1b (800M)", "status"] == "emerged"
    assert mmlu["sizes_agree"] in (True, "True") and 0 <= mmlu["agreement_p"] <= 1
    # "no emergence" curves carry no η anywhere in the table
    assert table.loc[table["status"] != "emerged", ["eta", "eta_low", "eta_high"]].isna().all().all()
    _png(sweep_report / "figures" / "thresholds.png")
    markdown = (sweep_report / "report.md").read_text()
    assert "![Verdicts per model](figures/thresholds.png)" in markdown and "| toy-70m (19M) |" in markdown


def test_report_correlations_equal_scipy_on_the_same_points(sweep_report):
    points = pd.read_csv(sweep_report / "points.csv")
    correlations = pd.read_csv(sweep_report / "correlations.csv")
    assert set(correlations["scope"]) == {POOLED, "toy-70m (19M)", "toy-410m (300M)", "toy-1b (800M)"}
    for row in correlations.itertuples():
        sel = points[(points["task"] == row.task) & (points["metric"] == row.metric)]
        if row.scope != POOLED:
            sel = sel[sel["series_label"] == row.scope]
        assert row.n == len(sel) and row.left_out == 0
        if sel["value"].nunique() == 1:  # gsm8k at 0 for the small model: undefined, as scipy says
            assert np.isnan(row.spearman) and np.isnan(row.pearson)
            continue
        assert row.spearman == pytest.approx(stats.spearmanr(sel["loss"], sel["value"]).statistic, abs=1e-12)
        assert row.pearson == pytest.approx(stats.pearsonr(sel["loss"], sel["value"]).statistic, abs=1e-12)
    pooled = correlations[correlations["scope"] == POOLED].set_index(["task", "metric"])
    assert (pooled["n"] == len(SIZES) * len(STEPS)).all()
    # brier_score falls with the loss (lower is better), accuracy rises: opposite signs
    assert pooled.loc[("mmlu", "brier_score"), "spearman"] > 0 > pooled.loc[("mmlu", "acc"), "spearman"]


def test_max_loss_leaves_high_loss_checkpoints_out_of_the_correlations(tmp_path):
    results = write_sweep(tmp_path / "results")
    out = tmp_path / "out"
    assert report.run(report_args(results, out, "--max-loss", "3.0", "--no-figures")) == 0
    points = pd.read_csv(out / "points.csv")
    correlations = pd.read_csv(out / "correlations.csv")
    row = correlations[(correlations["task"] == "mmlu") & (correlations["metric"] == "acc")
                       & (correlations["scope"] == POOLED)].iloc[0]
    sel = points[(points["task"] == "mmlu") & (points["metric"] == "acc")]
    kept = sel[sel["loss"] <= 3.0]
    assert 0 < len(kept) < len(sel) and row.n == len(kept) and row.left_out == len(sel) - len(kept)
    assert row.spearman == pytest.approx(stats.spearmanr(kept["loss"], kept["value"]).statistic, abs=1e-12)
    assert f"{len(sel) - len(kept)} above 3 left out" in (out / "report.md").read_text()
    assert not (out / "figures").exists()  # --no-figures: numbers only


def test_run_prints_the_summary(tmp_path, capsys):
    results = write_sweep(tmp_path / "results", sizes=SIZES[2:], steps=(1000, 16000, 143000))
    assert report.run(report_args(results, tmp_path / "out", "--task", "mmlu:anatomy")) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("| task | metric | status | threshold η [90% interval] |")
    assert "| mmlu:anatomy | acc |" in printed and "toy-1b (800M) @ step 143000" in printed
    assert f"report: {tmp_path / 'out' / 'index.html'}" in printed
    # one size, three checkpoints: a 1×1 grid
    assert _png(tmp_path / "out" / "figures" / "performance_vs_loss.png").shape[:2] == _expected_shape(1, 1)


def test_results_without_loss_are_drawn_against_step_and_compute(tmp_path, monkeypatch):
    results = write_sweep(tmp_path / "results", sizes=SIZES[:2], steps=(1000, 16000, 143000), with_loss=False)
    table = results_table(results)
    # what the sweep adds to the table: tokens seen, a size label, a status; compute left for us to derive
    table["tokens_seen"] = table["step"].astype(float) * 2_097_152
    table["size"] = table["model"].str.removeprefix("org/toy-")
    table["status"] = "ok"
    failed = table.iloc[[0]].assign(status="failed", value=0.99, step=999)
    monkeypatch.setattr(report, "read_results", lambda root: pd.concat([table, failed], ignore_index=True))
    out = tmp_path / "out"
    assert report.run(report_args(results, out)) == 0
    assert not (out / "figures" / "performance_vs_loss.png").exists()
    _png(out / "figures" / "performance_vs_compute.png")
    _png(out / "figures" / "multiple_choice_mmlu.png")  # against step
    points = pd.read_csv(out / "points.csv")
    assert 999 not in set(points["step"])  # the failed row is ignored
    assert set(points["series_label"]) == {"toy-70m (19M)", "toy-410m (300M)"}
    assert set(points["size_group"]) == {"70m", "410m"}  # the size label colours the curve
    row = points[(points["series"] == "org/toy-410m") & (points["step"] == 16000)].iloc[0]
    assert row["compute"] == 6 * 300_000_000 * 16000 * 2_097_152
    markdown = (out / "report.md").read_text()
    assert "no pre-training loss in these results" in markdown and "1 failed evaluations (checkpoint × task) are ignored" in markdown
    assert "needs a pre-training loss" in markdown
    assert pd.read_csv(out / "thresholds.csv").empty


def test_series_of_groups_a_run_s_checkpoint_folders():
    assert series_of("/runs/tiny/checkpoint-500", None) == "/runs/tiny"
    assert series_of("runs/tiny/step3000/", None) == "runs/tiny"
    # a hub id at a revision, or a folder whose name is more than a checkpoint name, is its own model
    assert series_of("EleutherAI/pythia-410m", "step3000") == "EleutherAI/pythia-410m"
    assert series_of("org/model-step1000", None) == "org/model-step1000"
    assert series_of("checkpoint-500", None) == "checkpoint-500"


def test_report_user_errors(tmp_path):
    results = write_sweep(tmp_path / "results", sizes=SIZES[:1], steps=(1000, 143000))
    with pytest.raises(UserError, match="no results for task nope"):
        report.run(report_args(results, tmp_path / "out", "--task", "nope"))
    with pytest.raises(UserError, match="no task has metric 'bleu'"):
        report.run(report_args(results, tmp_path / "out", "--metric", "bleu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no results.json under"):
        report.run(report_args(tmp_path / "empty", tmp_path / "out"))


# --- generative tasks: companions and the prediction test -------------------------------------------

def test_generative_tasks_get_companion_figures_and_the_prediction_test(tmp_path, capsys):
    from conftest import synthetic_items, write_item_sweep

    results = write_item_sweep(tmp_path / "results", synthetic_items(surrogate_predicts=True))
    out = tmp_path / "out"
    assert report.run(report_args(results, out)) == 0
    printed = capsys.readouterr().out
    # the prediction table is printed after the summary: the surrogate's row, then the baseline's
    table = printed[printed.index("| task | metric | split |"):]
    surrogate, baseline = [line for line in table.splitlines() if line.startswith("| toy |")]
    assert "| mean exp(target_logprob) |" in surrogate and "(quantile 0.5 of the losses)" in surrogate
    assert surrogate.split(" | ")[-2] == "yes" and "the surrogate predicts the jump" in surrogate
    assert "| naive: exact_match linear in loss |" in baseline and baseline.split(" | ")[-2] == "no"
    # exact match and the three companions the results hold: 4 panels, 3 to a row
    assert _png(out / "figures" / "companions_toy.png").shape[:2] == _expected_shape(2, 3)
    assert _png(out / "figures" / "prediction_toy.png").shape[:2] == _expected_shape(1, 2)
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["role"]) == {"fitted", "held out"} and len(predictions) == 13
    held = predictions[predictions["role"] == "held out"]
    assert (held["surrogate"] - held["measured"]).abs().mean() < 0.03
    markdown = (out / "report.md").read_text()
    assert "## Can a smooth metric predict emergence? The prediction test" in markdown
    # numbers only: the same prediction table, no figure
    assert report.run(report_args(results, tmp_path / "numbers", "--no-figures")) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "numbers" / "predictions.csv"), predictions)
    assert not (tmp_path / "numbers" / "figures").exists()
    assert "![Generative tasks: exact match and its continuous companions](figures/companions_toy.png)" in markdown
    # the companions' axis and scale: step, params (log) and a log y run too; bad axes are one line
    for extra in (("--x", "step", "--y", "log"), ("--x", "params"), ("--x", "compute")):
        if extra[1] == "compute":
            with pytest.raises(UserError, match="the results have no compute for the --x axis"):
                report.run(report_args(results, tmp_path / "other", *extra))
            continue
        assert report.run(report_args(results, tmp_path / "other", *extra)) == 0
        _png(tmp_path / "other" / "figures" / "companions_toy.png")


def test_a_given_cut_reaches_the_prediction_test(tmp_path, capsys):
    from conftest import synthetic_items, write_item_sweep

    results = write_item_sweep(tmp_path / "results", synthetic_items(surrogate_predicts=False))
    assert report.run(report_args(results, tmp_path / "out", "--cut", "3.3")) == 0
    row = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert (row["cut"] == 3.3).all() and (row.loc[row["loss"] > 3.3, "role"] == "fitted").all()
    assert (row.loc[row["loss"] <= 3.3, "role"] == "held out").all()
    assert "fit the checkpoints above loss 3.300; predict the rest (given)" in capsys.readouterr().out


def test_generative_results_without_loss_draw_their_companions_against_step(tmp_path, monkeypatch, capsys):
    """A plain `harness eval` without --loss-corpus (or imported results) still gets its report."""
    from conftest import synthetic_items, write_item_sweep

    results = write_item_sweep(tmp_path / "results", synthetic_items(surrogate_predicts=True))
    table = results_table(results).assign(loss=float("nan"))
    monkeypatch.setattr(report, "read_results", lambda root: table)
    out = tmp_path / "out"
    assert report.run(report_args(results, out)) == 0
    _png(out / "figures" / "companions_toy.png")
    assert not (out / "predictions.csv").exists()  # the prediction test needs the loss axis
    assert "needs a pre-training loss" in (out / "report.md").read_text()


# --- tables as input, models as series ---------------------------------------------------------------

def test_a_table_file_gives_the_same_verdicts_as_its_results_folder(tmp_path, capsys):
    from harness import cli

    results = write_sweep(tmp_path / "results", sizes=SIZES[1:], steps=STEPS)
    assert report.run(report_args(results, tmp_path / "from_folder", "--no-figures")) == 0
    for fmt in ("csv", "parquet"):
        table = tmp_path / f"table.{fmt}"
        assert cli.main(["table", str(results), "--format", fmt, "--output", str(table)]) == 0
        assert report.run(report_args(table, tmp_path / f"from_{fmt}", "--no-figures")) == 0
        expected = pd.read_csv(tmp_path / "from_folder" / "thresholds.csv")
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / f"from_{fmt}" / "thresholds.csv"), expected)
    # a hand-made table with only the columns the analysis needs
    points = pd.read_csv(tmp_path / "from_folder" / "points.csv")
    minimal = points[["model", "task", "metric", "value", "loss"]]
    minimal.to_csv(tmp_path / "minimal.csv", index=False)
    assert report.run(report_args(tmp_path / "minimal.csv", tmp_path / "from_minimal")) == 0
    verdicts = pd.read_csv(tmp_path / "from_minimal" / "thresholds.csv")
    assert set(verdicts["task"]) == {"mmlu", "gsm8k", "coin_flip", "mmlu:anatomy"}  # no parent column: all top level
    _png(tmp_path / "from_minimal" / "figures" / "performance_vs_loss.png")


@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", "hello", "is neither a results folder nor a table"),
    ("bad.csv", "a,b\n1,2\n", "lacks the column(s) model, task, metric, value"),
    ("missing.csv", None, "does not exist"),
])
def test_a_path_that_is_no_results_is_a_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        report.run(report_args(path, tmp_path / "out"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("flag, value", [("--max-loss", "-1"), ("--cut-quantile", "1.5"), ("--bootstrap", "10")])
def test_out_of_range_report_flags_are_one_line_errors(tmp_path, flag, value):
    with pytest.raises(UserError, match=re.escape(flag)):
        report.run(report_args(tmp_path, tmp_path / "out", flag, value))


def test_standard_and_deduplicated_models_are_separate_curves(tmp_path):
    """Pythia's 160m and 160m-deduped share a size label but are two models: two series, two
    thresholds, one colour, two line styles."""
    results = write_sweep(tmp_path / "results", sizes=(("pythia-160m", 85_000_000), ("pythia-160m-deduped", 85_000_000)))
    table = results_table(results).assign(size="160m")
    table.to_csv(tmp_path / "table.csv", index=False)
    out = tmp_path / "out"
    assert report.run(report_args(tmp_path / "table.csv", out)) == 0
    points = pd.read_csv(out / "points.csv")
    assert set(points["series"]) == {"org/pythia-160m", "org/pythia-160m-deduped"}
    assert set(points["size_group"]) == {"160m"}
    thresholds = pd.read_csv(out / "thresholds.csv")
    mmlu = thresholds[thresholds["task"] == "mmlu"]
    assert list(mmlu["scope"]) == [POOLED, "pythia-160m (85M)", "pythia-160m-deduped (85M)"]
    styles = figures.series_styles(points, ("org/pythia-160m", "org/pythia-160m-deduped"))
    assert styles["org/pythia-160m"]["color"] == styles["org/pythia-160m-deduped"]["color"]
    assert [styles[s]["linestyle"] for s in ("org/pythia-160m", "org/pythia-160m-deduped")] == ["-", "--"]


def test_published_results_get_a_loss_axis_from_lambada_perplexity(tmp_path, capsys):
    """Pythia's published files carry no loss; ln(LAMBADA perplexity) at the same checkpoint stands in,
    labelled as the proxy it is, and the verdicts run on it (a status per model for each task)."""
    from harness import cli

    from conftest import FIXTURES

    imported = tmp_path / "imported"
    assert cli.main(["import-lm-eval", str(FIXTURES / "lm_eval_results" / "v0.3" / "evals" / "pythia-v1"),
                     "--out", str(imported)]) == 0
    table = results_table(imported)
    out = tmp_path / "out"
    assert report.run(report_args(imported, out, "--loss-from-task", "lambada_openai:perplexity",
                                  "--task", "sciq_pythia_v0", "piqa", "lambada_openai")) == 0
    printed = capsys.readouterr().out
    assert "the loss axis is a proxy, ln(lambada_openai:perplexity)" in printed
    points = pd.read_csv(out / "points.csv")
    ppl = table[(table["task"] == "lambada_openai") & (table["metric"] == "perplexity")].set_index(["model", "step"])["value"]
    for row in points.drop_duplicates(["model", "step"]).itertuples():
        assert row.loss == pytest.approx(math.log(ppl.loc[(row.model, row.step)]), rel=1e-12)
        assert row.loss_source == "task:lambada_openai:perplexity"
    verdicts = pd.read_csv(out / "thresholds.csv")
    # the proxy's own task is not analysed against its own perplexity, and the report says so
    assert set(verdicts["task"]) == {"sciq_pythia_v0", "piqa"}
    assert "lambada_openai is the loss proxy: it is not analysed against its own perplexity" in printed
    assert verdicts["status"].isin(["emerged", "smooth rise", "no emergence", "above reference from the start",
                                    "insufficient data"]).all()
    # every heading and axis names the proxy, none says "pre-training loss"
    md = (out / "report.md").read_text()
    assert "## Performance against ln(lambada_openai perplexity) (a loss proxy)" in md
    assert "## Correlation with the ln(lambada_openai perplexity) (a loss proxy)" in md
    assert "Performance against pre-training loss" not in md and "Correlation with the pre-training loss" not in md
    models = set(points["series_label"])
    for task in ("sciq_pythia_v0", "piqa"):
        assert set(verdicts.loc[(verdicts["task"] == task) & (verdicts["scope"] != POOLED), "scope"]) == models
    # the same column through `harness table`, and a name the results do not hold is one line
    assert cli.main(["table", str(imported), "--loss-from-task", "lambada_openai:perplexity", "--output",
                     str(tmp_path / "t.csv")]) == 0
    assert pd.read_csv(tmp_path / "t.csv")["loss_source"].dropna().eq("task:lambada_openai:perplexity").all()
    with pytest.raises(UserError, match="no values of that task and metric; use TASK:METRIC, e.g. lambada_openai:perplexity"):
        report.run(report_args(imported, out, "--loss-from-task", "lambada:ppl"))
