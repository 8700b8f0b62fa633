"""The Pythia facts a sweep and the lm-eval importer rely on: steps, parameter counts, names."""

from __future__ import annotations

import pytest

from harness.pythia import (
    PYTHIA_PARAMS,
    PYTHIA_REVISIONS,
    PYTHIA_STEPS,
    PYTHIA_TOKENS_PER_STEP,
    PYTHIA_V1_EVAL_DTYPE,
    canonical_pythia_name,
    pythia_params,
    pythia_size,
)

# (layers, d_model, attention heads, padded vocabulary) from each model's config.json on the hub.
ARCHITECTURES = {
    "14m": (6, 128, 4, 50304),
    "70m": (6, 512, 8, 50304),
    "160m": (12, 768, 12, 50304),
    "410m": (24, 1024, 16, 50304),
    "1b": (16, 2048, 8, 50304),
    "1.4b": (24, 2048, 16, 50304),
    "2.8b": (32, 2560, 32, 50304),
    "6.9b": (32, 4096, 32, 50432),
    "12b": (36, 5120, 40, 50688),
}


def test_revision_preset_has_154_steps_first_and_last_right():
    assert len(PYTHIA_STEPS) == len(PYTHIA_REVISIONS) == 154
    assert PYTHIA_REVISIONS[0] == "step0" and PYTHIA_REVISIONS[-1] == "step143000"
    assert PYTHIA_STEPS[:12] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
    assert PYTHIA_STEPS[12:14] == (2000, 3000)
    assert list(PYTHIA_STEPS) == sorted(set(PYTHIA_STEPS))
    assert PYTHIA_TOKENS_PER_STEP == 1024 * 2048


def test_paper_numbers():
    # Table 1 of Biderman et al. (2023), read off the paper.
    assert PYTHIA_PARAMS["70m"] == (70_426_624, 18_915_328)
    assert PYTHIA_PARAMS["410m"] == (405_334_016, 302_311_424)
    assert PYTHIA_PARAMS["12b"] == (11_846_072_320, 11_327_027_200)
    assert set(PYTHIA_PARAMS) == set(ARCHITECTURES)


@pytest.mark.parametrize("size", list(ARCHITECTURES))
def test_params_follow_from_the_architecture(size):
    layers, d, _, vocab = ARCHITECTURES[size]
    total, non_embedding = PYTHIA_PARAMS[size]
    # Untied input and output embeddings: 2 * vocab * d of the total.
    assert total - non_embedding == 2 * vocab * d
    # Per layer: QKV (3d^2 + 3d), attention out (d^2 + d), MLP d->4d->d (8d^2 + 5d), two layer norms (4d);
    # plus the final layer norm (2d).
    assert non_embedding == layers * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize("size", list(ARCHITECTURES))
def test_params_match_a_transformers_gpt_neox_of_that_config(size):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    layers, d, heads, vocab = ARCHITECTURES[size]
    config = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * d, tie_word_embeddings=False,
    )
    with torch.device("meta"):  # shapes only: no memory for 12b
        model = GPTNeoXForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    assert PYTHIA_PARAMS[size] == (total, total - embedding)


@pytest.mark.parametrize(
    ("name", "canonical", "size"),
    [
        ("EleutherAI/pythia-410m", "EleutherAI/pythia-410m", "410m"),
        ("pythia-410m-deduped", "EleutherAI/pythia-410m-deduped", "410m"),
        ("pythia-1b-bf16", "EleutherAI/pythia-1b", "1b"),
        ("EleutherAI/pythia-v1.1-160m", "EleutherAI/pythia-160m", "160m"),
        ("EleutherAI/pythia-v1.1-1.4b-deduped", "EleutherAI/pythia-1.4b-deduped", "1.4b"),
        ("EleutherAI/pythia-v1.1-1b-bf16", "EleutherAI/pythia-1b", "1b"),
        ("eleutherai/Pythia-6.9B", "EleutherAI/pythia-6.9b", "6.9b"),
        ("EleutherAI/pythia-160m-seed3", "EleutherAI/pythia-160m-seed3", "160m"),
        ("EleutherAI/pythia-70m-deduped-v0", "EleutherAI/pythia-70m-deduped-v0", "70m"),
        ("pythia-14m", "EleutherAI/pythia-14m", "14m"),
    ],
)
def test_pythia_names(name, canonical, size):
    assert canonical_pythia_name(name) == canonical
    assert pythia_params(name) == PYTHIA_PARAMS[size]
    assert pythia_params(canonical) == PYTHIA_PARAMS[size]
    assert pythia_size(name) == size


@pytest.mark.parametrize(
    "name",
    ["gpt2", "EleutherAI/gpt-neox-20b", "someone/pythia-160m", "EleutherAI/pythia-160m-chat", "pythia-33m", "runs/my-1b"],
)
def test_other_names_are_left_alone(name):
    assert canonical_pythia_name(name) == name
    assert pythia_params(name) is None and pythia_size(name) is None


def test_v1_eval_steps_are_the_27_published_ones():
    from harness.checkpoints import parse_revisions
    from harness.pythia import PYTHIA_V1_EVAL_STEPS

    # the step suffixes of evals/pythia-v1/<model>/zero-shot/*_stepN.json in EleutherAI/pythia
    published = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 3000, 13000, 23000, 33000, 43000, 53000,
                 63000, 73000, 83000, 93000, 103000, 113000, 123000, 133000, 143000]
    assert list(PYTHIA_V1_EVAL_STEPS) == published
    assert set(PYTHIA_V1_EVAL_STEPS) <= set(PYTHIA_STEPS)
    assert parse_revisions("pythia-v1-evals") == tuple(f"step{s}" for s in published)


def _preset_sweep(monkeypatch, *flags: str):
    """The SweepConfig `harness sweep --preset pythia-v1 ...` would run (the sweep itself is not run)."""
    from harness import cli
    from harness.runs import sweep

    seen = []
    monkeypatch.setattr(sweep, "run_sweep", lambda config, log, loggers=None: seen.append(config) or (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--preset", "pythia-v1", *flags])
    return seen[0]


def test_pythia_v1_preset_is_16_models_at_27_steps_on_pythia_tasks(monkeypatch, tmp_path):
    from harness.items import registry

    corpus = tmp_path / "pile_val.jsonl"
    corpus.write_text('{"text": "The Pile."}\n', encoding="utf-8")
    config = _preset_sweep(monkeypatch, "--loss-corpus", str(corpus))
    assert len(config.models) == 16
    assert {m.hub_model for m in config.models} == {
        f"EleutherAI/pythia-{size}{variant}" for size in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
        for variant in ("", "-deduped")
    }
    assert all(len(m.revisions) == 27 and m.size == pythia_size(m.hub_model) for m in config.models)
    assert all(m.loss.kind == "corpus" and m.loss.corpus == corpus for m in config.models)  # the flag wins
    assert all(m.tokens_per_step == PYTHIA_TOKENS_PER_STEP for m in config.models)
    # the published runs' dtype (PYTHIA_V1_EVAL_DTYPE), and their lm-eval 0.3.0 prompts: replicas where
    # 0.4.13's differ (sciq, wsc, MMLU), our tasks of the same name where they are identical
    assert str(config.out) == "results/pythia-v1" and config.dtype == PYTHIA_V1_EVAL_DTYPE == "float16"
    assert set(config.tasks) == {"lambada_openai", "piqa", "arc_easy", "arc_challenge", "sciq_pythia_v0", "winogrande",
                                 "wsc_pythia_v0", "logiqa", "mmlu_pythia_v0"}
    registry.resolve(list(config.tasks))  # every task exists


def test_preset_dtype_override_for_the_1b_bf16_reading(monkeypatch):
    """The one model whose published dtype is uncertain can be run alone in bfloat16; flags win over the file."""
    config = _preset_sweep(monkeypatch, "--sizes", "EleutherAI/pythia-1b", "--dtype", "bfloat16")
    assert [m.name for m in config.models] == ["EleutherAI/pythia-1b"] and config.dtype == "bfloat16"


def test_preset_sizes_select_models_and_bad_names_are_one_line_errors(monkeypatch, capsys):
    from harness import cli

    config = _preset_sweep(monkeypatch, "--sizes", "70m,EleutherAI/pythia-160m", "--out", "elsewhere")
    assert [m.name for m in config.models] == ["EleutherAI/pythia-70m", "EleutherAI/pythia-70m-deduped", "EleutherAI/pythia-160m"]
    assert str(config.out) == "elsewhere"
    for flags, message in (
        (["--preset", "pythia-v9"], "unknown preset 'pythia-v9'; known presets: pythia-v1"),
        (["--preset", "pythia-v1", "--sizes", "13b"], "no model named or sized 13b"),
        (["--preset", "pythia-v1", "--model", "x/y"], "drop --model"),
    ):
        assert cli.main(["sweep", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
