"""The inference engine: log-likelihoods and greedy generations from a loaded HF causal LM.

It knows nothing about tasks: requests in (``harness.requests``), numbers and strings out, in
request order.  Tokenization, truncation and scoring replicate lm-evaluation-harness 0.4.13's
``HFLM`` so that our numbers equal its numbers; the same code runs on CPU and CUDA.

The public surface is ``Engine(model, tokenizer, *, batch_size, add_bos_token, max_length,
prefix_cache, encode_cache, progress)`` with lm-eval's three request types and one of ours:

- ``loglikelihood(requests)``: summed log-probability of each continuation given its context;
- ``loglikelihood_rolling(texts)``: each whole text's log-likelihood in lm-eval's rolling windows
  (``loglikelihood_tokens`` is the same on token ids: the pre-training loss's windows);
- ``generate(requests)``: lm-eval's ``generate_until``, greedy text cut at the stop strings;
- ``generate_scored(requests)``: ``generate`` plus the log-likelihood of gold continuations read
  on the prompt's own KV cache (only the continuation's tokens are forwarded);

and ``tokenizer_fingerprint``, the key under which a sweep shares encodings between checkpoints.

No token is forwarded twice: requests that feed the model the same window share one forward,
and with ``prefix_cache`` (the default) token prefixes shared by several requests (a few-shot
header, a question scored once per choice) are forwarded once and their KV cache reused under
each request's own tokens.  ``prefix_cache=False`` is the plain path, kept as the reference.

The parts, in the order a request meets them:

    tokens          lm-eval's encode rules, the encode cache, tokenizer_fingerprint
    batching        batches, "auto" sizes from free memory, back-off on out-of-memory (the Collator)
    forward         padding segments into tensors and the model call, across transformers versions
    prefix_cache    the pure planner of shared prefixes, and KV-cache stacking and forking
    shared_prefix   the executor: shared prefixes forwarded once, then each request's own tokens
    loglikelihood   scoring token rows; lm-eval's rolling windows and the loss's disjoint ones
    decode          greedy decoding, stop strings, until_settled, scores on the prompt's cache
    interface       Engine, which composes them
    loss            the pre-training loss on a held-out corpus, through the same scoring
    models          loading checkpoints (local, .gguf, hub revisions) and what was loaded
    checkpoint_files  content hashes of checkpoint files, hub revisions resolved to commits
    provenance      versions, device and git commit recorded with every result
"""

from harness.engine.core import Engine
from harness.engine.tokens import tokenizer_fingerprint

__all__ = ["Engine", "tokenizer_fingerprint"]
