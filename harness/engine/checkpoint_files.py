"""A checkpoint's files and what names them exactly: the sha256 of a file or of a folder's weight,
config and tokenizer files, the commit a hub revision resolves to (online or from the local HF
cache, as ``HF_HUB_OFFLINE`` says), and where dequantized GGUF files are kept.

Nothing here loads weights; ``harness.engine.models`` does, and re-exports these names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from harness.errors import UserError

# Files of an HF folder that change what the model computes or how text is tokenized.  README,
# licences and images are left out so editing a model card keeps the hash, and so is HF Trainer's
# training state beside the weights (optimizer and scheduler state, RNG states, the training
# arguments, trainer_state.json's log): it does not change what the model computes, it names the
# run's output folder and times (the same weights saved by two runs would read as two checkpoints),
# and the optimizer's state is about twice the weights' size to hash. A loss read from
# trainer_state.json is keyed by that file's own digest (runs/prepare.py, loss_record).
_CONTENT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt", ".tiktoken", ".py", ".jinja")
_NON_CONTENT = {"README.md", "LICENSE", "LICENSE.txt", "NOTICE", "NOTICE.txt",
                "trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}
_NON_CONTENT_PREFIXES = ("rng_state",)  # rng_state.pth, rng_state_<rank>.pth

_HASH_CHUNK = 1 << 20

# The files a tokenizer is built from (transformers' names across fast, slow and SentencePiece tokenizers).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model", "chat_template.jinja",
)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks so multi-GB checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_content_hash(folder: Path) -> str:
    """sha256 over the weight, config and tokenizer files at the top of ``folder`` (not a Trainer's
    training state): each file's name, size and bytes, in sorted name order (the size keeps one file's
    tail from passing for the next's name)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if (not path.is_file() or path.name in _NON_CONTENT or path.name.startswith(_NON_CONTENT_PREFIXES)
                or not path.name.endswith(_CONTENT_SUFFIXES)):
            continue
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def tokenizer_files_digest(folder: Path) -> str | None:
    """sha256 over the tokenizer files of a checkpoint folder (names and bytes); None when it has none."""
    digest = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() if found else None


def default_gguf_cache_dir() -> Path:
    """``$HARNESS_CACHE/gguf`` when set (the harness's cache root), else ``~/.cache/emergence-harness/gguf``."""
    root = os.environ.get("HARNESS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "emergence-harness"
    return base / "gguf"


def revision_label(model: str, revision: str | None) -> str:
    """How messages name a checkpoint: ``'org/name' (revision 'step1000')``, or just the model."""
    return f"{model!r} (revision {revision!r})" if revision else repr(model)


def has_safetensors(files: list[str]) -> bool:
    return any(name.endswith(".safetensors") for name in files)


def resolve_hub_revision(model: str, revision: str | None) -> tuple[str, list[str]]:
    """The commit ``revision`` of hub model ``model`` points to, and the files of that commit.

    The commit comes from the hub when it can be reached, else from the local HF cache (its
    ``refs/<revision>`` file names the snapshot folder); ``snapshot_download`` does both and, limited to
    config.json, fetches nothing heavy.  The file list (what the snapshot folder holds) says whether
    safetensors exist.
    """
    label = revision_label(model, revision)
    try:
        snapshot = Path(
            snapshot_download(
                model,
                revision=revision,
                allow_patterns=["config.json"],
                local_files_only=bool(hub_constants.HF_HUB_OFFLINE),
            )
        )
    except GatedRepoError:
        raise UserError(f"hub model {model!r} is gated; accept its licence on the hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise UserError(f"hub model {model!r} has no revision {revision!r}; pass a branch, tag or commit it has") from None
    except (RepositoryNotFoundError, HFValidationError):
        raise UserError(
            f"no such folder or hub model {model!r}; pass a local checkpoint folder, a .gguf file or a hub id"
        ) from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise UserError(
            f"hub model {label} is not in the local HF cache ({hub_constants.HF_HUB_CACHE}) and the hub could not "
            "be reached or HF_HUB_OFFLINE=1; download it once online, or pass a local checkpoint folder"
        ) from None
    # What the snapshot holds: all of a cached model offline; online, maybe only config.json, in
    # which case from_pretrained's own default (safetensors first) decides.
    files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    return snapshot.name, files


def hub_tokenizer_folder(model: str, commit: str) -> Path:
    """The cached snapshot folder of ``model`` at ``commit`` with its tokenizer files fetched (small)."""
    return Path(snapshot_download(
        model, revision=commit, allow_patterns=list(TOKENIZER_FILES),
        local_files_only=bool(hub_constants.HF_HUB_OFFLINE),
    ))


# ---------------------------------------------------------------------- shape checks (nothing loaded)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_GGUF_MAGIC = b"GGUF"
# what an HF Trainer checkpoint holds beside the weights, with the weights' suffixes
_TRAINER_STATE_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}


def check_safetensors(path: Path) -> None:
    """A ``.safetensors`` file's header is whole and its tensors fit in the file (a truncated copy,
    or a file of another kind under that name, is found here, not half-way through loading): the
    format is an 8-byte little-endian header length, a JSON header of ``data_offsets``, the data."""
    import json

    size = path.stat().st_size
    problem = None
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            problem = "its header length does not fit the file"
        else:
            try:
                header = json.loads(handle.read(length).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                header = None
            if not isinstance(header, dict):
                problem = "its header is not JSON"
            else:
                ends = [entry.get("data_offsets", [0, 0])[1] for key, entry in header.items()
                        if key != "__metadata__" and isinstance(entry, dict)]
                if any(not isinstance(end, int) for end in ends):
                    problem = "its header has malformed offsets"
                elif ends and 8 + length + max(ends) > size:
                    problem = f"it is truncated ({size} bytes, its header needs {8 + length + max(ends)})"
    if problem:
        raise UserError(f"{path} is not a readable safetensors file: {problem}; copy or save the checkpoint again")


def check_gguf(path: Path) -> None:
    """A ``.gguf`` file starts with the GGUF magic (a text file or a partial download does not)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise UserError(f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a real .gguf "
                        "(re-download it) or a checkpoint folder")


def no_config_error(folder: Path) -> UserError:
    """A folder given as a checkpoint without a config.json: what it holds instead, and what to pass."""
    listing = sorted(p.name for p in Path(folder).iterdir())
    found = (f"it holds {', '.join(listing[:5])}" + (f" and {len(listing) - 5} more" if len(listing) > 5 else "")
             if listing else "it is empty")
    return UserError(f"folder {str(folder)!r} has no config.json ({found}); pass a Hugging Face checkpoint "
                     "folder (config.json, weights, tokenizer), a .gguf file or a hub id")


def check_checkpoint_folder(folder: Path, *, trust_remote_code: bool = False) -> None:
    """A local HF checkpoint folder has what loading needs: a JSON ``config.json``, weights (each
    safetensors file whole, each shard an index names present) and tokenizer files.  One line naming
    what is missing or broken; nothing is loaded."""
    import json

    config = folder / "config.json"
    if not config.is_file():
        raise no_config_error(folder)
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{config} is not valid JSON ({str(error).splitlines()[0]}); save the checkpoint again") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{config} is not a JSON object; save the checkpoint again")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    weights = sorted(n for n in names if n.endswith(_WEIGHT_SUFFIXES) and n not in _TRAINER_STATE_FILES
                     and not n.startswith("rng_state"))
    for index_name in sorted(n for n in names if n.endswith(".index.json")):
        try:
            weight_map = json.loads((folder / index_name).read_text(encoding="utf-8")).get("weight_map", {})
            shards = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise UserError(f"{folder / index_name} is not a valid weight index; save the checkpoint again") from None
        missing = [s for s in shards if s not in names]
        if missing:
            raise UserError(f"{folder} lacks {len(missing)} weight shard(s) its {index_name} names, e.g. {missing[0]}; "
                            "copy the whole checkpoint")
    if not weights:
        raise UserError(f"folder {str(folder)!r} has a config.json but no weights (*.safetensors or *.bin); "
                        "copy the whole checkpoint")
    for name in weights:
        path = folder / name
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty; copy or save the checkpoint again")
        if name.endswith(".safetensors"):
            check_safetensors(path)
    if not trust_remote_code and not any(name in names for name in TOKENIZER_FILES):
        raise UserError(f"folder {str(folder)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}...); "
                        "save the tokenizer into the checkpoint folder (tokenizer.save_pretrained)")
