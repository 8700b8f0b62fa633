"""The report says only true things: every status and every agreement outcome read back from the generated
text, the loss proxy named in every heading, the proxy's own task and bias tasks left out, and the item
counts and chance levels of imported rows filled from the task registry (on an excerpt of Pythia's
published evals, tests/fixtures/pythia_v0_excerpt.csv)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.analysis import agreement as agreement_module
from harness.analysis import report, report_pages
from harness.analysis.agreement import Agreement
from harness.analysis.arguments import add_report_arguments
from harness.analysis.curves import Curve
from harness.analysis.known_tasks import KNOWN_TASKS, fill_known
from harness.analysis.thresholds import (
    EMERGED,
    FROM_START,
    INSUFFICIENT,
    NO_EMERGENCE,
    SMOOTH_RISE,
    STATUSES,
    emergence_threshold,
    with_q,
)

from conftest import FIXTURES

EXCERPT = FIXTURES / "pythia_v0_excerpt.csv"


def _sweep(p_at, seed: int, items: int = 1000, chance: float = 0.25, finals=(2.6, 2.3, 2.0)) -> Curve:
    rng = np.random.default_rng(seed)
    steps = np.geomspace(1e3, 1.43e5, 10)
    u = (steps ** -0.5 - steps[-1] ** -0.5) / (steps[0] ** -0.5 - steps[-1] ** -0.5)
    loss = np.concatenate([f + (3.8 - f) * u for f in finals])
    value = rng.binomial(items, np.clip(p_at(loss), 0, 1)) / items
    return Curve.of(loss, value, np.full(len(loss), np.nan), np.full(len(loss), items), "acc", True, chance)


@pytest.fixture(scope="module")
def one_of_each_status():
    made = {
        EMERGED: emergence_threshold(_sweep(lambda L: 0.25 + 0.3 * np.clip(2.6 - L, 0, None), 1, finals=(2.2, 2.0, 1.8)),
                                     resamples=200),
        SMOOTH_RISE: emergence_threshold(_sweep(lambda L: 0.25 + 0.2 * (3.8 - L) / 1.8, 2), resamples=200),
        NO_EMERGENCE: emergence_threshold(_sweep(lambda L: 0.25 + 0 * L, 3), resamples=200),
        FROM_START: emergence_threshold(_sweep(lambda L: 0.27 + 0 * L, 6, items=2000), resamples=200),
        INSUFFICIENT: emergence_threshold(Curve.of([3, 2.5, 2], [0.3, 0.4, 0.5], [0.01] * 3, [1000] * 3, "acc", True, 0.25)),
    }
    assert {k: t.status for k, t in made.items()} == {k: k for k in STATUSES}
    return made


def test_every_status_reads_as_what_it_is(one_of_each_status):
    for status, t in one_of_each_status.items():
        text = t.describe()
        has_eta = "η =" in text
        assert has_eta == (status == EMERGED), text  # a number for η only where a threshold is supported
        assert ("no threshold supported" in text or "edge of the observed losses" in text) == (status == SMOOTH_RISE), text
        if status == EMERGED:
            assert "threshold supported over every smooth alternative" in text and t.low <= t.eta <= t.high
        if status == SMOOTH_RISE:
            assert text.startswith("smooth rise: departs below") and "best smooth fit" in text
            assert t.departure_low <= t.departure_loss <= t.departure_high
        if status == FROM_START:
            assert "above chance" in text and "consistent with flat" in text and "not flat" not in text
        if status in (NO_EMERGENCE, INSUFFICIENT):
            assert "departs below" not in text and "threshold supported" not in text
    # a demoted "emerged" keeps no η and says why
    demoted = with_q(one_of_each_status[EMERGED], 0.5)
    assert demoted.status == SMOOTH_RISE and "η =" not in demoted.describe()
    assert "threshold not supported after the other tasks" in demoted.describe()


def _analysis(a: Agreement | None):
    return SimpleNamespace(agreement=a, pooled=object())


def _agreement(agree, p, q=None) -> Agreement:
    a = Agreement(agree, p, ("small", "large"), (), "", None, None, 0.3, 0.1, 0.5, ("small", "large"),
                  {"small": 0.15, "large": -0.15}, "logistic")
    a = agreement_module.replace(a, note=agreement_module._verdict_note(a))
    return agreement_module.with_q(a, q) if q is not None else a


@pytest.mark.parametrize("agree,p,q", [(True, 0.4, None), (False, 0.01, None), (True, 0.01, 0.2), (False, 0.001, 0.01)])
def test_every_agreement_outcome_reads_consistently(agree, p, q):
    a = _agreement(agree if q is None else None, p, q)
    text = report_pages._agreement_text(_analysis(a))
    deciding = q if q is not None else p
    if deciding < 0.05:
        assert a.agree is False and text.startswith("disagree (p = ")
        assert "shifted per size fits better" in text and "fits as well" not in text
    else:
        assert a.agree is True and text.startswith("agree (p = ")
        assert "fits as well" in text and "fits better" not in text
    assert "largest shift 0.30 nats [0.10, 0.50]" in text
    assert (", q = " in text) == (q is not None)


def test_undetermined_agreement_says_why():
    a = Agreement(None, None, ("small",), (), "fewer than two sizes overlap in loss")
    text = report_pages._agreement_text(_analysis(a))
    assert text == "undetermined: fewer than two sizes overlap in loss"
    assert report_pages._agreement_text(SimpleNamespace(agreement=None, pooled=object())) == "one model"


def test_known_tasks_match_the_published_standard_errors():
    # each count equals p(1 − p)/stderr² + 1 on Pythia's published rows
    rows = pd.read_csv(EXCERPT)
    acc = rows[(rows["metric"] == "acc") & rows["value"].between(0.05, 0.95)]
    implied = (acc["value"] * (1 - acc["value"]) / acc["stderr"] ** 2 + 1).groupby(acc["task"]).median().round()
    for task, n in implied.items():
        known = KNOWN_TASKS[task.removesuffix("_pythia_v0")][0]
        assert known == n, task
    filled, notes = fill_known(rows.assign(n=np.nan, random_baseline=np.nan))
    sciq = filled[(filled["task"] == "sciq_pythia_v0") & (filled["metric"] == "acc")]
    assert (sciq["n"] == 1000).all() and (sciq["random_baseline"] == 0.25).all()
    piqa = filled[(filled["task"] == "piqa") & (filled["metric"] == "acc")]
    assert (piqa["random_baseline"] == 0.5).all()
    assert filled.loc[filled["metric"] == "perplexity", "n"].isna().all()  # only accuracy rows
    assert "sciq_pythia_v0: chance 0.25 and 1000 items" in notes


def test_the_pythia_excerpt_report_names_the_proxy_and_reports_the_shift(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args([str(EXCERPT), "--out", str(tmp_path), "--bootstrap", "200", "--no-figures",
                              "--loss-from-task", "lambada_openai:perplexity"])
    assert report.run(args) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "thresholds.csv")
    # default tasks: the proxy's own task and the bias task are left out, and the notes say so
    assert set(table["task"]) == {"sciq_pythia_v0", "arc_easy", "piqa"}
    assert "lambada_openai is the loss proxy: it is not analysed against its own perplexity" in printed
    assert "1 bias task (crows_pairs_english_age) left out: its metric has no clear better direction" in printed
    assert "sciq_pythia_v0: chance 0.25 and 1000 items" in printed
    pooled = table[table["scope"] == "all models"].set_index("task")
    for task in ("sciq_pythia_v0", "arc_easy", "piqa"):
        row = pooled.loc[task]
        assert math.isfinite(row["largest_shift"]) and row["shift_low"] <= row["largest_shift"] <= row["shift_high"]
        assert row["sizes_agree"] in (True, False) and math.isfinite(row["agreement_p"])
    # SciQ's reference is never below its chance level
    sciq = table[table["task"] == "sciq_pythia_v0"]
    assert (sciq["reference"].dropna() >= 0.25 - 1e-12).all()
    md = (tmp_path / "report.md").read_text()
    assert "Correlation with the ln(lambada_openai perplexity) (a loss proxy)" in md
    assert "pre-training loss" not in md.split("## Correlation")[1].split("\n")[0]
    # with --task, a bias task is analysed when asked for
    args = parser.parse_args([str(EXCERPT), "--out", str(tmp_path / "b"), "--bootstrap", "200", "--no-figures",
                              "--loss-from-task", "lambada_openai:perplexity", "--task", "crows_pairs_english_age"])
    assert report.run(args) == 0
    assert set(pd.read_csv(tmp_path / "b" / "thresholds.csv")["task"]) == {"crows_pairs_english_age"}


def test_signal_and_noise_hand_computed_and_the_order_of_tasks():
    # two models; finals 0.6 and 0.4 (mean 0.5): signal 0.4; last three 0.5, 0.55, 0.6 (std 0.05 / mean 0.55) and
    # 0.4, 0.4, 0.4 (0): noise (0.0909 + 0) / 2
    rows = pd.DataFrame({"series": ["a"] * 4 + ["b"] * 4, "step": [1, 2, 3, 4] * 2,
                         "loss": [4, 3, 2, 1] * 2, "value": [0.3, 0.5, 0.55, 0.6, 0.2, 0.4, 0.4, 0.4]})
    sn = report.signal_noise(rows)
    assert sn["signal"] == pytest.approx(0.4) and sn["noise"] == pytest.approx(0.05 / 0.55 / 2)
    assert sn["ratio"] == pytest.approx(0.4 / (0.05 / 0.55 / 2))
    assert report.signal_noise(rows[rows["series"] == "a"]) == {}  # one model: no signal to speak of


def _mirage_frame(seed: int) -> pd.DataFrame:
    """Three sizes; exact match a broken stick at 2.6 (n = 300), its per-token log-prob linear in loss."""
    rng = np.random.default_rng(seed)
    rows = []
    steps = np.geomspace(1e3, 1.43e5, 10).astype(int)
    u = (steps ** -0.5 - steps[-1] ** -0.5) / (steps[0] ** -0.5 - steps[-1] ** -0.5)
    for size, final, params in (("70m", 2.2, 7e7), ("410m", 2.0, 4.1e8), ("1b", 1.8, 1e9)):
        for step, loss in zip(steps, final + (3.8 - final) * u):
            em = rng.binomial(300, 0.3 * max(2.6 - loss, 0)) / 300
            lp = -0.2 - 0.65 * (loss - 2.0) + 0.01 * rng.standard_normal()
            common = {"model": f"toy/{size}", "size": size, "params_non_embedding": params, "step": int(step),
                      "revision": f"step{int(step)}", "parent": None, "loss_source": None, "compute": np.nan,
                      "loss": loss, "task": "toy", "random_baseline": 0.0, "higher_is_better": True}
            rows += [{**common, "metric": "exact_match", "value": em, "n": 300,
                      "stderr": math.sqrt(max(em * (1 - em), 1e-4) / 299), "primary": True},
                     {**common, "metric": "target_logprob_per_token", "value": lp, "stderr": 0.01, "primary": False},
                     {**common, "metric": "target_logprob", "value": 5 * lp, "stderr": 0.05, "primary": False}]
    return pd.DataFrame(rows)


def test_the_mirage_column_puts_the_companion_verdict_beside_exact_match(tmp_path):
    built = report.build_report(_mirage_frame(0), resamples=200)
    (a,) = built.analyses
    assert a.metric == "exact_match" and a.pooled.status == EMERGED
    assert a.companion_metric == "target_logprob_per_token" and a.companion.status == SMOOTH_RISE
    summary = report_pages.summary_frame(built).iloc[0]
    assert summary["companion (per-token log-prob)"].startswith(
        "smooth rise: exact match jumps, the companion rises smoothly")
    table = report_pages.thresholds_frame(built)
    pooled = table[table["scope"] == "all models"].iloc[0]
    assert pooled["companion_status"] == SMOOTH_RISE and pooled["companion_shape_p"] >= 0.05
    assert table.loc[table["scope"] != "all models", "companion_status"].isna().all()
