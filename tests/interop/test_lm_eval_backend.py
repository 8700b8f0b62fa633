"""Our engine as an lm-eval model (``harness.interop.lm_eval_model``) against lm-eval's own ``HFLM``.

lm-eval YAML tasks over committed local data (tests/fixtures/lm_eval_tasks: a 2-shot multiple
choice task, a 2-shot generate_until task with regex filters and a loglikelihood_rolling task whose
longest text spans several windows) run through ``simple_evaluate`` twice on the same in-memory
model, once with ``HFLM`` and once with ``HarnessLM``; every logged sample must agree: the same
prompts, log-probabilities within 1e-4 (fp32), identical generations and filtered answers, equal
per-item metrics.  The tiny GPT-NeoX model runs every item; SmolLM2-135M (slow) a few.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, assert_same, lm_eval_value

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")

REPO = Path(__file__).resolve().parents[2]
TASKS_DIR = FIXTURES / "lm_eval_tasks"
TASKS = ("eh_mc", "eh_gen", "eh_rolling")
TOLERANCE = 1e-4  # |Δ log-prob| per scored continuation, fp32


@pytest.fixture(autouse=True)
def offline_from_repo_root(monkeypatch):
    """The fixture YAMLs name their data files from the repository root; nothing goes online."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def evaluate(lm, limit=None) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    os.chdir(REPO)  # module fixtures run before the autouse chdir
    return simple_evaluate(
        model=lm, tasks=list(TASKS), task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=limit, log_samples=True, bootstrap_iters=0, verbosity="ERROR",
    )


# -- comparing logged samples ------------------------------------------------------------------------


def _arguments(sample: dict) -> list[list[str]]:
    """Each request's text arguments (context, continuation), in memory or as saved to jsonl."""
    arguments = sample["arguments"]
    if isinstance(arguments, dict):  # saved: {"gen_args_0": {"arg_0": ..., "arg_1": ...}, ...}
        arguments = [[args[f"arg_{j}"] for j in range(len(args))] for _, args in
                     sorted(arguments.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))]
    return [[a for a in args if isinstance(a, str)] for args in arguments]


def by_item(samples: list[dict]) -> dict[tuple[int, str], dict]:
    return {
        (s["doc_id"], s["filter"]): {
            "arguments": _arguments(s),
            "resps": lm_eval_value(s["resps"]),
            "filtered_resps": lm_eval_value(s["filtered_resps"]),
            "metrics": {name: lm_eval_value(s[name]) for name in s["metrics"]},
        }
        for s in samples
    }


def compare_runs(theirs: dict, ours: dict, expect_items: dict[str, int]) -> dict[str, float]:
    """Every logged sample of every task agrees (see the module docstring); the max |Δ| per task."""
    gaps = {}
    for task in TASKS:
        a, b = by_item(theirs[task]), by_item(ours[task])
        assert a.keys() == b.keys()
        assert len({doc for doc, _ in a}) == expect_items[task], task
        gaps[task] = 0.0
        for key in sorted(a):
            where = f"{task} doc {key[0]} ({key[1]})"
            assert a[key]["arguments"] == b[key]["arguments"], f"{where}: different prompts"
            # a rolling log-likelihood sums up to thousands of tokens: 1e-4 per 100 nats of it
            scale = max(1.0, abs(a[key]["resps"][0][0]) / 100) if task == "eh_rolling" else 1.0
            gaps[task] = max(gaps[task], assert_same(a[key]["resps"], b[key]["resps"], TOLERANCE * scale, where))
            assert_same(a[key]["filtered_resps"], b[key]["filtered_resps"], TOLERANCE * scale, where)
            assert_same(a[key]["metrics"], b[key]["metrics"], TOLERANCE * scale, where)
    return gaps


def check_against_hflm(model, tokenizer, limit=None, **lm_args) -> tuple[dict, object]:
    from lm_eval.models.huggingface import HFLM

    from harness.interop.lm_eval_model import HarnessLM

    theirs = evaluate(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, **lm_args), limit)
    ours_lm = HarnessLM(model, tokenizer, batch_size=4, progress=False, **lm_args)
    ours = evaluate(ours_lm, limit)
    return {"theirs": theirs, "ours": ours}, ours_lm


def fixture_items(limit=None) -> dict[str, int]:
    counts = {"eh_mc": "mc_test", "eh_gen": "gen_test", "eh_rolling": "rolling_test"}
    out = {}
    for task, name in counts.items():
        n = len((TASKS_DIR / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines())
        out[task] = n if limit is None else min(n, limit)
    return out


# -- the tiny model: every item --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(model_and_tokenizer, one_torch_thread):
    model, tokenizer = model_and_tokenizer
    return check_against_hflm(model, tokenizer)


def test_tiny_model_equals_hflm_per_item(tiny_runs, model_and_tokenizer):
    runs, lm = tiny_runs
    gaps = compare_runs(runs["theirs"]["samples"], runs["ours"]["samples"], fixture_items())
    print("max |Δ log-prob| per task:", gaps)
    for task in TASKS:  # the aggregated metrics follow from the per-item ones
        for name, value in runs["theirs"]["results"][task].items():
            if isinstance(value, float) and math.isfinite(value):
                assert runs["ours"]["results"][task][name] == pytest.approx(value, rel=1e-6), (task, name)
    # the longest rolling text spans several model windows (the rolling path is exercised)
    _, tokenizer = model_and_tokenizer
    texts = [json.loads(line)["text"] for line in (TASKS_DIR / "data/rolling_test.jsonl").open(encoding="utf-8")]
    longest = max(texts, key=len)
    assert len(tokenizer(longest)["input_ids"]) > 2 * lm.max_length
    # the engine served lm-eval's requests: the 2-shot header was forwarded once, not once per choice
    assert lm.engine.shares_prefixes and lm.engine.tokens_forwarded < 0.7 * lm.engine.tokens_naive
    info = runs["ours"]["config"]
    assert info["engine"] == "emergence-harness" and info["model_num_parameters"] > 0


def test_registered_for_lm_eval_cli(tiny_runs, tiny_model_dir, tmp_path):
    """``python -m harness.interop.lm_eval_model`` is lm-eval's CLI with ``--model emergence-harness``:
    loaded from the path in --model_args, its saved samples equal HFLM's in-process ones."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "harness.interop.lm_eval_model", "--model", "emergence-harness",
        "--model_args", f"pretrained={tiny_model_dir},dtype=float32,progress=false",
        "--tasks", ",".join(TASKS), "--include_path", str(TASKS_DIR), "--device", "cpu", "--batch_size", "4",
        "--log_samples", "--output_path", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = {}
    for task in TASKS:
        (path,) = out.rglob(f"samples_{task}_*.jsonl")
        saved[task] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    compare_runs(tiny_runs[0]["theirs"]["samples"], saved, fixture_items())
    (results,) = out.rglob("results_*.json")
    config = json.loads(results.read_text(encoding="utf-8"))["config"]
    assert config["model"] == "emergence-harness" and config["model_dtype"] == "float32"


def test_registry_keeps_lm_eval_models():
    """Registering ours first must not hide lm-eval's own models (its registry fills lazily)."""
    from lm_eval.api.registry import get_model

    import harness.interop.lm_eval_model as ours

    assert get_model("emergence-harness") is ours.HarnessLM
    assert get_model("hf").__name__ == "HFLM"


# -- refusals, each one line -----------------------------------------------------------------------


class _Request:
    def __init__(self, *args):
        self.args = args


@pytest.mark.parametrize("gen_kwargs, says", [
    ({"until": ["\n"], "do_sample": True, "temperature": 0.7}, "sampling"),
    ({"until": ["\n"], "temperature": 0.5}, "sampling"),
    ({"until": ["\n"], "do_sample": False, "num_beams": 4}, "num_beams"),
])
def test_refuses_anything_but_greedy(model_and_tokenizer, gen_kwargs, says):
    from harness.errors import UserError
    from harness.interop.lm_eval_model import HarnessLM

    model, tokenizer = model_and_tokenizer
    lm = HarnessLM(model, tokenizer, batch_size=2, progress=False)
    with pytest.raises(UserError, match=says) as error:
        lm.generate_until([_Request("Question: 1 + 1?\nAnswer:", gen_kwargs)])
    assert "\n" not in str(error.value)
    # greedy kwargs HFLM also reads as greedy (sampling-only knobs ignored, neutral values) are served,
    # cut at the stop string and within max_gen_toks
    greedy = {"until": ["Question"], "do_sample": False, "top_p": 0.9, "num_beams": 1, "max_gen_toks": 5}
    (text,) = lm.generate_until([_Request("Question: 1 + 1?\nAnswer:", greedy)])
    assert "Question" not in text and len(tokenizer(text)["input_ids"]) <= 5


@pytest.mark.parametrize("args, says", [
    ({"trust_remote_code": "yes"}, "trust_remote_code"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_gen_toks": -1}, "max_gen_toks"),
    ({"parallelize": True}, "unknown model_args"),
])
def test_bad_model_args_say_so(model_and_tokenizer, args, says):
    from harness.errors import UserError
    from harness.interop.lm_eval_model import HarnessLM

    model, tokenizer = model_and_tokenizer
    with pytest.raises(UserError, match=says):
        HarnessLM(model, tokenizer, **args)


def test_without_lm_eval_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # find_spec("lm_eval") is None: as if not installed
    monkeypatch.delitem(sys.modules, "harness.interop.lm_eval_model", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e \.\[lm-eval\]") as error:
        import harness.interop.lm_eval_model  # noqa: F401
    assert "\n" not in str(error.value)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("harness.interop.lm_eval_model", run_name="__main__")
    assert "pip install -e .[lm-eval]" in str(exit_.value.code) and "\n" not in str(exit_.value.code)
    from harness.interop.lm_eval_cli import main  # the harness-lm-eval console script

    with pytest.raises(SystemExit) as exit_:
        main(["--model", "emergence-harness"])
    assert "pip install -e .[lm-eval]" in str(exit_.value.code) and "\n" not in str(exit_.value.code)
    monkeypatch.delitem(sys.modules, "harness.interop.lm_eval_model", raising=False)


# -- SmolLM2-135M: a few items of each task ------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_equals_hflm_per_item(smollm2_gguf, gguf_cache_dir, one_torch_thread):
    from harness.engine.models import load_model

    model, tokenizer, _ = load_model(str(smollm2_gguf), dtype="float32", device="cpu", gguf_cache_dir=gguf_cache_dir)
    # a 256-token window on both sides: the rolling text spans several windows, prompts are cut alike
    runs, lm = check_against_hflm(model, tokenizer, limit=3, max_length=256)
    gaps = compare_runs(runs["theirs"]["samples"], runs["ours"]["samples"], fixture_items(limit=3))
    print("SmolLM2 max |Δ log-prob| per task:", gaps)
    # a real model follows the 2-shot format: the regex filter extracts answers (not "[invalid]")
    answers = [s["filtered_resps"][0] for s in runs["ours"]["samples"]["eh_gen"] if s["filter"] == "strict-match"]
    assert sum(a != "[invalid]" for a in answers) >= 2, answers
    assert lm.engine.tokens_forwarded < lm.engine.tokens_naive
