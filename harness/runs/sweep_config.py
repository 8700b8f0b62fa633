"""What a sweep runs: models (each with its checkpoints and an optional size label), tasks, loss
settings, output folder, device, batch size — from ``--config sweep.yaml`` or from flags (one model).

    out: results/pythia
    tasks: [mmlu, gsm8k]            # or "mmlu,gsm8k"
    data_dir: data/                 # optional; paths are relative to this file
    limit: 100
    loss: {corpus: val.jsonl, window: 2048, tokens: 1000000}   # or {from: trainer-state} / {from: losses.tsv, smoothing: 10}
    tokens_per_step: pythia         # or a number
    device: auto
    dtype: auto
    batch_size: auto
    include_path: my_tasks/         # optional: lm-eval YAMLs for lm_eval:<name> tasks (allow_task_code: true for !function)
    models:
      - model: EleutherAI/pythia-160m
        revisions: pythia           # or step1000:143000:1000, or a list
        size: 160m
      - checkpoints: runs/my-1b/    # a folder of checkpoint-N/ folders, a checkpoint, or a list
        name: my-1b
        size: 1b
        loss: {from: trainer-state} # per-model override of the loss settings

Every value is checked by type before anything runs (``_GLOBAL_TYPES``, ``_MODEL_TYPES``,
``_LOSS_TYPES``): a boolean is an unquoted true/false (``"false"`` is a string, and bool("false")
would be True), a count a whole number; a wrong one is one line naming the key and the type.  The
Python API's arguments are checked against the same table (``check_api_arguments``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from harness.checkpoints import Discovery, discover_checkpoints, hub_checkpoints, parse_revisions
from harness.errors import UserError, check_input_file, check_run_values, check_type, check_whole_number, not_utf8
from harness.items.registry import task_list
from harness.runs.loss_sources import LossSettings, loss_settings
from harness.runs.units import Shard, parse_shard
from harness.spec import BuildOptions


@dataclass(frozen=True)
class ModelSweep:
    """One model (size) of a sweep and where its checkpoints are."""

    name: str  # the table's model column
    size: str | None = None  # a label such as "160m"
    hub_model: str | None = None  # hub id, with ``revisions``
    revisions: tuple[str, ...] | None = None
    checkpoint_paths: tuple[Path, ...] = ()  # local: each a checkpoint or a folder of checkpoints
    loss: LossSettings | None = None
    tokens_per_step: int | None = None

    def discover(self) -> Discovery:
        if self.hub_model is not None:
            return hub_checkpoints(self.hub_model, self.revisions)
        return discover_checkpoints(list(self.checkpoint_paths))


@dataclass(frozen=True)
class SweepConfig:
    models: tuple[ModelSweep, ...]
    tasks: tuple[str, ...] = ()
    out: Path = Path("results")
    data_dir: Path | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    prompt_type: str | None = None
    bigbench_mode: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | str = "auto"
    add_bos_token: bool | None = None
    prefix_cache: bool = True
    trust_remote_code: bool = False
    shard: Shard = field(default_factory=Shard)
    save_every: int = 256  # items scored between two flushes of a task's item log
    prefetch: bool = True  # read the next checkpoint's weights while this one is evaluated
    progress: bool = True
    task_files: tuple[tuple[str, str], ...] = ()  # (task, local .jsonl or hub id): --task-file / task_files:
    data_revision: str | None = None  # hub datasets' revision: --data-revision / data_revision:
    max_new_tokens: int | str | None = None  # cap on generated tokens per item, or "auto": --max-new-tokens
    include_path: Path | None = None  # lm_eval: tasks from the user's YAML folder: --include-path / include_path:
    allow_task_code: bool = False  # their !function code may run: --allow-task-code / allow_task_code:

    def build_options(self) -> BuildOptions:
        return BuildOptions(
            data_dir=self.data_dir, limit=self.limit, num_fewshot=self.num_fewshot,
            prompt_type=self.prompt_type, bigbench_mode=self.bigbench_mode, task_files=self.task_files,
            hub_revision=self.data_revision, max_new_tokens=self.max_new_tokens, include_path=self.include_path,
            allow_task_code=self.allow_task_code,
        )


def parse_tokens_per_step(value: Any) -> int | None:
    """A number of tokens, or ``pythia`` (1024 sequences x 2048 tokens = 2,097,152)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "pythia":
        from harness.pythia import PYTHIA_TOKENS_PER_STEP

        return PYTHIA_TOKENS_PER_STEP
    try:
        tokens = int(str(value).replace("_", "").replace(",", ""))
    except ValueError:
        raise UserError(f"tokens per step {value!r}: pass a whole number or 'pythia'") from None
    if tokens < 1:
        raise UserError(f"tokens per step must be >= 1, got {tokens}")
    return tokens


def _default_name(paths: tuple[Path, ...]) -> str:
    """A local run's name, whatever the spelling of its path: the folder given (the run of a
    checkpoint folder given alone), or the common parent of the checkpoint folders given."""
    from harness.checkpoints import canonical_location as _canonical
    from harness.checkpoints import default_model_name

    if len(paths) == 1:
        return default_model_name(str(paths[0]))
    parents = {Path(_canonical(str(p))).parent for p in paths}
    return default_model_name(str(parents.pop())) if len(parents) == 1 else default_model_name(str(paths[0]))


def model_sweep(
    *, model: str | None = None, revisions: Any = None, checkpoints: Any = None, name: str | None = None,
    size: str | None = None, loss: LossSettings | None = None, tokens_per_step: int | None = None,
) -> ModelSweep:
    """One model from flags or a config entry: a hub id with revisions, or local checkpoint folders
    (``model`` naming an existing folder counts as ``checkpoints``)."""
    if model is not None and Path(model).expanduser().is_dir() and checkpoints is None:
        checkpoints, model = model, None
    if model is None and checkpoints is None:
        raise UserError("a sweep needs a model: --model HUB_ID --revisions ..., --checkpoints FOLDER, or --config")
    if model is not None and checkpoints is not None:
        raise UserError("each model needs either a hub id (--model with --revisions) or --checkpoints FOLDER, not both")
    if checkpoints is not None:
        if revisions is not None:
            raise UserError("--revisions applies to a hub model (--model); local checkpoints are found in their folder")
        items = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
        paths = tuple(Path(p).expanduser() for p in items)
        return ModelSweep(
            name=name or _default_name(paths), size=size, checkpoint_paths=paths, loss=loss,
            tokens_per_step=tokens_per_step,
        )
    if isinstance(revisions, (list, tuple)):
        revisions = ",".join(str(r) for r in revisions)
    parsed = parse_revisions(str(revisions)) if revisions is not None else None
    return ModelSweep(
        name=name or str(model), size=size, hub_model=str(model), revisions=parsed, loss=loss,
        tokens_per_step=tokens_per_step,
    )


def select_models(models: tuple[ModelSweep, ...], spec: str) -> tuple[ModelSweep, ...]:
    """The models whose size label or name is in the comma list ``spec`` (``--sizes 70m,160m``)."""
    wanted = {part.strip() for part in spec.split(",") if part.strip()}
    chosen = tuple(m for m in models if m.size in wanted or m.name in wanted)
    unknown = wanted - {m.size for m in chosen} - {m.name for m in chosen}
    if unknown or not chosen:
        labels = sorted({m.size for m in models if m.size} | {m.name for m in models})
        raise UserError(f"--sizes {spec!r}: no model named or sized {', '.join(sorted(unknown or wanted))}; known: {', '.join(labels)}")
    return chosen


_GLOBAL_KEYS = {
    "out", "tasks", "data_dir", "limit", "num_fewshot", "prompt", "bigbench_mode", "dtype", "device", "batch_size",
    "add_bos_token", "trust_remote_code", "prefix_cache", "save_every", "prefetch", "loss", "tokens_per_step", "models",
    "task_files", "data_revision", "max_new_tokens", "include_path", "allow_task_code",
}
_MODEL_KEYS = {"model", "revisions", "checkpoints", "name", "size", "loss", "tokens_per_step"}
_LOSS_KEYS = {"corpus", "from", "window", "tokens", "smoothing"}

# The type each setting must have (errors.check_type's kinds), in a sweep YAML and as a Python API
# argument alike: a quoted "false" is a string, and bool("false") would turn remote code on.
_GLOBAL_TYPES = {
    "out": "path", "tasks": "string list", "data_dir": "path", "limit": "count", "num_fewshot": "count",
    "prompt": "string", "bigbench_mode": "string", "dtype": "string", "device": "string", "batch_size": "count or auto",
    "add_bos_token": "boolean or null", "trust_remote_code": "boolean", "prefix_cache": "boolean", "save_every": "count",
    "prefetch": "boolean", "data_revision": "string", "max_new_tokens": "count or auto",
    "include_path": "path", "allow_task_code": "boolean",
}
_MODEL_TYPES = {"model": "string", "checkpoints": "string list", "name": "string"}
_LOSS_TYPES = {"corpus": "path", "from": "string", "window": "count", "tokens": "count", "smoothing": "count"}
# SweepConfig's fields (what evaluate_model and eval_spec build) and the other arguments of the Python API
_CONFIG_TYPES = {
    **{k: v for k, v in _GLOBAL_TYPES.items() if k not in ("prompt", "tasks")},
    "prompt_type": "string", "progress": "boolean", "add_bos_token": "boolean or null",
}
API_TYPES = {
    **_CONFIG_TYPES, "tasks": "string list", "loss_corpus": "path", "loss_window": "count", "loss_tokens": "count",
    "step": "count", "name": "string", "size": "string", "checkpoint_dir": "path", "train_loss": "number",
    "train_loss_step": "count", "tokens_per_step": "count", "sequence_length": "count",
    "time_budget": "number", "budget_seconds": "number", "budget_share": "number",
}
PROMPT_TYPES = ("zeroshot", "fewshot", "cot")
BIGBENCH_MODES = ("auto", "gen", "mc")


def _check_types(where: str, mapping: dict[str, Any], types: dict[str, str]) -> None:
    for key, kind in types.items():
        check_type(key, mapping.get(key), kind, where)


def check_api_arguments(function: str, arguments: dict[str, Any]) -> None:
    """Type-check the arguments of ``harness.evaluate_model`` / ``harness.EvalCallback`` (those
    ``API_TYPES`` knows) before anything runs: one line naming the argument and the type it needs."""
    for key, value in arguments.items():
        if key in API_TYPES:
            check_type(key, value, API_TYPES[key], f"{function}: ")


def _resolve(base: Path, value: Any) -> Path | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _check_keys(where: str, mapping: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise UserError(f"{where} must be a mapping of settings; see harness/runs/sweep_config.py for the format")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return mapping


def _loss_from_mapping(where: str, raw: Any, base: Path, inherited: dict[str, Any]) -> LossSettings | None:
    raw = {**inherited, **_check_keys(where, raw or {}, _LOSS_KEYS)}
    _check_types(f"{where}.", raw, _LOSS_TYPES)
    loss_from = raw.get("from")
    if loss_from is not None and loss_from not in ("trainer-state", "trainer-state:eval"):
        loss_from = str(_resolve(base, loss_from))
    return loss_settings(
        corpus=_resolve(base, raw.get("corpus")), loss_from=loss_from, window=raw.get("window", 2048),
        tokens=raw.get("tokens", 1_000_000), smoothing=raw.get("smoothing", 1),
    )


def _task_files(path: Path, raw: Any, base: Path) -> tuple[tuple[str, str], ...]:
    """``task_files: {clozet: clozet.jsonl, gsm8k_zh: owner/name}``: a path relative to the file when it
    exists there, else taken as given (a hub id)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise UserError(f"{path}: task_files must map task names to a .jsonl path or hub id, e.g. {{clozet: clozet.jsonl}}")
    files = []
    for task, source in raw.items():
        check_type(f"task_files.{task}", source, "string", f"{path}: ")
        local = _resolve(base, source)
        files.append((str(task), str(local) if local.exists() else str(source)))
    return tuple(files)


def load_sweep_config(path: Path, **overrides: Any) -> SweepConfig:
    """Read ``sweep.yaml`` (relative paths inside it are relative to the file); ``overrides`` are
    SweepConfig fields given as flags, which win over the file."""
    path = Path(path)
    check_input_file(path, "--config", "a sweep YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise not_utf8(path, error) from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    raw = _check_keys(str(path), raw, _GLOBAL_KEYS)
    _check_types(f"{path}: ", raw, _GLOBAL_TYPES)
    base = path.parent
    if not raw.get("models"):
        raise UserError(f"{path} lists no models; add a 'models:' list (each with model+revisions or checkpoints)")
    if not isinstance(raw["models"], list):
        raise UserError(f"{path}: models must be a list (each entry '- model: ...' or '- checkpoints: ...'), "
                        f"got a {type(raw['models']).__name__}")
    loss_defaults = _check_keys(f"{path}: loss", raw.get("loss") or {}, _LOSS_KEYS)
    _check_types(f"{path}: loss.", loss_defaults, _LOSS_TYPES)
    models = []
    for index, entry in enumerate(raw["models"]):
        entry = _check_keys(f"{path}: models[{index}]", entry, _MODEL_KEYS)
        _check_types(f"{path}: models[{index}].", entry, _MODEL_TYPES)
        has_own_loss = "loss" in entry
        loss = _loss_from_mapping(
            f"{path}: models[{index}].loss", entry.get("loss"), base, {} if has_own_loss else loss_defaults
        )
        checkpoints = entry.get("checkpoints")
        if checkpoints is not None:
            checkpoints = [_resolve(base, c) for c in (checkpoints if isinstance(checkpoints, list) else [checkpoints])]
        models.append(model_sweep(
            model=entry.get("model"), revisions=entry.get("revisions"), checkpoints=checkpoints,
            name=entry.get("name"), size=None if entry.get("size") is None else str(entry["size"]), loss=loss,
            tokens_per_step=parse_tokens_per_step(entry.get("tokens_per_step", raw.get("tokens_per_step"))),
        ))
    config = SweepConfig(
        models=tuple(models),
        tasks=task_list(raw.get("tasks")),
        out=_resolve(base, raw.get("out", "results")),
        data_dir=_resolve(base, raw.get("data_dir")),
        limit=raw.get("limit"),
        num_fewshot=raw.get("num_fewshot"),
        prompt_type=raw.get("prompt"),
        bigbench_mode=raw.get("bigbench_mode", "auto"),
        dtype=str(raw.get("dtype", "auto")),
        device=str(raw.get("device", "auto")),
        batch_size=raw.get("batch_size", "auto"),
        add_bos_token=raw.get("add_bos_token"),
        trust_remote_code=raw.get("trust_remote_code", False),  # booleans: checked above, never bool()-ed
        prefix_cache=raw.get("prefix_cache", True),
        save_every=raw.get("save_every", 256),
        prefetch=raw.get("prefetch", True),
        task_files=_task_files(path, raw.get("task_files"), base),
        data_revision=None if raw.get("data_revision") is None else str(raw["data_revision"]),
        max_new_tokens=raw.get("max_new_tokens"),
        include_path=_resolve(base, raw.get("include_path")),
        allow_task_code=raw.get("allow_task_code", False),
    )
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return validated(config)


def validated(config: SweepConfig) -> SweepConfig:
    _check_types("", {f.name: getattr(config, f.name) for f in fields(config)}, _CONFIG_TYPES)
    if config.prompt_type is not None and config.prompt_type not in PROMPT_TYPES:
        raise UserError(f"prompt {config.prompt_type!r}: pass one of {', '.join(PROMPT_TYPES)} (or leave it out)")
    if config.bigbench_mode not in BIGBENCH_MODES:
        raise UserError(f"bigbench_mode {config.bigbench_mode!r}: pass one of {', '.join(BIGBENCH_MODES)}")
    if not config.models:
        raise UserError("a sweep needs a model: --model HUB_ID --revisions ..., --checkpoints FOLDER, or --config")
    if not config.tasks and all(m.loss is None for m in config.models):
        raise UserError("nothing to do: pass --tasks, a loss (--loss-corpus / --loss-from), or both")
    check_run_values(
        limit=config.limit, num_fewshot=config.num_fewshot, batch_size=config.batch_size,
        names={"limit": "--limit (limit:)", "num_fewshot": "--num-fewshot (num_fewshot:)", "batch_size": "--batch-size (batch_size:)"},
    )
    check_whole_number("--save-every (save_every:)", config.save_every, 1, "items scored between two saves, e.g. 256")
    if config.max_new_tokens != "auto":
        check_whole_number("--max-new-tokens (max_new_tokens:)", config.max_new_tokens, 1,
                           "tokens generated per item at most, or auto (from the targets)")
    if not 0 <= config.shard.index < config.shard.count:
        raise UserError(f"--shard {config.shard.index}/{config.shard.count}: write i/n with 0 <= i < n, e.g. 0/4 ... 3/4")
    for model in config.models:
        if model.hub_model is not None and model.loss is not None and model.loss.kind.startswith("trainer-state"):
            raise UserError(
                f"--loss-from trainer-state reads local HF Trainer checkpoints; for the hub model {model.hub_model} "
                "use --loss-corpus or a loss log file"
            )
    names = [m.name for m in config.models]
    if len(set(names)) != len(names):
        raise UserError(f"two models share the name {next(n for n in names if names.count(n) > 1)!r}; give each a distinct name")
    return config


def config_from_flags(
    *, config: Path | None = None, preset: str | None = None, sizes: str | None = None, model: str | None = None,
    revisions: str | None = None, checkpoints: list[Path] | None = None, name: str | None = None,
    size: str | None = None, tasks: str | None = None, tokens_per_step: str | None = None, shard: str | None = None,
    loss_corpus: Path | None = None, loss_from: str | None = None, loss_window: int = 2048,
    loss_tokens: int = 1_000_000, loss_smoothing: int = 1, **settings: Any,
) -> SweepConfig:
    """What ``harness sweep`` runs: the ``config`` file (or the packaged ``preset``) with the flags
    given winning over it, or the one model the flags name.  ``settings`` are the other SweepConfig
    fields as flags, None where left out."""
    tokens = parse_tokens_per_step(tokens_per_step)
    overrides = {
        **settings, "tasks": task_list(tasks) if tasks is not None else None,
        "shard": parse_shard(shard) if shard is not None else None,
    }
    loss = loss_settings(corpus=loss_corpus, loss_from=loss_from, window=loss_window, tokens=loss_tokens,
                         smoothing=loss_smoothing)
    config_path = _config_path(config, preset)
    if preset is not None and overrides.get("out") is None:
        overrides["out"] = Path("results") / preset  # not beside the packaged file
    if config_path is None:
        if sizes is not None:
            raise UserError("--sizes selects models of a --config or --preset; with one model, drop it")
        the_model = model_sweep(model=model, revisions=revisions, checkpoints=checkpoints, name=name, size=size,
                                loss=loss, tokens_per_step=tokens)
        return validated(replace(SweepConfig(models=(the_model,)), **{k: v for k, v in overrides.items() if v is not None}))
    given = [flag for flag, value in (("--model", model), ("--revisions", revisions), ("--checkpoints", checkpoints),
                                      ("--name", name), ("--size", size)) if value is not None]
    if given:
        raise UserError(f"the sweep config lists the models; drop {', '.join(given)} or drop --config/--preset")
    loaded = load_sweep_config(config_path, **overrides)
    model_changes = {k: v for k, v in {"tokens_per_step": tokens, "loss": loss}.items() if v is not None}
    models = tuple(replace(m, **model_changes) for m in loaded.models)  # flags given win over the file
    if sizes is not None:
        models = select_models(models, sizes)
    return validated(replace(loaded, models=models))


def _config_path(config: Path | None, preset: str | None) -> Path | None:
    """--config's file, or the packaged file of --preset (harness/interop/presets/<name>.yaml)."""
    if preset is None:
        return config
    if config is not None:
        raise UserError("--preset is a built-in --config; pass one of them")
    from importlib import resources

    folder = resources.files("harness.interop.presets")
    presets = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(presets)}")
    return Path(str(folder / f"{preset}.yaml"))
