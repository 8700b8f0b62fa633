"""Model loading: local folders, hub ids at a revision from an offline HF cache, GGUF files, and the
ModelInfo recorded for each."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from harness.engine import models
from harness.engine.models import ModelInfo, load_model, load_tokenizer, resolve_device, resolve_dtype
from harness.errors import UserError

from conftest import build_tiny_gpt_neox

STEP1000 = hashlib.sha1(b"org/tiny@step1000").hexdigest()
MAIN = hashlib.sha1(b"org/tiny@main").hexdigest()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# -- local folders ------------------------------------------------------------------------------


def test_local_folder_loads_with_its_info(tiny_model_dir):
    model, tokenizer, info = load_model(str(tiny_model_dir), device="cpu")

    assert isinstance(model, GPTNeoXForCausalLM)
    assert not model.training
    assert tokenizer.eos_token == "<|endoftext|>"
    assert info.model == str(tiny_model_dir)
    assert (info.source, info.revision, info.resolved_revision) == ("local", None, None)
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert info.architecture == "GPTNeoXForCausalLM"
    assert info.max_length == 512  # max_position_embeddings of the fixture

    # The checkpoint's own file, read without transformers, holds every parameter.
    stored = _weights(tiny_model_dir)
    assert info.params_total == sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in stored.values())
    # GPT-NeoX keeps input and output embeddings as two matrices (vocab x hidden each).
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert stored["gpt_neox.embed_in.weight"].shape == stored["embed_out.weight"].shape == (vocab, hidden)
    assert info.params_non_embedding == info.params_total - 2 * vocab * hidden
    # (transformers 5 names the output matrix lm_head and maps it to the file's embed_out.)
    assert torch.equal(model.get_input_embeddings().weight, stored["gpt_neox.embed_in.weight"])
    assert torch.equal(model.get_output_embeddings().weight, stored["embed_out.weight"])


def test_tied_embeddings_are_subtracted_once():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2, n_positions=16))
    assert model.lm_head.weight is model.transformer.wte.weight
    total, non_embedding = models.count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert non_embedding == total - 50 * 8
    assert models.context_length(model) == 16


def test_content_hash_is_stable_and_follows_the_weights(tiny_model_dir, tmp_path):
    first = load_model(str(tiny_model_dir), device="cpu")[2].content_hash
    second = load_model(str(tiny_model_dir), device="cpu")[2].content_hash
    assert first == second
    assert len(first) == 64 and int(first, 16) >= 0

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "README.md").write_text("a model card edit does not change the model\n")
    assert load_model(str(copy), device="cpu")[2].content_hash == first
    # nor does HF Trainer's training state beside the weights: two runs saving the same weights (their
    # logs, output folders and optimizer states differ) are one checkpoint
    (copy / "trainer_state.json").write_text('{"global_step": 4, "log_history": []}')
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth"):
        (copy / name).write_bytes(name.encode() * 3)
    assert models.folder_content_hash(copy) == first
    (copy / "trainer_state.json").write_text('{"global_step": 8, "log_history": [{"loss": 1.0}]}')
    assert load_model(str(copy), device="cpu")[2].content_hash == first
    (copy / "generation_config.json").write_text('{"max_new_tokens": 3}')  # a config file is content
    assert models.folder_content_hash(copy) != first
    (copy / "generation_config.json").unlink()

    weights = _weights(copy)
    weights["embed_out.weight"][0, 0] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    changed_model, _, changed = load_model(str(copy), device="cpu")
    assert changed.content_hash != first
    assert changed_model.get_output_embeddings().weight[0, 0] == weights["embed_out.weight"][0, 0]


def test_folder_content_hash_matches_an_independent_digest(tiny_model_dir):
    digest = hashlib.sha256()
    for path in sorted(tiny_model_dir.iterdir()):
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    assert models.folder_content_hash(tiny_model_dir) == digest.hexdigest()


def test_split_modules_are_reached_through_models_and_patches_on_models_take_effect(tiny_model_dir, monkeypatch):
    """The hashes and hub lookup (checkpoint_files) and the provenance live apart but stay names of
    ``models``: callers that write ``models.<name>``, and tests that patch it there, keep working."""
    from harness.engine import checkpoint_files, provenance

    for name in ("file_sha256", "folder_content_hash", "default_gguf_cache_dir", "resolve_hub_revision",
                 "tokenizer_files_digest", "TOKENIZER_FILES"):
        assert getattr(models, name) is getattr(checkpoint_files, name)
    assert models.run_provenance is provenance.run_provenance and models.device_name is provenance.device_name
    assert set(models.__all__) <= set(dir(models))
    # the checkout root is three levels up from harness/engine/provenance.py, as it was from models.py
    assert (Path(provenance.__file__).resolve().parents[2] / "harness" / "engine").is_dir()

    monkeypatch.setattr(models, "folder_content_hash", lambda folder: "patched")
    assert load_model(str(tiny_model_dir), device="cpu")[2].content_hash == "patched"


def test_missing_and_malformed_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder './nope/model'"):
        load_model("./nope/model")
    with pytest.raises(UserError, match="no such GGUF file"):
        load_model(str(tmp_path / "absent.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .gguf"):
        load_model(str(tmp_path / "weights.bin"))


def test_trust_remote_code_is_off_unless_asked(tiny_model_dir, monkeypatch):
    seen: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def capture(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(capture))
    load_model(str(tiny_model_dir), device="cpu")
    load_model(str(tiny_model_dir), device="cpu", trust_remote_code=True)
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]
    # The fixture has safetensors, so loading is pinned to them (never a pickle fallback).
    assert all(kw["use_safetensors"] is True and kw["dtype"] == torch.float32 for kw in seen)


# -- device and dtype ---------------------------------------------------------------------------


def test_device_and_dtype_resolution_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = resolve_device("auto")
    assert cpu == torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) is resolve_dtype("bfloat16", cpu) is torch.bfloat16
    assert resolve_dtype("fp16", cpu) is resolve_dtype("float16", cpu) is torch.float16
    assert resolve_dtype("fp32", cpu) is torch.float32
    with pytest.raises(UserError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", cpu)
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("toaster")


def test_auto_dtype_on_cuda_follows_bf16_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda) is torch.float32


def test_bfloat16_load_records_dtype(tiny_model_dir):
    model, _, info = load_model(str(tiny_model_dir), dtype="bf16", device="cpu")
    assert info.dtype == "bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# -- hub ids from an offline cache --------------------------------------------------------------


@pytest.fixture()
def offline_hub(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """An HF hub cache holding org/tiny at two commits: step1000 (the fixture) and main (seed 1)."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / STEP1000)
    build_tiny_gpt_neox(repo / "snapshots" / MAIN, seed=1)
    (repo / "refs").mkdir()
    # The hub client writes refs without a trailing newline.
    (repo / "refs" / "step1000").write_text(STEP1000)
    (repo / "refs" / "main").write_text(MAIN)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables once, at import; transformers asks its constants module.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_revision_resolves_offline_to_its_commit(offline_hub):
    model, tokenizer, info = load_model("org/tiny", revision="step1000", device="cpu")
    assert info.source == "hub"
    assert (info.model, info.revision, info.resolved_revision) == ("org/tiny", "step1000", STEP1000)
    assert info.content_hash is None
    step1000 = _weights(offline_hub / "models--org--tiny" / "snapshots" / STEP1000)
    main = _weights(offline_hub / "models--org--tiny" / "snapshots" / MAIN)
    assert not torch.equal(step1000["embed_out.weight"], main["embed_out.weight"])
    assert torch.equal(model.get_output_embeddings().weight, step1000["embed_out.weight"])
    assert tokenizer("Answer: 42").input_ids == load_tokenizer("org/tiny", revision="step1000")("Answer: 42").input_ids


def test_hub_default_revision_and_commit_hash(offline_hub):
    model, _, info = load_model("org/tiny", device="cpu")
    assert info.resolved_revision == MAIN
    main = _weights(offline_hub / "models--org--tiny" / "snapshots" / MAIN)
    assert torch.equal(model.get_output_embeddings().weight, main["embed_out.weight"])
    # A commit hash is its own resolution.
    assert load_model("org/tiny", revision=STEP1000, device="cpu")[2].resolved_revision == STEP1000


def test_hub_errors_are_one_line_user_errors(offline_hub):
    with pytest.raises(UserError, match=r"'org/tiny' \(revision 'step9999'\) is not in the local HF cache") as error:
        load_model("org/tiny", revision="step9999")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="'org/absent' is not in the local HF cache"):
        load_model("org/absent")
    with pytest.raises(UserError, match="no such folder or hub model"):
        load_model("not a repo id!")


def test_hub_snapshot_without_weights_is_a_user_error(offline_hub):
    (offline_hub / "models--org--tiny" / "snapshots" / MAIN / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"could not load 'org/tiny'"):
        load_model("org/tiny")


# -- GGUF ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gguf_loads_dequantized_and_is_cached(smollm2_gguf, gguf_cache_dir, monkeypatch):
    gguf = smollm2_gguf
    model, tokenizer, info = load_model(str(gguf), device="cpu", gguf_cache_dir=gguf_cache_dir)

    digest = models.file_sha256(gguf)
    assert info == ModelInfo(
        model=str(gguf),
        revision=None,
        resolved_revision=None,
        content_hash=digest,
        source="gguf",
        params_total=sum(p.numel() for p in model.parameters()),
        params_non_embedding=info.params_total - model.get_input_embeddings().weight.numel(),  # tied head
        dtype="float32",
        device="cpu",
        architecture="LlamaForCausalLM",
        max_length=8192,
    )
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130_000_000 < info.params_total < 140_000_000
    assert (gguf_cache_dir / digest / "config.json").is_file()
    assert (gguf_cache_dir / digest / "model.safetensors").is_file()

    ids = tokenizer("The capital of France is Paris. The capital of Italy is Rome.", return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss.item()
    # A trained model: finite and far below the uniform loss ln(49152) = 10.8.
    assert math.isfinite(loss) and loss < 6.0

    def no_dequantizing(*args, **kwargs):
        raise AssertionError("the cached folder should have been used")

    monkeypatch.setattr(models, "_dequantize_gguf", no_dequantizing)
    again, again_tokenizer, again_info = load_model(str(gguf), device="cpu", gguf_cache_dir=gguf_cache_dir)
    assert again_info == info
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert again_tokenizer("Paris").input_ids == tokenizer("Paris").input_ids
    assert load_tokenizer(str(gguf), gguf_cache_dir=gguf_cache_dir)("Paris").input_ids == tokenizer("Paris").input_ids
