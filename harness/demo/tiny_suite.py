"""A tiny GPT-NeoX model family trained on the CPU, offline, so the loss threshold can be seen end to end.

    corpus (``harness.demo.corpus``: stdlib docstrings + arithmetic in BIG-bench's format, split
    into train / held out) ─► one BPE tokenizer (digits split) ─► each size trained with HF Trainer,
    checkpoints log-spaced early, evenly spaced late ─► <suite>/runs/<size>/checkpoint-N/ (with trainer_state.json)
    and, beside them, two held-out loss corpora (the mixture, and its docstrings alone) and the
    BIG-bench task.json files of held-out items.

The suite's settings (``SuiteConfig``, ``ModelSize``) and the corpus are defined in
``harness.demo.corpus`` and importable from here too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from harness.demo.corpus import LOSS_CORPORA, ModelSize, SuiteConfig, build_corpus, write_suite_data
from harness.errors import UserError
from harness.runs.progress import library_bars_off

Log = Callable[[str], None]
# per size, the callbacks its Trainer also gets (``harness.EvalCallback``: evaluate at each save)
SizeCallbacks = Callable[[ModelSize], list[Any]]

SUITE_MANIFEST = "suite.json"
EOS = "<|endoftext|>"


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: tuple[str, ...], vocab_size: int):
    """Byte-level BPE trained on the training documents, one token per digit.

    Splitting digits individually (tuning choice) gives every number the same digit-by-digit
    form, so a carry is a token-level pattern the tiny models can learn; merged digit pairs would
    turn 2-digit addition into a lookup over 90x90 opaque tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def token_blocks(tokenizer, documents: tuple[str, ...], seq_len: int) -> list[list[int]]:
    """Documents joined with EOS (as ``harness.engine.loss`` joins the loss corpus) and cut into blocks."""
    stream: list[int] = []
    for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


# ---------------------------------------------------------------------- training


def checkpoint_steps(steps: int, count: int, first: int, dense: int = 0, dense_from: float = 0.5) -> list[int]:
    """``count`` roughly log-spaced steps from ``first`` (both included), then ``dense`` evenly spaced steps.

    Without ``dense`` the log-spaced steps run up to ``steps``. With it they end at ``dense_from`` of
    the run and ``dense`` steps follow at even intervals up to ``steps``: log spacing resolves the early
    plateau cheaply but leaves a jump late in training between two checkpoints far apart (the demo's
    once fell between its last two, 971 and 1500), and a threshold verdict needs at least three
    checkpoints on each side of the kink, so the second part of the run, where the metric moves, is
    sampled evenly."""
    if count < 2 or first >= steps:
        return [steps]
    end = round(steps * dense_from) if dense else steps
    ratio = (end / first) ** (1 / (count - 1)) if end > first else 1.0
    chosen = {round(first * ratio**i) for i in range(count)} | {end}
    chosen |= {round(end + (steps - end) * i / dense) for i in range(1, dense + 1)}
    return [s for s in sorted(chosen | {steps}) if 1 <= s <= steps]


def _save_at(steps: list[int]):
    from transformers import TrainerCallback

    wanted = set(steps)

    class SaveAtSteps(TrainerCallback):
        """HF Trainer saves periodically; the checkpoints here are chosen steps, and the training loss
        is logged at each of them so trainer_state.json holds the loss of the saved step."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in wanted:
                control.should_save = True
                control.should_log = True
            return control

    return SaveAtSteps()


class _Blocks:
    """A map-style dataset of fixed-length token blocks (labels = inputs; the model shifts them)."""

    def __init__(self, blocks: list[list[int]]) -> None:
        import torch

        self.ids = torch.tensor(blocks, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def build_model(size: ModelSize, config: SuiteConfig, tokenizer):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(config.seed)
    model_config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=size.hidden_size, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, intermediate_size=4 * size.hidden_size,
        max_position_embeddings=config.context, rotary_pct=config.rotary_pct, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPTNeoXForCausalLM(model_config)


def train_size(
    size: ModelSize, config: SuiteConfig, tokenizer, blocks: list[list[int]], run_dir: Path, log: Log,
    callbacks: list[Any] = (),
) -> dict:
    """Train one size with HF Trainer; checkpoints ``run_dir/checkpoint-N`` at ``checkpoint_steps``.

    ``callbacks``: further ``TrainerCallback``s, after the one that saves at those steps (an
    ``EvalCallback`` then evaluates each checkpoint as it is saved)."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments, default_data_collator

    torch.set_num_threads(config.threads)
    model = build_model(size, config, tokenizer)
    steps = checkpoint_steps(config.steps, config.checkpoints, config.first_checkpoint, config.dense_checkpoints,
                             config.dense_from)
    args = TrainingArguments(
        output_dir=str(run_dir), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_steps, lr_scheduler_type="cosine",
        weight_decay=0.01, logging_steps=10, save_strategy="no", save_only_model=True, use_cpu=True,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, seed=config.seed, data_seed=config.seed,
    )
    started = time.monotonic()
    trainer = Trainer(
        model=model, args=args, train_dataset=_Blocks(blocks), processing_class=tokenizer,
        data_collator=default_data_collator, callbacks=[_save_at(steps), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # its dict per log line; the losses are in trainer_state.json
    with library_bars_off():  # one "Writing model shards" bar per checkpoint otherwise
        trainer.train()
    # training alone: the time an EvalCallback spent evaluating is its own (``eval_seconds``)
    evaluating = sum(getattr(callback, "eval_seconds", 0.0) for callback in callbacks)
    seconds = time.monotonic() - started - evaluating
    final_loss = next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None)
    log(f"trained {size.name} ({steps[-1]} steps) in {seconds:.0f}s"
        + (f" (and {evaluating:.0f}s evaluating its checkpoints)" if evaluating else "")
        + f", final training loss {final_loss}")
    return {"checkpoint_steps": steps, "train_seconds": round(seconds, 1), "final_train_loss": final_loss}


# ---------------------------------------------------------------------- the suite on disk


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}


def _write_json(path: Path, record: dict) -> None:
    from harness.store import write_json_atomic

    write_json_atomic(path, record)


def _finished_run(run_dir: Path, digest: str) -> dict | None:
    marker = run_dir / "trained.json"
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    steps = record.get("checkpoint_steps", [])
    if record.get("config_digest") != digest or not all((run_dir / f"checkpoint-{s}" / "config.json").is_file() for s in steps):
        return None
    return record


def train_suite(config: SuiteConfig, suite_dir: Path, log: Log = print, callbacks: SizeCallbacks | None = None) -> dict:
    """Train every size (sizes already trained with these settings are kept) and write ``suite.json``.

    A suite folder trained with other settings is refused rather than overwritten.  ``callbacks``:
    called for each size about to be trained (after the loss corpora and task files are written, so a
    callback may read them) for further ``TrainerCallback``s of its Trainer; a size that is reused
    is not trained, so its callbacks are never made.  They must leave training as it was
    (``EvalCallback`` restores the model's modes and the random states): the suite's digest does
    not name them, so the weights must not depend on them."""
    import shutil

    # Read by OpenMP when torch is first imported (so only then): on a busy machine, threads that spin
    # while waiting for a descheduled peer made 2-thread training many times slower (the full demo's
    # 13k size took 680 s spinning; its 100k size 137 s sleeping, on the same shared 2 cores). Sleeping
    # changes the speed, not the arithmetic: the weights depend on the thread count only.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    suite_dir = Path(suite_dir)
    digest = config.digest()
    manifest_path = suite_dir / SUITE_MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("config_digest") != digest:
            raise UserError(
                f"{suite_dir} holds a suite trained with other settings (digest {manifest.get('config_digest')}, "
                f"now {digest}); delete that folder or pass another --out"
            )
        if all(_finished_run(suite_dir / "runs" / s["name"], digest) for s in manifest["sizes"]):
            log(f"reusing the trained suite in {suite_dir}")
            if not all((suite_dir / name).is_file() for name in LOSS_CORPORA.values()):
                write_suite_data(config, build_corpus(config), suite_dir)  # a suite from before the docstring loss
            return manifest
    started = time.monotonic()
    suite_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(config)
    tokenizer = train_tokenizer(corpus.train, config.vocab_size)
    tokenizer.save_pretrained(suite_dir / "tokenizer")
    write_suite_data(config, corpus, suite_dir)
    blocks = token_blocks(tokenizer, corpus.train, config.seq_len)
    log(f"corpus: {corpus.stats['train_chars']:,} characters, {len(blocks) * config.seq_len:,} tokens for training "
        f"({corpus.stats['docstrings']} stdlib docstrings + arithmetic); {corpus.stats['heldout_chars']:,} held out")
    sizes = []
    for size in config.sizes:
        run_dir = suite_dir / "runs" / size.name
        record = _finished_run(run_dir, digest)
        if record is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted or stale run of ours: start it again
            model = build_model(size, config, tokenizer)
            from harness.engine.models import count_parameters

            total, non_embedding = count_parameters(model)
            del model
            log(f"training {size.name}: {non_embedding:,} non-embedding parameters ({total:,} in all), {config.steps} steps")
            record = {"config_digest": digest, "size": dataclasses.asdict(size), "params_total": total,
                      "params_non_embedding": non_embedding,
                      **train_size(size, config, tokenizer, blocks, run_dir, log, callbacks(size) if callbacks else ())}
            _write_json(run_dir / "trained.json", record)
        else:
            log(f"reusing {run_dir}")
        sizes.append({"name": size.name, **{k: v for k, v in record.items() if k != "config_digest"}})
    manifest = {
        "config_digest": digest, "config": dataclasses.asdict(config), "corpus": corpus.stats,
        "tokens_per_step": config.batch_size * config.seq_len, "train_tokens": len(blocks) * config.seq_len,
        "versions": _versions(), "sizes": sizes, "seconds": round(time.monotonic() - started, 1),
    }
    _write_json(manifest_path, manifest)
    return manifest
