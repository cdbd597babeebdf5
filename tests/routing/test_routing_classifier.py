from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from batchopt.routing import (
    THRESHOLDS,
    RouterModel,
    RoutingError,
    load_training_table,
    route_by_classifier,
    train_router,
    train_router_from_texts,
)

NAME = "st:all-MiniLM-L6-v2@3f2a9c1d"


def _synthetic(n: int = 600, dim: int = 16, hard_share: float = 0.3, seed: int = 1):
    """Unit vectors: hard rows lean one way along a hidden direction, easy rows the other."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < hard_share
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    vectors = rng.normal(size=(n, dim)) + np.where(hard, 1.5, -1.5)[:, None] * direction
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), hard


@pytest.fixture(scope="module")
def trained() -> tuple[RouterModel, np.ndarray, np.ndarray]:
    vectors, hard = _synthetic()
    return train_router(vectors, hard, embedder_name=NAME, seed=0), vectors, hard


def test_router_separates_and_reports_a_curve(trained) -> None:
    router, vectors, hard = trained
    metrics = router.metrics
    assert metrics["auc"] > 0.9
    assert metrics["rows"] == 600 and metrics["hard_rows"] == int(hard.sum())
    assert metrics["train_rows"] + metrics["test_rows"] == 600 and metrics["test_rows"] == 150
    assert [point["threshold"] for point in metrics["curve"]] == list(THRESHOLDS)
    shares = [point["share_strong"] for point in metrics["curve"]]
    recalls = [point["hard_recall"] for point in metrics["curve"]]
    assert shares == sorted(shares, reverse=True) and shares[0] > shares[-1]
    assert recalls == sorted(recalls, reverse=True)
    assert recalls[4] > 0.85  # at 0.5 most hard rows go to the strong tier
    assert shares[4] < 0.5  # ... while most rows stay cheap
    p = router.predict_hard(vectors)
    assert p.shape == (600,) and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    assert p[hard].mean() > 0.7 > 0.3 > p[~hard].mean()


def test_training_is_deterministic_for_a_seed() -> None:
    vectors, hard = _synthetic(n=200)
    a = train_router(vectors, hard, embedder_name=NAME, seed=3)
    b = train_router(vectors, hard, embedder_name=NAME, seed=3)
    assert np.array_equal(a.coef, b.coef) and a.metrics == b.metrics


def test_predict_matches_scikit_learn(trained) -> None:
    from sklearn.linear_model import LogisticRegression

    router, vectors, hard = trained
    model = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=0)
    model.fit(vectors.astype(np.float64), hard)
    np.testing.assert_allclose(router.predict_hard(vectors), model.predict_proba(vectors)[:, 1])


def test_save_load_round_trip_without_pickle(trained, tmp_path: Path) -> None:
    router, vectors, _ = trained
    path = router.save(tmp_path / "routers" / "tickets.npz")
    assert path == tmp_path / "routers" / "tickets.npz"
    assert [p.name for p in path.parent.iterdir()] == ["tickets.npz"]
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"{k}.npy" for k in ("format", "coef", "intercept", "embedder_name", "dim", "metrics")
        )
    with np.load(path, allow_pickle=False) as data:
        assert str(data["embedder_name"]) == NAME
    loaded = RouterModel.load(path, embedder_name=NAME, dim=16)
    assert loaded.embedder_name == NAME and loaded.dim == 16
    assert loaded.metrics == router.metrics
    np.testing.assert_array_equal(loaded.predict_hard(vectors), router.predict_hard(vectors))
    assert RouterModel.load(path, embedder_name=None, dim=None).dim == 16


def test_save_keeps_any_suffix(trained, tmp_path: Path) -> None:
    path = trained[0].save(tmp_path / "router.bin")
    assert path.is_file() and not (tmp_path / "router.bin.npz").exists()


def test_load_mismatches_name_the_file(trained, tmp_path: Path) -> None:
    path = trained[0].save(tmp_path / "r.npz")
    with pytest.raises(RoutingError) as info:
        RouterModel.load(path, embedder_name="m2v:other@00000000", dim=16)
    message = str(info.value)
    assert message.startswith(f"{path}: the router was trained on embeddings from '{NAME}'")
    assert "'m2v:other@00000000'" in message and isinstance(info.value, ValueError)
    with pytest.raises(
        RoutingError, match="expects 16-dimensional vectors, the embedder gives 384"
    ):
        RouterModel.load(path, embedder_name=NAME, dim=384)


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="router file not found"):
        RouterModel.load(tmp_path / "nope.npz", embedder_name=None, dim=None)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(RoutingError, match=f"{garbage}: not a batchopt router file"):
        RouterModel.load(garbage, embedder_name=None, dim=None)
    truncated = tmp_path / "truncated.npz"
    whole = RouterModel(coef=np.zeros(4), intercept=0.0, embedder_name=NAME).save(truncated)
    truncated.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(RoutingError, match=f"{truncated}: not a batchopt router file"):
        RouterModel.load(truncated, embedder_name=None, dim=None)
    other = tmp_path / "other.npz"
    np.savez(other, coef=np.zeros(3))
    with pytest.raises(RoutingError, match="missing format, intercept, embedder_name, dim"):
        RouterModel.load(other, embedder_name=None, dim=None)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled, format=np.array(1), coef=np.zeros(2), intercept=np.array(0.0),
        embedder_name=np.array({"a": 1}, dtype=object), dim=np.array(2), metrics=np.array("{}"),
    )  # fmt: skip
    with pytest.raises(RoutingError, match="not a batchopt router file"):
        RouterModel.load(pickled, embedder_name=None, dim=None)


def test_predict_checks_shape(trained) -> None:
    with pytest.raises(RoutingError, match=r"vectors of shape \(n, 16\), got \(3, 8\)"):
        trained[0].predict_hard(np.zeros((3, 8)))


def test_training_input_errors() -> None:
    vectors, hard = _synthetic(n=100)
    with pytest.raises(
        RoutingError, match="at least 5 easy and 5 hard rows \\(got 97 easy, 3 hard"
    ):
        train_router(vectors, np.arange(100) < 3, embedder_name=NAME)
    with pytest.raises(RoutingError, match="hard has shape \\(99,\\)"):
        train_router(vectors, hard[:99], embedder_name=NAME)
    with pytest.raises(RoutingError, match="booleans"):
        train_router(vectors, np.where(hard, 2, 0), embedder_name=NAME)
    with pytest.raises(RoutingError, match="finite"):
        train_router(np.full((100, 4), np.nan), hard, embedder_name=NAME)
    assert train_router(vectors, hard.astype(int), embedder_name=NAME).dim == 16


def test_train_from_texts_uses_the_embedder_name() -> None:
    class Letters:
        name = "test:letters"
        dim = 2

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.array([[t.count("!"), len(t) / 10] for t in texts], dtype=np.float32)

    texts = [f"easy {i}" for i in range(20)] + [f"hard!!! {i}" for i in range(20)]
    router = train_router_from_texts(texts, np.arange(40) >= 20, Letters())
    assert router.embedder_name == "test:letters" and router.metrics["auc"] == 1.0


# --- route_by_classifier ---------------------------------------------------------------------


def test_route_by_classifier_threshold_and_reasons() -> None:
    rows = pl.DataFrame({"id": ["a", "b", "c", "d", "e"]})
    p = np.array([0.82, 0.5, 0.4999, 0.0, 1.0])
    out = route_by_classifier(rows, p, 0.5, "mini", "big")
    assert out["tier"].to_list() == ["big", "big", "mini", "mini", "big"]
    assert out["route_reason"].to_list() == [
        "classifier p(hard)=0.820 >= 0.5",
        "classifier p(hard)=0.500 >= 0.5",
        "classifier p(hard)=0.499 < 0.5",
        "classifier p(hard)=0.000 < 0.5",
        "classifier p(hard)=1.000 >= 0.5",
    ]
    assert out.schema["tier"] == pl.String and out.schema["route_reason"] == pl.String


def test_share_routed_strong_falls_as_threshold_rises(trained) -> None:
    router, vectors, _ = trained
    rows = pl.DataFrame({"i": range(len(vectors))})
    p = router.predict_hard(vectors)
    shares = [
        (route_by_classifier(rows, p, t, "mini", "big")["tier"] == "big").mean() for t in THRESHOLDS
    ]
    assert shares == sorted(shares, reverse=True) and shares[0] > shares[-1]


def test_route_by_classifier_errors() -> None:
    rows = pl.DataFrame({"id": ["a", "b"]})
    with pytest.raises(RoutingError, match="shape \\(3,\\) for 2 rows"):
        route_by_classifier(rows, np.array([0.1, 0.2, 0.3]), 0.5, "a", "b")
    with pytest.raises(RoutingError, match="lie in \\[0, 1\\]"):
        route_by_classifier(rows, np.array([0.1, np.nan]), 0.5, "a", "b")
    with pytest.raises(RoutingError, match="threshold must lie between 0 and 1"):
        route_by_classifier(rows, np.array([0.1, 0.2]), 1.0, "a", "b")
    with pytest.raises(RoutingError, match="already have a column 'route_reason'"):
        route_by_classifier(
            rows.with_columns(route_reason=pl.lit("x")), np.array([0.1, 0.2]), 0.5, "a", "b"
        )
    empty = route_by_classifier(rows.head(0), np.array([]), 0.5, "a", "b")
    assert empty.height == 0 and empty.columns == ["id", "tier", "route_reason"]


# --- load_training_table ---------------------------------------------------------------------


def test_training_table_csv_labels(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text('text,label\n"Refund, please",easy\nWhy was I charged twice?,HARD\n'
                    "x, hard \ny,easy\n")  # fmt: skip
    texts, hard = load_training_table(path)
    assert texts == ["Refund, please", "Why was I charged twice?", "x", "y"]
    assert hard.dtype == np.bool_ and hard.tolist() == [False, True, True, False]


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("label", ["easy", "hard"], [False, True]),
        ("label", [0, 1], [False, True]),
        ("label", [True, False], [True, False]),
        ("hard", [False, True], [False, True]),
        ("hard", [1, 0], [True, False]),
        ("hard", [1.0, 0.0], [True, False]),
    ],
)
def test_training_table_parquet_label_kinds(
    tmp_path: Path, column: str, values: list[object], expected: list[bool]
) -> None:
    path = tmp_path / "history.parquet"
    pl.DataFrame({"text": ["a", "b"], column: values, "extra": [1, 2]}).write_parquet(path)
    texts, hard = load_training_table(path)
    assert texts == ["a", "b"] and hard.tolist() == expected


def test_training_table_errors_name_file_column_and_row(tmp_path: Path) -> None:
    def parquet(name: str, frame: pl.DataFrame) -> Path:
        frame.write_parquet(tmp_path / name)
        return tmp_path / name

    cases = [
        (parquet("a.parquet", pl.DataFrame({"prompt": ["x"], "label": ["easy"]})),
         "no column 'text' (columns: prompt, label)"),
        (parquet("b.parquet", pl.DataFrame({"text": ["x"], "difficulty": ["easy"]})),
         "no column 'label' or 'hard' (columns: text, difficulty)"),
        (parquet("c.parquet", pl.DataFrame({"text": ["x", "y"], "label": ["easy", "hrad"]})),
         "column 'label', row 2: 'hrad' is not easy/hard, true/false or 1/0"),
        (parquet("d.parquet", pl.DataFrame({"text": ["x", "y"], "hard": ["true", "hard"]})),
         "column 'hard', row 2: 'hard' is not true/false or 1/0"),
        (parquet("e.parquet", pl.DataFrame({"text": ["x", None], "label": ["easy", "hard"]})),
         "column 'text', row 2: empty (null)"),
        (parquet("f.parquet", pl.DataFrame({"text": ["x", "y"], "label": ["easy", None]})),
         "column 'label', row 2: None is not"),
        (parquet("g.parquet", pl.DataFrame({"text": [1, 2], "label": ["easy", "hard"]})),
         "column 'text' must hold text, not Int64"),
        (parquet("h.parquet", pl.DataFrame({"text": ["x"], "label": [2]})),
         "column 'label', row 1: '2' is not"),
        (parquet("i.parquet", pl.DataFrame(schema={"text": pl.String, "label": pl.String})),
         "training table has no rows"),
    ]  # fmt: skip
    for path, message in cases:
        with pytest.raises(RoutingError) as info:
            load_training_table(path)
        assert str(info.value).startswith(f"{path}: "), str(info.value)
        assert message in str(info.value)
    missing = tmp_path / "missing.csv"
    with pytest.raises(RoutingError, match=f"{missing}: training table not found"):
        load_training_table(missing)
    other = tmp_path / "history.json"
    other.write_text("{}")
    with pytest.raises(RoutingError, match="must be .csv or .parquet"):
        load_training_table(other)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(RoutingError, match=f"{broken}: cannot read training table"):
        load_training_table(broken)
