"""Embedders: the `Embedder` interface and its implementations (sentence-transformers, a
model2vec static model, an engine's `embed` callable). torch, sentence-transformers and
model2vec are imported when an embedder is made, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from batchopt.errors import ConfigError
from batchopt.services.embed_models import INSTALL_HINT, embedder_label, go_offline

_ST_BATCH = 64
_M2V_BATCH = 16_384


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    """Stable id of backend, model and weights, e.g. "st:all-MiniLM-L6-v2@3f2a9c1d"."""
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim) with unit rows; (0, dim) for no texts."""
        ...


class CallEmbedder:
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
        """The callable's vectors for `texts`, checked for shape."""
        vectors = np.asarray(self._call(list(texts), self._backend, self._model), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(
                f"embedder {self.name} returned shape {vectors.shape} for {len(texts)} texts"
            )
        if len(texts) and self.dim is None:
            self.dim = int(vectors.shape[1])
        return vectors


class SentenceTransformerEmbedder:
    """Any sentence-transformers model folder, on the CPU."""

    def __init__(self, folder: Path) -> None:
        go_offline()
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
        self.name = embedder_label("sentence-transformers", folder)

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
        return normalise(np.asarray(vectors, dtype=np.float32))


class Model2VecEmbedder:
    """A model2vec static model: tokenize, then one sparse matrix product per batch.

    StaticModel.encode loops over rows in Python for pooling; a CSR matrix of token counts times
    the embedding table does the same sum in C. Mean versus sum does not matter after
    normalising. A text with no known token gets a zero row, similar to nothing.
    """

    def __init__(self, folder: Path) -> None:
        go_offline()
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
        self.name = embedder_label("model2vec", folder)

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
        return normalise(np.asarray(counts @ self._table, dtype=np.float32))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    vectors /= norms
    return vectors
