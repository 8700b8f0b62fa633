"""Sweeps over real checkpoints: a tiny GPT-NeoX trained with HF Trainer at two sizes (so every
``checkpoint-N/`` has its ``trainer_state.json``), swept on an MMLU fixture task.

One uninterrupted in-process sweep is the reference; interrupted (SIGINT, SIGKILL), sharded and hub
sweeps must end with the same table, and reruns must redo no finished unit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import cli, store
from harness.items import registry
from harness.table import results_table

from conftest import _TOKENIZER_TEXT, FIXTURES, build_tiny_gpt_neox

DATA = FIXTURES / "data"
TASK = "mmlu:abstract_algebra"
LIMIT = 8
STEPS, SAVE_STEPS = 240, 80
SEQUENCE, BATCH = 32, 8
TOKENS_PER_STEP = SEQUENCE * BATCH
CHECKPOINT_STEPS = [80, 160, 240]
ITEMS_PER_SWEEP = 2 * len(CHECKPOINT_STEPS) * LIMIT


def _train(root: Path, hidden_size: int) -> Path:
    """HF Trainer on the CPU: STEPS steps, a checkpoint (with trainer_state.json) every SAVE_STEPS."""
    from datasets import Dataset
    from transformers import AutoTokenizer, GPTNeoXForCausalLM, Trainer, TrainingArguments, default_data_collator

    init = build_tiny_gpt_neox(root / "init", seed=0, hidden_size=hidden_size)
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = GPTNeoXForCausalLM.from_pretrained(init)
    ids = tokenizer(" ".join(_TOKENIZER_TEXT))["input_ids"]
    blocks = [ids[i : i + SEQUENCE] for i in range(0, len(ids) - SEQUENCE, SEQUENCE)]
    data = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    args = TrainingArguments(
        output_dir=str(root / "run"), max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=3e-3,
        lr_scheduler_type="constant", logging_steps=10, save_steps=SAVE_STEPS, eval_strategy="steps",
        eval_steps=SAVE_STEPS, per_device_eval_batch_size=16, save_only_model=True, use_cpu=True, report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data.select(range(16)),
        processing_class=tokenizer, data_collator=default_data_collator,
    ).train()
    return root / "run"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# for the sweeps run as subprocesses
SUBPROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"small": _train(root / "small", 32), "big": _train(root / "big", 64)}


@pytest.fixture(scope="module")
def config_file(runs, tmp_path_factory) -> Path:
    """Two sizes: the small one's loss from trainer_state.json, the big one's computed on a corpus."""
    folder = tmp_path_factory.mktemp("config")
    # the training text itself, so the loss on it falls as training goes on (no held-out claim here)
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(_TOKENIZER_TEXT), encoding="utf-8")
    path = folder / "sweep.yaml"
    path.write_text(
        f"""
out: {folder / 'default-out'}
tasks: [{TASK}]
data_dir: {DATA}
limit: {LIMIT}
batch_size: 4
save_every: 2
tokens_per_step: {TOKENS_PER_STEP}
models:
  - checkpoints: {runs['small']}
    name: tiny-small
    size: small
    loss: {{from: trainer-state}}
  - checkpoints: {runs['big']}
    name: tiny-big
    size: big
    loss: {{corpus: corpus.txt, window: 32, tokens: 512}}
""",
        encoding="utf-8",
    )
    return path


def _sweep(*args: str) -> int:
    return cli.main(["sweep", *args, "--no-progress"])


def _summary(out: Path, shard: str = "all") -> dict:
    return json.loads((out / "logs" / f"summary-{shard}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reference(config_file, tmp_path_factory) -> Path:
    """An uninterrupted sweep, counting how often task items are built."""
    out = tmp_path_factory.mktemp("reference")
    family = registry.family_module(registry.resolve([TASK])[0].spec)
    calls = []
    original = family.build_rows
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(family, "build_rows", lambda *a, **k: calls.append(a) or original(*a, **k))
        assert _sweep("--config", str(config_file), "--out", str(out)) == 0
    assert len(calls) == 1  # once for the whole sweep, not once per checkpoint
    return out


def _done_units(out: Path) -> dict[str, int]:
    """key -> mtime of every finished unit file."""
    found = {}
    for path in out.rglob("units/*.json"):
        if not path.name.startswith(store.FAILED_PREFIX):
            found[path.stem] = path.stat().st_mtime_ns
    return found


def _items_on_disk(out: Path) -> tuple[int, int]:
    """(items in all item logs, items in logs of unfinished units)."""
    total = partial = 0
    for path in out.rglob("units/*.items.jsonl"):
        count = len(store.read_partial_jsonl(path))
        total += count
        if not path.with_name(path.name.replace(".items.jsonl", ".json")).exists():
            partial += count
    return total, partial


CONTINUOUS = ["value", "stderr", "loss", "loss_bits_per_byte", "compute", "random_baseline"]
KEYS = ["model", "step", "task", "metric"]


def _assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    actual = actual.sort_values(KEYS, kind="stable").reset_index(drop=True)
    expected = expected.sort_values(KEYS, kind="stable").reset_index(drop=True)
    assert len(actual) == len(expected)
    discrete = [c for c in expected.columns if c not in CONTINUOUS]
    pd.testing.assert_frame_equal(actual[discrete], expected[discrete])
    for column in CONTINUOUS:
        pd.testing.assert_series_equal(actual[column], expected[column], check_exact=False, atol=1e-6, rtol=0)


def test_every_checkpoint_gets_its_rows_with_a_falling_loss(reference, runs):
    table = results_table(reference)
    assert set(table["status"]) == {"done"}
    for name, source in [("tiny-small", "trainer-state"), ("tiny-big", "corpus")]:
        rows = table[table.model == name]
        assert sorted(rows["step"].unique()) == CHECKPOINT_STEPS
        for step in CHECKPOINT_STEPS:
            metrics = rows[rows.step == step]
            assert set(metrics["metric"]) == {"acc", "acc_norm", "acc_bytes", "correct_choice_prob", "brier_score"}
            assert (metrics["n"] == LIMIT).all() and metrics["loss"].notna().all()
        acc = rows[rows.metric == "acc"].sort_values("step")
        assert set(acc["loss_source"]) == {source}
        assert acc["loss"].is_monotonic_decreasing and acc["loss"].iloc[0] > acc["loss"].iloc[-1]
        assert list(acc["tokens_seen"]) == [s * TOKENS_PER_STEP for s in CHECKPOINT_STEPS]
        assert list(acc["compute"]) == [6.0 * n * d for n, d in zip(acc["params_nonembed"], acc["tokens_seen"])]
        assert (acc["params_nonembed"] < acc["params"]).all()
    small, big = (table[(table.model == m) & (table.metric == "acc")] for m in ("tiny-small", "tiny-big"))
    assert set(small["size"]) == {"small"} and big["params"].iloc[0] > small["params"].iloc[0]
    # the trainer-state loss is the training loss HF Trainer logged at that very step
    state = json.loads((runs["small"] / "checkpoint-160" / "trainer_state.json").read_text())
    logged = next(e["loss"] for e in state["log_history"] if e.get("step") == 160 and "loss" in e)
    assert small[small.step == 160]["loss"].item() == logged


def test_sweep_log_reports_load_and_eval_time_per_checkpoint(reference):
    events = store.read_partial_jsonl(reference / "logs" / "sweep-all.jsonl")
    timings = [e for e in events if e["event"] == "checkpoint"]
    assert len(timings) == 6
    for timing in timings:
        assert timing["load_seconds"] > 0 and timing["eval_seconds"] > 0
        assert timing["load_over_eval"] == pytest.approx(timing["load_seconds"] / timing["eval_seconds"], rel=1e-12)
    summary = _summary(reference)
    assert summary["units_done"] == summary["units_owned"] == summary["units_in_sweep"] == 12
    assert summary["items_scored"] == ITEMS_PER_SWEEP and summary["items_resumed"] == 0


def test_chunked_sweep_items_equal_a_whole_harness_eval(reference, runs, tmp_path):
    from harness.runs.evaluate import eval_spec, evaluate

    checkpoint = runs["big"] / "checkpoint-160"
    spec = eval_spec(str(checkpoint), (TASK,), data_dir=DATA, limit=LIMIT, batch_size=8, out=tmp_path, progress=False,
                     save_every=10_000)
    path = evaluate(spec, log=lambda m: None).results
    whole = {r["doc_id"]: r for r in store.checkpoint_items(path.parent)}
    view = json.loads((reference / "tiny-big" / "checkpoint-160" / store.RESULTS_NAME).read_text())
    swept = store.read_jsonl(reference / "tiny-big" / "checkpoint-160" / view["units"][TASK]["items"])
    assert sorted(r["doc_id"] for r in swept) == sorted(whole) == list(range(LIMIT))
    for record in swept:
        assert record["choice_logprobs"] == pytest.approx(whole[record["doc_id"]]["choice_logprobs"], abs=1e-6)
        assert record["pred"] == whole[record["doc_id"]]["pred"]


def test_rerun_redoes_nothing(reference, config_file):
    before = _done_units(reference)
    assert _sweep("--config", str(config_file), "--out", str(reference)) == 0
    summary = _summary(reference)
    assert summary["units_done"] == summary["units_recomputed"] == summary["items_scored"] == 0
    assert summary["units_skipped"] == 12 and set(summary["skipped"]) == set(before)
    assert _done_units(reference) == before  # not one unit file rewritten


def _run_until(args: list[str], ready, sig: int) -> subprocess.CompletedProcess:
    env = {**os.environ, **SUBPROCESS_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the sweep ended before it could be interrupted:\n{proc.stderr.read()[-2000:]}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _some_unit_done(out: Path):
    return lambda: bool(_done_units(out))


def _mid_unit(out: Path):
    """Some unit finished and another one part way through its items."""
    return lambda: bool(_done_units(out)) and _items_on_disk(out)[1] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_sweep_resumes_to_the_same_table(sig, config_file, reference, tmp_path):
    out = tmp_path / "out"
    ready = _some_unit_done(out) if sig == signal.SIGINT else _mid_unit(out)
    proc = _run_until(["sweep", "--config", str(config_file), "--out", str(out), "--no-progress"], ready, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in proc.stderr
        assert _summary(out)["interrupted"] is True
    else:
        assert proc.returncode == -signal.SIGKILL
    done_before = _done_units(out)
    on_disk, partial = _items_on_disk(out)
    assert 0 < len(done_before) < 12
    if sig == signal.SIGKILL:
        assert partial > 0  # killed inside a task unit: its scored items are on disk

    assert _sweep("--config", str(config_file), "--out", str(out)) == 0
    summary = _summary(out)
    assert set(summary["skipped"]) == set(done_before)
    assert not set(summary["ran"]) & set(done_before) and summary["units_recomputed"] == 0
    assert set(summary["ran"]) | set(done_before) == set(_done_units(reference))
    assert {k: v for k, v in _done_units(out).items() if k in done_before} == done_before
    # the unfinished unit resumed at the item it had reached: no item scored twice
    assert summary["items_resumed"] == partial
    assert summary["items_scored"] == ITEMS_PER_SWEEP - on_disk
    _assert_same_table(results_table(out), results_table(reference))


def test_truncated_weights_fail_that_checkpoint_and_the_others_finish(runs, tmp_path, capsys):
    run = shutil.copytree(runs["small"], tmp_path / "run")
    weights = run / "checkpoint-160" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (run / "checkpoint-240" / "trainer_state.json").unlink()  # its loss cannot be read; its task still runs
    out = tmp_path / "out"
    code = _sweep("--checkpoints", str(run), "--tasks", TASK, "--data-dir", str(DATA), "--limit", "2",
                  "--loss-from", "trainer-state", "--out", str(out), "--batch-size", "4")
    assert code == 1
    stderr = capsys.readouterr().err
    assert "2 failed:" in stderr and f"checkpoint-160 {TASK}:" in stderr and "checkpoint-240 loss:" in stderr
    table = results_table(out)
    failed = table[table.status == "failed"]
    assert list(zip(failed["step"], failed["task"])) == [(160, TASK), (240, "loss")]
    assert failed["error"].str.len().gt(0).all() and failed["value"].isna().all()
    assert "trainer_state.json" in failed[failed.task == "loss"]["error"].item()
    done = table[table.status == "done"]
    assert sorted(done["step"].unique()) == [80, 240]
    assert done[done.step == 80]["loss"].notna().all() and done[done.step == 240]["loss"].isna().all()
    assert [(f["checkpoint"], f["task"]) for f in _summary(out)["failures"]] == [
        (str(run / "checkpoint-160"), TASK), (str(run / "checkpoint-240"), "loss"),
    ]


def test_three_shards_together_equal_one_process(config_file, reference, tmp_path):
    out = tmp_path / "out"
    ran = []
    for index in range(3):
        assert _sweep("--config", str(config_file), "--out", str(out), "--shard", f"{index}/3") == 0
        summary = _summary(out, f"shard-{index}-of-3")
        assert summary["units_in_sweep"] == 12 and summary["units_skipped"] == 0
        ran.append(set(summary["ran"]))
    assert sum(len(r) for r in ran) == 12 and set.union(*ran) == set(_done_units(reference))
    # units go to shards by a hash of their key, and the keys hold the trained weights' content hash,
    # so one shard may draw nothing (about 2% of sessions); the work must still really be split
    assert sum(1 for r in ran if r) >= 2
    _assert_same_table(results_table(out), results_table(reference))


def _hub_cache(root: Path, repo: str, revisions: dict[str, Path]) -> Path:
    """A real huggingface_hub cache layout: models--org--name/refs/<rev> -> snapshots/<commit>/."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    for index, (revision, source) in enumerate(revisions.items()):
        commit = f"{index + 1:040x}"
        (repo_dir / "refs" / revision).write_text(commit)
        shutil.copytree(source, repo_dir / "snapshots" / commit)
    return root


def test_hub_revision_sweep_offline_matches_the_local_sweep(runs, reference, tmp_path):
    cache = _hub_cache(tmp_path / "hub", "org/tiny-small",
                       {f"step{s}": runs["small"] / f"checkpoint-{s}" for s in CHECKPOINT_STEPS})
    # the run's loss log as a step/loss TSV, the layout of Pythia's train/lm_loss files
    state = json.loads((runs["small"] / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    log = tmp_path / "losses.tsv"
    log.write_text("train/lm_loss\tstep\n" + "".join(f"{e['loss']}\t{e['step']}\n" for e in state["log_history"] if "loss" in e))
    out = tmp_path / "out"
    env = {**os.environ, **SUBPROCESS_ENV, "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", "--model", "org/tiny-small", "--revisions", "step80:240:80",
         "--tasks", TASK, "--data-dir", str(DATA), "--limit", str(LIMIT), "--loss-from", str(log),
         "--tokens-per-step", str(TOKENS_PER_STEP), "--batch-size", "4", "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    hub = results_table(out)
    local = results_table(reference)
    local = local[local.model == "tiny-small"].reset_index(drop=True)
    assert set(hub["model"]) == {"org/tiny-small"} and list(hub["revision"].unique()) == [f"step{s}" for s in CHECKPOINT_STEPS]
    assert sorted(hub["resolved_revision"].unique()) == [f"{i:040x}" for i in (1, 2, 3)]
    assert set(hub["loss_source"]) == {"file:losses.tsv"}
    for column in ("step", "metric", "n", "tokens_seen"):
        assert list(hub[column]) == list(local[column])
    for column in ("value", "loss"):  # same weights, same numbers; the logged loss is the trainer-state one
        assert list(hub[column]) == pytest.approx(list(local[column]), abs=1e-6)


def test_report_on_the_tiny_sweep_writes_figures_and_tables(reference, tmp_path):
    """The report issue's acceptance: `harness report` over a real (tiny) sweep."""
    from matplotlib import image

    from harness.cli import main

    out = tmp_path / "report"
    assert main(["report", str(reference), "--out", str(out), "--bootstrap", "100"]) == 0
    for name in ("index.html", "report.md", "thresholds.csv", "correlations.csv", "points.csv"):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"performance_vs_loss", "performance_vs_step"}
    for path in pngs:
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels[..., :3].var() > 1e-4, f"{path.name} is blank"
    assert "mmlu:abstract_algebra" in (out / "report.md").read_text(encoding="utf-8")


def test_tokenizer_loaded_and_prompts_tokenized_once_for_the_whole_sweep(config_file, tmp_path, monkeypatch):
    """Both runs share one tokenizer: it is loaded once, and each distinct prompt text is encoded
    once across all six checkpoints, not once per checkpoint; each checkpoint is hashed once."""
    from transformers import AutoTokenizer

    from harness.engine import Engine

    encoded: list[str] = []
    original = Engine._encode_uncached
    monkeypatch.setattr(Engine, "_encode_uncached", lambda self, text: encoded.append(text) or original(self, text))
    loads: list[str] = []
    load_tokenizer = AutoTokenizer.from_pretrained.__func__
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        classmethod(lambda cls, path, *a, **k: loads.append(str(path)) or load_tokenizer(cls, path, *a, **k)))
    from harness.engine import models

    hashed: list[str] = []
    hash_folder = models.folder_content_hash
    monkeypatch.setattr(models, "folder_content_hash", lambda folder: hashed.append(str(folder)) or hash_folder(folder))
    assert _sweep("--config", str(config_file), "--out", str(tmp_path / "out"), "--no-prefetch") == 0
    assert encoded and len(encoded) == len(set(encoded))
    assert len(loads) == 1, loads
    # each checkpoint's weights are hashed once: for its unit keys, and that hash is reused to load it
    assert len(hashed) == 2 * len(CHECKPOINT_STEPS) and len(set(hashed)) == len(hashed), hashed


def test_checkpoints_with_other_tokenizer_files_get_their_own_tokenizer(runs, tmp_path):
    from harness.engine.models import load_model

    first, second = sorted(runs["small"].glob("checkpoint-*"))[:2]
    other = tmp_path / "other"
    shutil.copytree(second, other)
    config = json.loads((other / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_max_length"] = 77
    (other / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizers: dict = {}
    a = load_model(str(first), device="cpu", tokenizers=tokenizers)[1]
    b = load_model(str(second), device="cpu", tokenizers=tokenizers)[1]
    c = load_model(str(other), device="cpu", tokenizers=tokenizers)[1]
    assert a is b and c is not a and c.model_max_length == 77 and len(tokenizers) == 2
