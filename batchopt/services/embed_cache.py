"""An on-disk cache of embeddings keyed by (embedder name, blake2b of the text).

Layout: `<path>/<embedder slug>-<hash of its name>/*.emb`, one immutable shard per batch of
computed rows. A shard is a 64-byte header (magic, dim, row count, embedder-name hash, CRC32 of
keys and of vectors), then the 16-byte keys, then the float32 vectors. It is written to a
temporary file and renamed, so readers in other processes see a whole shard or none; a shard
whose size, header or checksums do not match is dropped and its rows computed again. Keys are
read at open (16 bytes a row); vectors are memory-mapped and checksummed on first use.
Many small shards are merged under an flock, so only one process compacts at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from batchopt.services.mapped import drop_pages

if TYPE_CHECKING:
    from batchopt.services.embedders import Embedder

log = logging.getLogger(__name__)

_MAGIC = b"BOEMB\x00\x00\x01"
_HEADER = struct.Struct("<8sIQ16sII")  # magic, dim, rows, name hash, crc keys, crc vectors
_HEADER_SIZE = 64
_KEY = np.dtype("S16")
_SUFFIX = ".emb"
_SMALL_SHARD = 1024  # rows; shards below this are merged ...
_COMPACT_AT = 64  # ... once there are this many of them ...
_MERGED_ROWS = 16_384  # ... into shards of about this size
_STALE_TMP_S = 24 * 3600


class _CorruptShard(Exception):
    """A shard on disk does not match its header or checksums."""


@dataclass
class _Shard:
    path: Path
    rows: int
    keys: np.ndarray
    crc_vectors: int
    vectors: np.ndarray | None = None  # memmap, set once its checksum passed


class EmbeddingCache:
    """Embeddings of `embedder` cached in the folder `path`, across runs and processes.

    `hits` and `misses` count distinct texts over all calls of this instance: found on disk,
    or computed by the embedder (and then stored).
    """

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.embedder = embedder
        name = embedder.name
        self._name_hash = hashlib.blake2b(name.encode("utf-8"), digest_size=16).digest()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
        self.folder = Path(path) / f"{slug}-{self._name_hash.hex()[:12]}"
        self.hits = 0
        self.misses = 0
        self._shards: dict[str, _Shard] = {}
        self._order: list[str] = []  # shard file names in index order
        self._index_keys = np.empty(0, dtype=_KEY)  # sorted
        self._index_loc = np.empty((0, 2), dtype=np.int64)  # (shard number, row)
        self._stale = True
        self._seen_dim: int | None = None

    def embed(self, texts: list[str], batch_size: int = 4096) -> np.ndarray:
        """Like `Embedder.embed`: cached rows read from disk, the rest computed once per
        distinct text in batches of `batch_size`, each batch stored as it is done."""
        if not texts:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        keys = hash_texts(texts)
        unique, first, source = _distinct(keys)
        del keys
        self._refresh()  # an embedder that learns its dim from its vectors learns it here
        # Each distinct text is written to its first row, then copied to its repeats.
        out = None if self.dim is None else np.empty((len(texts), self.dim), dtype=np.float32)
        found = np.zeros(len(unique), dtype=bool) if out is None else self._read(unique, out, first)
        missing = np.flatnonzero(~found)
        for start in range(0, len(missing), max(1, batch_size)):
            part = missing[start : start + max(1, batch_size)]
            computed = self._compute([texts[i] for i in first[part]])
            if out is None:  # nothing was on disk, so nothing was read
                out = np.empty((len(texts), computed.shape[1]), dtype=np.float32)
            out[first[part]] = computed
            self._write(unique[part], computed)
        assert out is not None
        if source is not None:
            repeats = np.flatnonzero(source != np.arange(len(texts)))
            out[repeats] = out[source[repeats]]
        self.hits += int(found.sum())
        self.misses += len(missing)
        self._maybe_compact()
        return out

    @property
    def dim(self) -> int | None:
        """The embedder's dim; for one that knows it only from its first vectors, the dim of
        the shards on disk until then (None while neither is known)."""
        return getattr(self.embedder, "dim", None) or self._seen_dim

    def compact(self) -> None:
        """Merge small shards into shards of up to 16,384 rows (skipped while another process
        compacts). Memory stays bounded by one merged shard."""
        with self._lock() as locked:
            if not locked:
                return
            self._refresh()
            small = [n for n in self._order if self._shards[n].rows < _SMALL_SHARD]
            group: list[str] = []
            for name in small:
                group.append(name)
                if sum(self._shards[n].rows for n in group) >= _MERGED_ROWS or name == small[-1]:
                    self._merge(group)
                    group = []
            self._stale = True

    def _merge(self, names: list[str]) -> None:
        if len(names) < 2:
            return
        keys, vectors, merged = [], [], []
        for name in names:
            try:
                vectors.append(np.array(self._vectors(self._shards[name])))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, _CorruptShard):
                self._forget(name, delete=True)
                continue
            keys.append(self._shards[name].keys)
            merged.append(name)
        # The merged shard is in place before its sources go, so a reader never misses a row.
        if keys and self._write(np.concatenate(keys), np.concatenate(vectors)):
            for name in merged:
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink()

    # -- reading -------------------------------------------------------------------------

    def _read(self, keys: np.ndarray, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Fill `out[rows[i]]` for each `keys[i]` on disk; return the mask of keys found."""
        found = np.zeros(len(keys), dtype=bool)
        for _attempt in range(2):
            self._refresh()
            if not len(self._index_keys):
                return found
            pending = np.flatnonzero(~found)
            pos = np.searchsorted(self._index_keys, keys[pending])
            pos = np.minimum(pos, len(self._index_keys) - 1)
            hit = self._index_keys[pos] == keys[pending]
            pending, pos = pending[hit], pos[hit]
            if not len(pending):
                return found
            by_shard = np.argsort(self._index_loc[pos, 0], kind="stable")
            pending, loc = pending[by_shard], self._index_loc[pos[by_shard]]
            numbers, starts = np.unique(loc[:, 0], return_index=True)
            retry = False
            for number, start, stop in zip(numbers, starts, [*starts[1:], len(loc)], strict=True):
                name = self._order[number]
                try:
                    table = self._vectors(self._shards[name])
                    out[rows[pending[start:stop]]] = table[loc[start:stop, 1]]
                    found[pending[start:stop]] = True
                    drop_pages(table)  # a warm read at 10M kept 7 GB of shards mapped
                except FileNotFoundError:
                    retry = True  # merged away by another process's compaction
                    self._forget(name)
                except (OSError, ValueError, _CorruptShard) as exc:
                    log.warning("embedding cache: dropping unreadable shard %s (%s)", name, exc)
                    self._forget(name, delete=True)
            if not retry:
                break
        return found

    def _vectors(self, shard: _Shard) -> np.ndarray:
        if shard.vectors is None:
            dim = self.dim
            table = np.memmap(
                shard.path,
                dtype="<f4",
                mode="r",
                offset=_HEADER_SIZE + shard.rows * _KEY.itemsize,
                shape=(shard.rows, dim),
            )
            if zlib.crc32(table) != shard.crc_vectors:
                raise _CorruptShard("vector checksum mismatch")
            shard.vectors = table
        return shard.vectors

    def _refresh(self) -> None:
        """Load the keys of shards written since the last look (by any process)."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError:  # absent, or not a folder: nothing cached
            entries = []
        now = time.time()
        names = set()
        for entry in entries:
            if entry.name.endswith(_SUFFIX):
                names.add(entry.name)
            elif entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_TMP_S:
                        os.unlink(entry.path)
        gone = set(self._shards) - names
        for name in gone:
            self._forget(name)
        for name in sorted(names - set(self._shards)):
            try:
                self._shards[name] = self._open(self.folder / name)
            except FileNotFoundError:
                continue
            except (OSError, _CorruptShard) as exc:
                log.warning("embedding cache: dropping unreadable shard %s (%s)", name, exc)
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink()
                continue
            self._stale = True
        if self._stale:
            self._reindex()

    def _open(self, path: Path) -> _Shard:
        dim = self.dim
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header = handle.read(_HEADER_SIZE)
            if len(header) < _HEADER_SIZE:
                raise _CorruptShard("truncated header")
            magic, shard_dim, rows, name_hash, crc_keys, crc_vectors = _HEADER.unpack_from(header)
            if dim is None and magic == _MAGIC and name_hash == self._name_hash and shard_dim:
                dim = shard_dim  # checked below; adopted once the shard proves whole
            if magic != _MAGIC or shard_dim != dim or name_hash != self._name_hash:
                raise _CorruptShard("foreign or damaged header")
            if size != _HEADER_SIZE + rows * (_KEY.itemsize + 4 * dim):
                raise _CorruptShard(f"size {size} does not match {rows} rows")
            raw = handle.read(rows * _KEY.itemsize)
        if zlib.crc32(raw) != crc_keys:
            raise _CorruptShard("key checksum mismatch")
        if self.dim is None:
            self._seen_dim = dim
        return _Shard(path, rows, np.frombuffer(raw, dtype=_KEY), crc_vectors)

    def _forget(self, name: str, delete: bool = False) -> None:
        shard = self._shards.pop(name, None)
        if delete and shard is not None:
            with contextlib.suppress(OSError):
                shard.path.unlink()
        self._stale = True

    def _reindex(self) -> None:
        self._order = sorted(self._shards)
        if not self._order:
            self._index_keys = np.empty(0, dtype=_KEY)
            self._index_loc = np.empty((0, 2), dtype=np.int64)
        else:
            keys = np.concatenate([self._shards[n].keys for n in self._order])
            loc = np.concatenate(
                [
                    np.stack([np.full(s.rows, i), np.arange(s.rows)], axis=1)
                    for i, s in enumerate(self._shards[n] for n in self._order)
                ]
            )
            # Stable order keeps the first copy of a key when shards overlap mid-compaction.
            keys, first = np.unique(keys, return_index=True)
            self._index_keys, self._index_loc = keys, loc[first]
        self._stale = False

    # -- writing -------------------------------------------------------------------------

    def _compute(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        dim = self.dim or (vectors.shape[-1] if vectors.ndim == 2 else None)
        if vectors.shape != (len(texts), dim) or not np.isfinite(vectors).all():
            raise ValueError(
                f"embedder {self.embedder.name} returned shape {vectors.shape} or non-finite "
                f"values for {len(texts)} texts"
            )
        return vectors

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> bool:
        """Store one shard atomically; a cache that cannot be written is only a slower run."""
        keys = np.ascontiguousarray(keys, dtype=_KEY)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        header = _HEADER.pack(
            _MAGIC,
            vectors.shape[1],
            len(keys),
            self._name_hash,
            zlib.crc32(keys),
            zlib.crc32(vectors),
        ).ljust(_HEADER_SIZE, b"\0")
        tag = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        tmp = self.folder / f".tmp-{tag}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(header)
                handle.write(keys.tobytes())
                handle.write(vectors.tobytes())
            tmp.rename(self.folder / f"{tag}{_SUFFIX}")
        except OSError as exc:
            log.warning("embedding cache: cannot write to %s (%s)", self.folder, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True

    def _maybe_compact(self) -> None:
        with contextlib.suppress(OSError):
            small = sum(
                1
                for e in os.scandir(self.folder)
                if e.name.endswith(_SUFFIX) and e.stat().st_size < _small_bytes(self.dim or 0)
            )
            if small >= _COMPACT_AT:
                self.compact()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[bool]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".compact.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def hash_texts(texts: list[str]) -> np.ndarray:
    """16-byte blake2b digests of the UTF-8 texts, as an S16 array."""
    blake2b = hashlib.blake2b
    digests = bytearray(16 * len(texts))
    view = memoryview(digests)
    for i, text in enumerate(texts):
        view[16 * i : 16 * i + 16] = blake2b(text.encode("utf-8"), digest_size=16).digest()
    return np.frombuffer(digests, dtype=_KEY)


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`np.unique(keys, return_index=True)` for S16 keys (sorted as two big-endian 64-bit
    words, byte order), and `source`: for every row the row of its key's first occurrence, or
    None when no key repeats (the usual case: the texts are exact representatives)."""
    words = keys.view(">u8").reshape(-1, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))  # stable: first occurrences first
    ranked = words[order]
    new = np.ones(len(keys), dtype=bool)
    np.any(ranked[1:] != ranked[:-1], axis=1, out=new[1:])
    del ranked
    first = order[new]
    unique = keys[first]
    if new.all():
        return unique, first, None
    source = np.empty(len(keys), dtype=np.int64)
    source[order] = first[np.cumsum(new) - 1]
    return unique, first, source


def _small_bytes(dim: int) -> int:
    return _HEADER_SIZE + _SMALL_SHARD * (_KEY.itemsize + 4 * dim)
