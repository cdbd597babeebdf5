"""An answer journaled but not yet in cache.db (the process stopped between the two writes)
is restored when the cache is next opened, so it is not paid for again."""

from __future__ import annotations

import json

from batchopt.execute.cache import JOURNAL, ResponseCache
from batchopt.records import Result, Usage


def _result(key: str) -> Result:
    return Result(key=key, text=f"answer {key}", usage=Usage(input_tokens=10, output_tokens=3),
                  status="ok", attempts=1)


def test_a_journaled_answer_missing_from_the_cache_is_restored(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put_many([_result("a")], run_id="r1")
    cache.close()
    # What a run killed between the journal append and the cache.db write leaves behind:
    journal = tmp_path / JOURNAL
    line = json.loads(journal.read_text().splitlines()[0])
    record = json.loads(line[1])
    record["text"] = "answer b"
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(["b", json.dumps(record)]) + "\n")
        handle.write('["c", "{\\"torn')  # a line the crash cut short
    reopened = ResponseCache(tmp_path)
    restored = reopened.get("b")
    assert restored is not None and restored.text == "answer b" and restored.from_cache
    assert reopened.get("a") is not None and reopened.get("c") is None
    reopened.close()
    # The next open reads only what was appended since (the offset moved past line b).
    offset = int((tmp_path / "journal.offset").read_text())
    assert offset == journal.read_bytes().rindex(b"\n") + 1
