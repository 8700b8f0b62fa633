"""Our engine as an lm-evaluation-harness model: ``--model emergence-harness``.

lm-eval's task system (YAML, Jinja templates, filters, ``process_results``, aggregation, groups)
asks a model for three request types; ``HarnessLM`` serves them with ``harness.engine.Engine``, so
every lm-eval task runs with shared-prefix scoring and batched greedy decoding:

- ``loglikelihood``: all (context, continuation) pairs of a run in one engine call, so a few-shot
  header or a question scored once per choice is forwarded once;
- ``loglikelihood_rolling``: lm-eval's rolling windows (context 1, the model's window);
- ``generate_until``: greedy text cut at ``until`` (plus EOS, as lm-eval adds it), at most
  ``max_gen_toks`` new tokens.  Sampling (``do_sample: true``, temperature > 0, beams...) is refused
  in one line: the engine decodes greedily only.

Tokenization, truncation and scoring are lm-eval 0.4.13's ``HFLM`` rules (the engine replicates
them), so per-item log-probabilities equal ``--model hf`` within float noise and generations are
identical (``tests/interop/test_lm_eval_backend.py`` checks both).

lm-eval 0.4.13 has no plugin discovery: ``lm_eval --model NAME`` only knows the models named in
``lm_eval.models``.  Importing this module registers ours, so

    python -m harness.interop.lm_eval_model --model emergence-harness \\
        --model_args pretrained=PATH_OR_HUB_ID,dtype=float32 --tasks ... [any lm_eval option]
    harness-lm-eval --model emergence-harness ...        (the same, as a console script)

run lm-eval's own CLI with the model registered, and in Python

    import harness.interop.lm_eval_model  # registers "emergence-harness"
    lm_eval.simple_evaluate(model="emergence-harness", model_args="pretrained=...", tasks=[...])

or ``simple_evaluate(model=HarnessLM(pretrained=model, tokenizer=tokenizer))`` with a model
already in memory.  ``pretrained`` is whatever ``harness eval`` loads: a checkpoint folder, a
``.gguf`` file or a hub id (with ``revision``).  ``trust_remote_code`` must be a real boolean
(``trust_remote_code=true``); it is off by default.

Needs the optional extra: ``pip install -e .[lm-eval]`` (lm-eval >=0.4.13,<0.5, tested on 0.4.13).
"""

from __future__ import annotations

import importlib.util
import sys

from harness.interop.lm_eval_cli import LM_EVAL_REQUIREMENT, MISSING_LM_EVAL

if importlib.util.find_spec("lm_eval") is None:
    if __name__ == "__main__":
        sys.exit(MISSING_LM_EVAL)
    raise ModuleNotFoundError(MISSING_LM_EVAL, name="lm_eval")

import copy  # noqa: E402
import importlib.metadata  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import lm_eval.models  # noqa: E402,F401  (fills lm-eval's registry first, so "hf" & co. stay findable)
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import model_registry  # noqa: E402

from harness.engine import Engine  # noqa: E402
from harness.engine.models import ModelInfo, load_model, model_info  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.requests import GenerationRequest, LoglikelihoodRequest  # noqa: E402

MODEL_NAME = "emergence-harness"
DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks

# generation kwargs that leave greedy decoding as it is (when they have these values, or any value
# for the sampling-only ones, which greedy decoding ignores as transformers does)
_SAMPLING_ONLY = {"top_p", "top_k", "min_p", "typical_p"}
_NEUTRAL = {"num_beams": 1, "repetition_penalty": 1.0, "num_return_sequences": 1}


def _check_version() -> None:
    version = importlib.metadata.version("lm_eval")
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    if not (0, 4, 13) <= parts < (0, 5):
        warnings.warn(f"lm-eval {version} is outside the tested range {LM_EVAL_REQUIREMENT}; results may differ",
                      stacklevel=3)


def _boolean(name: str, value: Any) -> bool | None:
    """A model arg that must be a real boolean (lm-eval parses ``true``/``false``), or None."""
    if value is None or isinstance(value, bool):
        return value
    raise UserError(f"{name}={value!r}: must be true or false")


def _batch_size(value: Any) -> int | str:
    """lm-eval's --batch_size (an int, a digit string, "auto" or "auto:N") as the engine's."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto" or text.startswith("auto:"):
            return "auto"  # the engine re-estimates the size per batch from free memory
        if text.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"batch_size={value!r}: must be a positive integer or auto")
    return value


class HarnessLM(LM):
    """lm-eval's ``LM`` over ``harness.engine.Engine`` (see the module docstring)."""

    def __init__(
        self,
        pretrained: Any,
        tokenizer: Any = None,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str | None = 8,
        max_batch_size: int | None = None,  # lm-eval passes it; the engine sizes "auto" batches itself
        max_length: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        add_bos_token: bool | None = None,
        prefix_cache: bool = True,
        trust_remote_code: bool = False,
        progress: bool = True,
        **unknown: Any,
    ) -> None:
        super().__init__()
        _check_version()
        if unknown:
            raise UserError(
                f"unknown model_args for {MODEL_NAME}: {', '.join(sorted(unknown))}; known: pretrained, tokenizer, "
                "revision, dtype, device, batch_size, max_length, max_gen_toks, add_bos_token, prefix_cache, "
                "trust_remote_code, progress"
            )
        trust_remote_code = bool(_boolean("trust_remote_code", trust_remote_code))
        add_bos_token = _boolean("add_bos_token", add_bos_token)
        prefix_cache = bool(_boolean("prefix_cache", prefix_cache))
        if isinstance(max_gen_toks, bool) or not isinstance(max_gen_toks, int) or max_gen_toks < 1:
            raise UserError(f"max_gen_toks={max_gen_toks!r}: must be a positive integer")
        if isinstance(pretrained, str):
            if tokenizer is not None:
                raise UserError(f"{MODEL_NAME} loads the tokenizer saved with {pretrained!r}; drop tokenizer=")
            model, tok, info = load_model(pretrained, revision=None if revision is None else str(revision),
                                          dtype=str(dtype), device=str(device or "auto"),
                                          trust_remote_code=trust_remote_code)
        else:  # a model already in memory, as HFLM(pretrained=model, tokenizer=tokenizer)
            if tokenizer is None or isinstance(tokenizer, str):
                raise UserError(f"{MODEL_NAME} with a model object needs its tokenizer object too (tokenizer=)")
            model, tok = pretrained, tokenizer
            info = model_info(model, tok, model=getattr(model, "name_or_path", "") or type(model).__name__,
                              revision=None, resolved_revision=None, content_hash=None, source="memory")
        self.info: ModelInfo = info
        self.max_gen_toks = max_gen_toks
        self.engine = Engine(model, tok, batch_size=_batch_size(batch_size), add_bos_token=add_bos_token,
                             max_length=max_length, prefix_cache=prefix_cache, progress=progress)
        self._device = self.engine.device

    @classmethod
    def over_engine(cls, engine: Engine, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS) -> HarnessLM:
        """lm-eval's three request methods over an engine already built (a run's: ``lm_eval:`` tasks in
        ``harness eval``/``sweep``), with nothing loaded; the engine's model is the run's model."""
        lm = cls.__new__(cls)
        LM.__init__(lm)
        lm.engine, lm.max_gen_toks, lm._device = engine, max_gen_toks, engine.device
        lm.info = None  # type: ignore[assignment]  # the run records the model's info itself
        return lm

    # ------------------------------------------------------------------ what lm-eval reads

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.engine.tokenizer, "name_or_path", "")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise UserError(f"{MODEL_NAME} does not apply chat templates; drop --apply_chat_template or use --model hf")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records in its results' config (as HFLM's keys, plus the engine's)."""
        return {
            "model_num_parameters": self.info.params_total,
            "model_dtype": self.info.dtype,
            "model_revision": self.info.resolved_revision or self.info.revision,
            "model_sha": self.info.resolved_revision or self.info.content_hash,
            "engine": MODEL_NAME,
            "prefix_cache": self.engine.shares_prefixes,
        }

    # ------------------------------------------------------------------ the three request types

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [LoglikelihoodRequest(*request.args) for request in requests]
        results = self.engine.loglikelihood(pairs)
        out = []
        for request, result in zip(requests, results):
            answer = (result.logprob, result.is_greedy)
            self.cache_hook.add_partial("loglikelihood", request.args, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        texts = [request.args[0] for request in requests]
        results = self.engine.loglikelihood_rolling(texts, context_len=1)
        out = []
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, result.logprob)
            out.append(result.logprob)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        generations = [GenerationRequest(context, *self._greedy(gen_kwargs)) for context, gen_kwargs in
                       (request.args for request in requests)]
        texts = self.engine.generate(generations)
        for request, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return texts

    def _greedy(self, gen_kwargs: dict[str, Any]) -> tuple[tuple[str, ...], int]:
        """(stop strings, max new tokens) of a request's generation kwargs, read as HFLM reads them
        (``normalize_gen_kwargs``); anything but greedy decoding is refused in one line."""
        from lm_eval.models.utils import normalize_gen_kwargs

        if not isinstance(gen_kwargs, dict):
            raise UserError(f"generation kwargs must be a dict, got {type(gen_kwargs).__name__}")
        kwargs = dict(normalize_gen_kwargs(copy.deepcopy(gen_kwargs), self.max_gen_toks))
        until = kwargs.pop("until")
        max_gen_toks = kwargs.pop("max_gen_toks")
        sampling = kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0
        changed = sorted(
            name for name, value in kwargs.items()
            if name not in _SAMPLING_ONLY and not (name in _NEUTRAL and value == _NEUTRAL[name])
        )
        if sampling or changed:
            what = "sampling (do_sample / temperature > 0)" if sampling else f"generation kwargs {', '.join(changed)}"
            raise UserError(f"{MODEL_NAME} decodes greedily only and cannot honour {what}; "
                            "set do_sample: false, temperature: 0, or use --model hf")
        if any(not isinstance(stop, str) for stop in until):
            raise UserError(f"until must be strings, got {until!r}")
        return tuple(stop for stop in until if stop), int(max_gen_toks)


# Registered by name, not by class: the same entry whether this module runs as ``__main__`` or is
# imported (again), and lm-eval imports the class from its real module path when asked for it.
model_registry.register(MODEL_NAME, target="harness.interop.lm_eval_model:HarnessLM")


def main(argv: list[str] | None = None) -> None:
    """lm-eval's own CLI (``lm_eval ...``) with ``--model emergence-harness`` registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    assert MODEL_NAME in model_registry
    try:
        cli_evaluate()
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
