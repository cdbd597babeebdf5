"""The `classifier` strategy: a router trained on labelled history sends likely-hard rows up.

A router is a logistic regression over prompt embeddings (batchopt.services.embed), trained with
balanced class weights on rows labelled easy (the cheap tier answered well) or hard. Training
holds out a stratified quarter of the rows to measure the router: ROC AUC, and for thresholds
0.1 ... 0.9 the share of rows it would send to the strong tier and the share of hard rows among
them (recall). The curve is stored with the router, so a threshold can be chosen from it; the
router itself is then refitted on every row.

A router file is one `.npz` (coefficients, intercept, embedder name, dimension, metrics as
JSON), read without pickle. Loading checks that the rows will be embedded the way the router
was trained; a router trained on other vectors would route at random.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from batchopt.routing.errors import RoutingError, check_free_columns

if TYPE_CHECKING:
    from batchopt.services.embed import Embedder

__all__ = [
    "FORMAT_VERSION",
    "MIN_ROWS_PER_CLASS",
    "THRESHOLDS",
    "RouterModel",
    "load_training_table",
    "route_by_classifier",
    "train_router",
    "train_router_from_texts",
]

FORMAT_VERSION = 1
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
MIN_ROWS_PER_CLASS = 5
TEST_SHARE = 0.25
_KEYS = ("format", "coef", "intercept", "embedder_name", "dim", "metrics")


@dataclass(frozen=True, eq=False)
class RouterModel:
    """A trained router: p(hard) = sigmoid(vectors @ coef + intercept)."""

    coef: np.ndarray
    intercept: float
    embedder_name: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[0])

    def predict_hard(self, vectors: np.ndarray) -> np.ndarray:
        """p(hard) for each row of `vectors` (n, dim), as float64 in [0, 1]."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise RoutingError(
                f"the router expects vectors of shape (n, {self.dim}), got {vectors.shape}"
            )
        z = vectors.astype(np.float64) @ self.coef + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow

    def save(self, path: str | Path) -> Path:
        """Write the router to `path` (one .npz, replaced atomically); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    format=np.array(FORMAT_VERSION),
                    coef=self.coef.astype(np.float64),
                    intercept=np.array(self.intercept, dtype=np.float64),
                    embedder_name=np.array(self.embedder_name),
                    dim=np.array(self.dim),
                    metrics=np.array(json.dumps(self.metrics, sort_keys=True)),
                )
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | Path, *, embedder_name: str | None, dim: int | None) -> RouterModel:
        """Read a router; `embedder_name` and `dim` are the embedder's that will embed the rows
        (None: do not check, e.g. to show a router's metrics). A mismatch is a RoutingError
        naming the file."""
        source = Path(path)
        if not source.is_file():
            raise RoutingError(f"{source}: router file not found")
        try:
            with np.load(source, allow_pickle=False) as data:
                missing = [key for key in _KEYS if key not in data.files]
                if missing:
                    raise RoutingError(
                        f"{source}: not a batchopt router file (missing {', '.join(missing)})"
                    )
                values = {key: data[key] for key in _KEYS}
        except RoutingError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise RoutingError(f"{source}: not a batchopt router file ({exc})") from None
        if int(values["format"]) > FORMAT_VERSION:
            raise RoutingError(
                f"{source}: router format {int(values['format'])} is newer than this batchopt "
                f"reads ({FORMAT_VERSION}); upgrade batchopt"
            )
        saved_name = str(values["embedder_name"])
        saved_dim = int(values["dim"])
        coef = np.asarray(values["coef"], dtype=np.float64)
        if coef.shape != (saved_dim,):
            raise RoutingError(f"{source}: corrupt router (coef {coef.shape}, dim {saved_dim})")
        if embedder_name is not None and embedder_name != saved_name:
            raise RoutingError(
                f"{source}: the router was trained on embeddings from {saved_name!r}, but the "
                f"rows are embedded with {embedder_name!r}; retrain the router or set "
                "routing.classifier.backend/model to the embedder it was trained with"
            )
        if dim is not None and dim != saved_dim:
            raise RoutingError(
                f"{source}: the router expects {saved_dim}-dimensional vectors, the embedder "
                f"gives {dim}"
            )
        return cls(
            coef=coef,
            intercept=float(values["intercept"]),
            embedder_name=saved_name,
            metrics=json.loads(str(values["metrics"])),
        )


def train_router(
    vectors: np.ndarray, hard: np.ndarray, *, embedder_name: str, seed: int = 0
) -> RouterModel:
    """Fit a router on labelled vectors; `metrics` holds the held-out evaluation.

    `metrics`: auc, rows, hard_rows, train_rows, test_rows, seed, and `curve`, one entry per
    threshold of THRESHOLDS: {threshold, share_strong, hard_recall}. Needs at least
    MIN_ROWS_PER_CLASS easy and hard rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x, y = _check_training_data(vectors, hard)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SHARE, stratify=y, random_state=seed
    )
    if y_test.all() or not y_test.any():
        raise RoutingError("the held-out rows hold one class only; add more easy and hard rows")

    def fit(features: np.ndarray, labels: np.ndarray) -> Any:
        model = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
        return model.fit(features, labels)

    held_out = fit(x_train, y_train)
    p_test = held_out.predict_proba(x_test)[:, 1]
    curve = [
        {
            "threshold": t,
            "share_strong": float(np.mean(p_test >= t)),
            "hard_recall": float(np.mean(p_test[y_test] >= t)),
        }
        for t in THRESHOLDS
    ]
    metrics = {
        "auc": float(roc_auc_score(y_test, p_test)),
        "rows": int(len(y)),
        "hard_rows": int(y.sum()),
        "train_rows": int(len(y_train)),
        "test_rows": int(len(y_test)),
        "seed": seed,
        "curve": curve,
    }
    final = fit(x, y)
    return RouterModel(
        coef=np.asarray(final.coef_[0], dtype=np.float64),
        intercept=float(final.intercept_[0]),
        embedder_name=embedder_name,
        metrics=metrics,
    )


def train_router_from_texts(
    texts: Sequence[str], hard: np.ndarray, embedder: Embedder, *, seed: int = 0
) -> RouterModel:
    """Embed `texts` (the rendered user prompts) with `embedder` and train a router on them."""
    return train_router(embedder.embed(list(texts)), hard, embedder_name=embedder.name, seed=seed)


def _check_training_data(vectors: np.ndarray, hard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(vectors)
    y = np.asarray(hard)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RoutingError(f"vectors must be a non-empty (rows, dim) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise RoutingError("vectors must be finite numbers")
    if y.shape != (x.shape[0],):
        raise RoutingError(f"hard has shape {y.shape}; expected ({x.shape[0]},), one per vector")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise RoutingError("hard must be booleans (or 0/1)")
        y = y.astype(bool)
    n_hard, n_easy = int(y.sum()), int((~y).sum())
    if min(n_hard, n_easy) < MIN_ROWS_PER_CLASS:
        raise RoutingError(
            f"training needs at least {MIN_ROWS_PER_CLASS} easy and {MIN_ROWS_PER_CLASS} hard "
            f"rows (got {n_easy} easy, {n_hard} hard)"
        )
    return x.astype(np.float64), y


def route_by_classifier(
    rows: pl.DataFrame,
    probabilities: np.ndarray,
    threshold: float,
    cheap_tier: str,
    strong_tier: str,
    *,
    tier_column: str = "tier",
    reason_column: str = "route_reason",
) -> pl.DataFrame:
    """`rows` plus `tier` and `route_reason`: `strong_tier` where p(hard) >= threshold, with
    reasons like `classifier p(hard)=0.82 >= 0.5` (p shown rounded down to 3 decimals)."""
    check_free_columns(rows.columns, tier_column, reason_column)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (rows.height,):
        raise RoutingError(f"probabilities has shape {p.shape} for {rows.height} rows")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise RoutingError("probabilities must lie in [0, 1]")
    if not 0 < threshold < 1:
        raise RoutingError(f"threshold must lie between 0 and 1 (got {threshold})")
    milli = np.floor(p * 1000 + 1e-9).astype(np.int64)
    strong = pl.Series(p >= threshold)
    shown = pl.format(
        "{}.{}",
        pl.lit(pl.Series(milli // 1000)),
        pl.lit(pl.Series(milli % 1000)).cast(pl.String).str.zfill(3),
    )
    return rows.with_columns(
        pl.when(pl.lit(strong))
        .then(pl.lit(strong_tier, dtype=pl.String))
        .otherwise(pl.lit(cheap_tier, dtype=pl.String))
        .alias(tier_column),
        pl.format(
            "classifier p(hard)={} {}",
            shown,
            pl.when(pl.lit(strong))
            .then(pl.lit(f">= {threshold}"))
            .otherwise(pl.lit(f"< {threshold}")),
        ).alias(reason_column),
    )


_LABELS = {
    "hard": True, "easy": False, "true": True, "false": False, "1": True, "0": False,
    "1.0": True, "0.0": False,
}  # fmt: skip


def load_training_table(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Texts and hard flags from a CSV or Parquet file with columns `text` and `label` (easy or
    hard, true or false, 1 or 0; true/1 mean hard) or `hard` (true/false, 1/0).

    `text` should be what the router will see at run time: the rendered user prompt. Errors name
    the file, the column and the first bad row (counting data rows from 1).
    """
    source = Path(path)
    if not source.is_file():
        raise RoutingError(f"{source}: training table not found")
    suffix = source.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pl.read_csv(source, infer_schema=False)
        elif suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(source)
        else:
            raise RoutingError(f"{source}: training table must be .csv or .parquet")
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RoutingError(f"{source}: cannot read training table ({first})") from None
    except OSError as exc:
        raise RoutingError(f"{source}: cannot read training table ({exc})") from None
    columns = ", ".join(frame.columns) or "none"
    if "text" not in frame.columns:
        raise RoutingError(f"{source}: no column 'text' (columns: {columns})")
    label_column = next((c for c in ("label", "hard") if c in frame.columns), None)
    if label_column is None:
        raise RoutingError(f"{source}: no column 'label' or 'hard' (columns: {columns})")
    if frame.height == 0:
        raise RoutingError(f"{source}: training table has no rows")
    text_dtype = frame.schema["text"]
    if not isinstance(text_dtype, pl.String | pl.Categorical | pl.Enum):
        raise RoutingError(f"{source}: column 'text' must hold text, not {text_dtype}")
    texts = frame["text"].cast(pl.String)
    bad_text = texts.is_null().arg_true()
    if bad_text.len():
        raise RoutingError(f"{source}: column 'text', row {bad_text[0] + 1}: empty (null)")
    allowed = dict(_LABELS)
    if label_column == "hard":
        allowed = {k: v for k, v in allowed.items() if k not in ("hard", "easy")}
    raw = frame[label_column].cast(pl.String)
    labels = (
        raw.str.strip_chars()
        .str.to_lowercase()
        .replace_strict(
            list(allowed), list(allowed.values()), default=None, return_dtype=pl.Boolean
        )
    )
    bad = labels.is_null().arg_true()
    if bad.len():
        row = int(bad[0])
        choices = "true/false or 1/0" if label_column == "hard" else "easy/hard, true/false or 1/0"
        raise RoutingError(
            f"{source}: column '{label_column}', row {row + 1}: {raw[row]!r} is not {choices}"
        )
    return texts.to_list(), labels.to_numpy().astype(bool)
