"""The memory-lean parts of semantic dedup (issue 10) decide exactly what the plain ones did:
blocked k-best cut, chunked guard facts, the outcome's vector/text mappings, and embedding
through an engine's `embed` with the embedding cache in front of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from batchopt.dedup import index, semantic, step
from batchopt.dedup.exact import exact_groups
from batchopt.dedup.guards import GuardConfig, extract_many
from batchopt.dedup.step import SemanticSettings, semantic_dedup
from batchopt.errors import ConfigError
from batchopt.services import embed_cache
from batchopt.services.embed import EmbeddingCache, embedder_name, engine_embedder


def _vector(text: str, dim: int = 16) -> np.ndarray:
    """Unit vector from the text's letters: texts that share words land close together."""
    out = np.zeros(dim, np.float32)
    for word in text.lower().split():
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        out += np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return out / max(float(np.linalg.norm(out)), 1e-12)


class FakeEngine:
    """`Engine.embed`'s signature; records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, str | None]] = []

    def embed(
        self,
        texts: list[str],
        backend: str = "sentence-transformers",
        model: str | Path | None = None,
    ) -> np.ndarray:
        self.calls.append((list(texts), backend, None if model is None else str(model)))
        if not texts:
            return np.zeros((0, 16), np.float32)
        return np.stack([_vector(t) for t in texts])


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "fake-m2v"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_dim": 16}))
    return folder


def tickets(n: int = 400) -> pl.DataFrame:
    asks = [
        "refund order #{o}",
        "where is order #{o}",
        "where is the order #{o}",  # one more word: a near-duplicate the guards let merge
        "cancel order #{o} please",
        "order #{o} arrived broken",
        "please refund my order #{o}",
    ]
    rng = np.random.default_rng(7)
    texts = [asks[int(rng.integers(len(asks)))].format(o=int(rng.integers(20))) for _ in range(n)]
    frame = pl.DataFrame({"id": [f"t{i}" for i in range(n)], "text": texts})
    return exact_groups(frame, "id", "text")


def test_blocked_k_best_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    x[1000:1500] = x[:500] + 0.05 * rng.standard_normal((500, 12)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    monkeypatch.setattr(index, "FLAT_MAX_ROWS", 500)  # IVF: pairs found from both sides
    whole = index.neighbours(x, 5, 0.6)
    monkeypatch.setattr(index, "_BEST_BLOCK", 997)
    blocked = index.neighbours(x, 5, 0.6)
    assert (whole[0] >= 0).sum() > 3000
    assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])
    assert whole[0].dtype == np.int32


def test_chunked_facts_equal_extract_many(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = pl.Series(
        [
            "Refund order #5 for Nomad",
            "refund order #5 for Nomad",
            "no refund $20",
            "The part fits",
            "The part does not fit",
            None,
            "Refund order #6",
        ]
        * 5
    )
    monkeypatch.setattr(semantic, "FACTS_CHUNK", 4)
    rows = np.array([0, 2, 3, 5, 6, 9, 12, 20, 34])
    guards = GuardConfig(vocabulary=("part",))
    got = semantic._facts_of(texts, rows, guards)
    want = extract_many(texts.fill_null("").gather(rows).to_list(), guards)
    assert got == want


def test_outcome_maps_vectors_and_texts_by_id(model_folder: Path) -> None:
    frame = tickets(60)
    engine = FakeEngine()
    settings = SemanticSettings(threshold=0.95, backend="model2vec", model=str(model_folder))
    out = semantic_dedup(frame, "id", "text", settings, None, embed=engine.embed)
    reps = frame.filter(pl.col("dedup") == "none")
    ids, texts = reps["id"].to_list(), reps["text"].to_list()
    assert len(out.vectors) == len(out.texts) == len(ids) and list(out.vectors) == ids
    assert np.array_equal(out.vectors.take(ids[::-1]), np.stack([_vector(t) for t in texts[::-1]]))
    assert out.texts.take(ids[:3]) == texts[:3]
    copy = frame.filter(pl.col("dedup") == "exact")["id"][0]
    assert ids[0] in out.vectors and copy not in out.vectors and copy not in out.texts
    assert np.array_equal(out.vectors[ids[1]], _vector(texts[1])) and out.texts[ids[1]] == texts[1]
    assert dict(out.texts.items()) == dict(zip(ids, texts, strict=True))
    with pytest.raises(KeyError):
        out.vectors.take([ids[0], copy])
    with pytest.raises(KeyError):
        out.texts[copy]


def test_engine_embed_gets_only_what_the_cache_lacks(model_folder: Path, tmp_path: Path) -> None:
    frame = tickets()
    settings = SemanticSettings(threshold=0.7, backend="model2vec", model=str(model_folder))
    engine = FakeEngine()
    plain = semantic_dedup(frame, "id", "text", settings, None, embed=engine.embed)
    reps = frame.filter(pl.col("dedup") == "none")["text"].to_list()
    assert [c[0] for c in engine.calls] == [reps]
    assert engine.calls[0][1:] == ("model2vec", str(model_folder))
    assert plain.embedder_name == embedder_name("model2vec", model_folder)
    assert plain.embedder_name.startswith("m2v:fake-m2v@")
    assert (plain.rows["dedup"] == "semantic").sum() > 0
    assert plain.rows["veto_guard"].null_count() < plain.rows.height

    cache = tmp_path / "cache"
    cold_engine, warm_engine = FakeEngine(), FakeEngine()
    cold = semantic_dedup(frame, "id", "text", settings, cache, embed=cold_engine.embed)
    assert sorted(t for c in cold_engine.calls for t in c[0]) == sorted(set(reps))
    warm = semantic_dedup(frame, "id", "text", settings, cache, embed=warm_engine.embed)
    assert warm_engine.calls == []  # every text was cached; the dim came from the shards
    more = pl.concat(
        [frame.select("id", "text"), pl.DataFrame({"id": ["n1"], "text": ["a ticket never seen"]})]
    )
    semantic_dedup(
        exact_groups(more, "id", "text"), "id", "text", settings, cache, embed=warm_engine.embed
    )
    assert [c[0] for c in warm_engine.calls] == [["a ticket never seen"]]
    for other in (cold, warm):
        assert other.rows.equals(plain.rows)


def test_engine_embedder_checks_the_settings_without_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        engine_embedder(FakeEngine().embed, "word2vec", None)
    with pytest.raises(ConfigError, match="not a local model folder"):
        engine_embedder(FakeEngine().embed, "model2vec", tmp_path / "nothing")


def test_cache_learns_the_dim_from_the_first_vectors(model_folder: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    embedder = engine_embedder(engine.embed, "model2vec", model_folder)
    assert embedder.dim is None
    cache = EmbeddingCache(tmp_path, embedder)
    first = cache.embed(["b", "a", "b"])
    assert first.shape == (3, 16) and embedder.dim == 16 and np.array_equal(first[0], first[2])
    fresh = EmbeddingCache(tmp_path, engine_embedder(FakeEngine().embed, "model2vec", model_folder))
    assert fresh.dim is None
    assert np.array_equal(fresh.embed(["a", "b"]), first[[1, 0]]) and fresh.dim == 16


def test_distinct_keys_match_numpy_unique() -> None:
    texts = ["x", "y", "x", "z", "y", "x"] + [str(i) for i in range(50)]
    keys = embed_cache.hash_texts(texts)
    unique, first, source = embed_cache._distinct(keys)
    want, want_first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    assert np.array_equal(unique, want) and np.array_equal(first, want_first)
    assert source is not None and np.array_equal(source, want_first[inverse.reshape(-1)])
    assert embed_cache._distinct(embed_cache.hash_texts(["p", "q"]))[2] is None


def test_vectors_embedded_in_chunks_equal_one_call(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = tickets()
    settings = SemanticSettings(threshold=0.7, backend="model2vec", model=str(model_folder))
    whole = semantic_dedup(frame, "id", "text", settings, tmp_path / "a", embed=FakeEngine().embed)
    monkeypatch.setattr(step, "EMBED_CHUNK", 7)  # vectors written to the spill file 7 at a time
    engine = FakeEngine()
    chunked = semantic_dedup(frame, "id", "text", settings, tmp_path / "b", embed=engine.embed)
    assert len(engine.calls) > 5
    assert np.array_equal(np.asarray(whole.vectors.array), np.asarray(chunked.vectors.array))
    assert isinstance(chunked.vectors.array, np.memmap)
    assert whole.rows.equals(chunked.rows)
    assert not list((tmp_path / "b").glob(".vectors-*"))  # unlinked: nothing left on disk


def test_spill_keeps_vectors_in_memory_when_the_file_cannot_be_written(tmp_path: Path) -> None:
    blocks = [np.full((3, 4), i, np.float32) for i in range(3)]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = step._spill(iter(blocks), blocker / "sub")
    assert not isinstance(out, np.memmap) and np.array_equal(out, np.concatenate(blocks))
    assert step._spill(iter([]), tmp_path).shape[0] == 0


def test_buckets_cluster_like_one_piece_when_clusters_do_not_straddle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four far-apart families of near-identical vectors: bucketed (as above BUCKET_ROWS),
    every family lands in one bucket, and the groups, similarities and vetoes equal the
    one-piece result, mapped back to the rows' own positions."""
    rng = np.random.default_rng(5)
    centres = np.eye(4, 32, dtype=np.float32)
    family = rng.integers(4, size=400)
    x = centres[family] + 0.02 * rng.standard_normal((400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    texts = pl.Series([f"order #{i % 3} for family {f}" for i, f in enumerate(family)])
    positions = np.arange(400)
    one = semantic._cluster_in_buckets(x, texts, positions, 0.9, GuardConfig(), 10)
    monkeypatch.setattr(semantic, "BUCKET_ROWS", 50)
    monkeypatch.setattr(semantic, "BUCKET_TARGET", 100)
    monkeypatch.setattr(semantic, "BUCKET_MAX", 150)
    buckets = semantic._buckets(x, positions)
    assert len(buckets) >= 4 and all(len(set(family[b])) == 1 for b in buckets)
    split = semantic._cluster_in_buckets(x, texts, positions, 0.9, GuardConfig(), 10)
    assert np.array_equal(one[0], split[0]) and (one[0] != positions).sum() > 150
    assert np.allclose(one[1], split[1])
    assert np.array_equal(one[2], split[2]) and one[3] == split[3] and (one[2] >= 0).any()


def _status_kb(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0])


def test_gather_rows_equals_fancy_indexing_and_keeps_the_file_unmapped(tmp_path: Path) -> None:
    from batchopt.services.mapped import gather_rows

    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal((65_536, 256)).astype(np.float32) for _ in range(4)]
    vectors = step._spill(iter(blocks), tmp_path)  # 256 MB, memory-mapped
    plain = np.concatenate(blocks)
    rows = rng.permutation(len(plain))[:20_000]  # scattered, unsorted
    rows = np.concatenate([rows, rows[:50]])  # and repeated
    assert np.array_equal(gather_rows(vectors, rows), plain[rows])
    assert np.array_equal(gather_rows(plain, rows), plain[rows])
    assert gather_rows(vectors, np.array([], np.int64)).shape == (0, 256)

    # one row every 1 MB of the file: one plain read of them maps far more than the rows (a
    # fault maps up to a 2 MB folio on this kernel: the whole 256 MB here); through
    # gather_rows the peak stays near one stretch of SPAN_BYTES (64 MB)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    before = _status_kb("VmRSS")
    strided = np.arange(0, len(plain), 1024)
    assert np.array_equal(gather_rows(vectors, strided), plain[strided])
    assert _status_kb("VmHWM") - before < 80 * 1024
