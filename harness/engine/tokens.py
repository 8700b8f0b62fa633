"""Text to token ids by lm-evaluation-harness 0.4.13's rules (``HFLM.tok_encode``, ``_encode_pair``).

Every rule that decides which ids the model sees lives here: when a BOS is added, where a
context/continuation pair is split, how an answer is tokenized after a generation prompt.  Encodings
are cached per text; a sweep shares one cache per tokenizer (``tokenizer_fingerprint``), so each
prompt is tokenized once for the whole sweep rather than once per checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from harness.errors import UserError


class Encoder:
    """``tokenizer`` with lm-eval's special-token rules and an encode cache (text -> ids)."""

    def __init__(
        self,
        tokenizer: Any,
        add_bos_token: bool | None,
        cache: dict[str, tuple[int, ...]] | None = None,
        on_miss: Callable[[str], list[int]] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.add_bos_token = add_bos_token
        self.cache = {} if cache is None else cache
        # what encodes a text the cache lacks (``encode_uncached``, unless the owner counts the calls)
        self._on_miss = on_miss or self.encode_uncached
        # lm-eval's prefix token (what an empty context is conditioned on): BOS, else EOS
        self.prefix_token_id: int | None = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.prefix_string = tokenizer.decode(self.prefix_token_id) if self.prefix_token_id is not None else None
        eos = tokenizer.eos_token_id
        self.eos_string = tokenizer.decode(eos, skip_special_tokens=False) if eos is not None else None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with special tokens exactly as lm-eval's ``HFLM.tok_encode``."""
        ids = self.cache.get(text)
        if ids is None:
            ids = self.cache[text] = tuple(self._on_miss(text))
        return list(ids)  # a copy: callers may change theirs, never the cached one

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of ``text`` alone, no special tokens (what token edit distances count)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_uncached(self, text: str) -> list[int]:
        # A prompt that already begins with the BOS string must not get a second BOS.
        if self.prefix_string and text.startswith(self.prefix_string):
            return self.tokenizer.encode(text, add_special_tokens=False)
        if self.add_bos_token is None:
            return self.tokenizer.encode(text)
        ids = self.tokenizer.encode(text, add_special_tokens=self.add_bos_token)
        # lm-eval also passes add_bos_token to the tokenizer's constructor, which makes tokenizers
        # without a BOS template add one; ours was loaded elsewhere, so add it here when missing.
        bos = self.tokenizer.bos_token_id
        if self.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids
        return ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's context/continuation split (``LM.loglikelihood`` + ``_encode_pair``)."""
        if context == "":
            # No context: condition on the prefix token (BOS, else EOS), as lm-eval does.
            continuation_enc = self.tokenizer.encode(continuation, add_special_tokens=False)
            if self.prefix_token_id is None:
                raise UserError("the tokenizer has neither a BOS nor an EOS token to score an empty context against")
            if continuation_enc[:1] == [self.prefix_token_id]:
                return continuation_enc[:1], continuation_enc[1:]
            return [self.prefix_token_id], continuation_enc
        # Trailing whitespace belongs to the continuation: BPE vocabularies attach a space to the
        # word after it (" 42"), so "Answer: " + "42" must be scored as "Answer:" + " 42".
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        # Encoding the whole string keeps merges across the boundary as the model would see them.
        whole_enc = self.encode(context + continuation)
        context_enc = self.encode(context)
        if not context_enc:  # whitespace-only context and no BOS: lm-eval asserts; score it as empty
            return self.encode_pair("", continuation)
        return context_enc, whole_enc[len(context_enc) :]

    def continuation_tokens(self, context: str, continuation: str) -> list[int]:
        """The tokens that, appended to the generation prompt ``encode(context)``, spell ``continuation``.

        Unlike ``encode_pair`` the context keeps its trailing whitespace: the generation was prompted
        with it, so the answer's probability must be conditioned on it too.  Where the whole text
        tokenizes with the prompt's tokens as a prefix, merges across the boundary are kept as the
        model would see them; otherwise (the prompt ends in a space the answer's first token would
        absorb) the continuation is tokenized on its own.
        """
        context_enc = self.encode(context) if context else []
        if context_enc:
            whole = self.encode(context + continuation)
            if whole[: len(context_enc)] == context_enc:
                return whole[len(context_enc) :]
        return self.tokenizer.encode(continuation, add_special_tokens=False)


def tokenizer_fingerprint(tokenizer: Any, add_bos_token: bool | None) -> str | None:
    """A digest of everything that decides ``Engine.encode``'s output (the fast tokenizer's full
    serialisation and the BOS setting), so checkpoints with the same tokenizer can share encodings;
    None when the tokenizer cannot be serialised (then nothing is shared)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256(backend.to_str().encode("utf-8"))
    digest.update(repr((add_bos_token, tokenizer.bos_token_id, tokenizer.eos_token_id)).encode("utf-8"))
    return digest.hexdigest()
