from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from batchopt.errors import InputError
from batchopt.io.reader import read_rows


def _write(path: Path, frame: pl.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def test_file_folder_glob_and_hive(tmp_path: Path) -> None:
    _write(
        tmp_path / "d" / "day=2026-01-01" / "a.parquet",
        pl.DataFrame({"id": ["a", "b"], "x": [1, 2]}),
    )
    _write(tmp_path / "d" / "day=2026-01-02" / "b.parquet", pl.DataFrame({"id": ["c"], "x": [3]}))
    one = read_rows(tmp_path / "d" / "day=2026-01-01" / "a.parquet", "id", ["x"])
    assert one["id"].to_list() == ["a", "b"]
    folder = read_rows(tmp_path / "d", "id", ["x"])
    assert sorted(folder["id"].to_list()) == ["a", "b", "c"]
    assert "day" in folder.columns
    globbed = read_rows(tmp_path / "d" / "*" / "*.parquet", "id", ["x"], keep_columns=["x"])
    assert sorted(globbed["x"].to_list()) == [1, 2, 3]


def test_a_folder_with_other_files_beside_its_parquet_is_read(tmp_path: Path) -> None:
    """A README or a _SUCCESS marker beside the data does not stop the read (polars refuses a
    folder of mixed files); hive folders still become columns."""
    _write(tmp_path / "d" / "day=1" / "a.parquet", pl.DataFrame({"id": ["a", "b"], "x": [1, 2]}))
    _write(tmp_path / "d" / "day=2" / "b.parquet", pl.DataFrame({"id": ["c"], "x": [3]}))
    (tmp_path / "d" / "README.md").write_text("nightly export")
    (tmp_path / "d" / "day=2" / "_SUCCESS").write_text("")
    rows = read_rows(tmp_path / "d", "id", ["x"]).sort("id")
    assert rows["id"].to_list() == ["a", "b", "c"] and rows["day"].to_list() == [1, 1, 2]


def test_missing_column_names_it_and_the_available_ones(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.parquet", pl.DataFrame({"id": ["a"], "body": ["x"]}))
    with pytest.raises(InputError, match=r"missing column\(s\) 'subject' \(columns: id, body\)"):
        read_rows(path, "id", ["subject", "body"])


def test_null_ids_name_file_and_row(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.parquet", pl.DataFrame({"id": ["a", None, None], "b": ["1", "2", "3"]})
    )
    with pytest.raises(InputError) as info:
        read_rows(path, "id", ["b"])
    assert str(info.value) == f"{path}: row 1: id column 'id' is null (2 null id(s) in all)"


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.parquet", pl.DataFrame({"id": ["a", "b", "a"], "b": ["1", "2", "3"]})
    )
    with pytest.raises(InputError, match=r"row 0: id 'a' in column 'id' is not unique"):
        read_rows(path, "id", ["b"])


def test_empty_input_and_missing_paths(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.parquet",
        pl.DataFrame({"id": [], "b": []}, schema={"id": pl.String, "b": pl.String}),
    )
    with pytest.raises(InputError, match="input has no rows"):
        read_rows(path, "id", ["b"])
    with pytest.raises(InputError, match="input file not found"):
        read_rows(tmp_path / "none.parquet", "id", [])
    with pytest.raises(InputError, match="no files match"):
        read_rows(tmp_path / "none" / "*.parquet", "id", [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder holds no .parquet files"):
        read_rows(tmp_path / "empty", "id", [])


def test_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    good = _write(tmp_path / "d" / "a.parquet", pl.DataFrame({"id": ["a"]}))
    bad = tmp_path / "d" / "b.parquet"
    bad.write_text("id,body\n1,hello\n")
    with pytest.raises(InputError, match=rf"{bad}: not a readable Parquet file"):
        read_rows(tmp_path / "d", "id", [])
    assert read_rows(good, "id", [])["id"].to_list() == ["a"]
