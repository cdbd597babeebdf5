from __future__ import annotations

import polars as pl

from batchopt.dedup.exact import exact_groups, normalise


def test_normalise_folds_width_whitespace_and_optionally_case() -> None:
    assert normalise("Ｒｅｆｕｎｄ\u00a0 order\n\n#1 ") == "Refund order #1"
    assert normalise("Refund") != normalise("refund")
    assert normalise("Refund", ignore_case=True) == normalise("rEFUND", ignore_case=True)


def test_groups_keep_differing_numbers_apart_and_name_representatives() -> None:
    frame = pl.DataFrame({
        "id": [1, 2, 3, 4, 5],
        "text": ["refund #10233", "refund  #10233 ", "refund #10234", "Refund #10233",
                 "ｒｅｆｕｎｄ #10233"],
    })
    out = exact_groups(frame, "id", "text")
    assert out["dedup"].to_list() == ["none", "exact", "none", "none", "exact"]
    assert out["representative_id"].to_list() == ["1", "1", "3", "4", "1"]
    assert out["group_id"].n_unique() == 3
    folded = exact_groups(frame, "id", "text", ignore_case=True)
    assert folded["representative_id"].to_list() == ["1", "1", "3", "1", "1"]


def test_disabled_keeps_every_row_alone() -> None:
    frame = pl.DataFrame({"id": ["a", "b"], "text": ["same", "same"]})
    out = exact_groups(frame, "id", "text", enabled=False)
    assert out["dedup"].to_list() == ["none", "none"]
    assert out["group_id"].n_unique() == 2
