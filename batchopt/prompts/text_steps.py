"""The built-in compression steps, each a pure `str -> str` function (`compress.py` runs them):
whitespace and markup, repeated lines, a field cut to a token budget, few-shot examples trimmed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from batchopt.config.compress import DEFAULT_CUT_MARKER
from batchopt.tokens import count_tokens

_HTML_TAGS = (
    "a|abbr|b|big|blockquote|body|br|center|code|dd|div|dl|dt|em|font|h[1-6]|head|hr|html|i|img|"
    "li|meta|ol|p|pre|s|section|small|span|strike|strong|sub|sup|table|tbody|td|tfoot|th|thead|"
    "title|tr|u|ul|article|header|footer|main|nav|label|o:p"
)
_TAG = re.compile(rf"<(/?)({_HTML_TAGS})\b[^<>]*?/?>", re.IGNORECASE)
_DROP_BLOCKS = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.S)
_BLOCK_TAGS = frozenset(
    [
        "blockquote",
        "body",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "html",
        "li",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
        "article",
        "header",
        "footer",
        "main",
        "nav",
    ]
)
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+\d*);", re.IGNORECASE)
_EMPHASIS = [
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![\w*])"),
    re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]+?)(?<=\S)_(?![\w_])"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
]
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.MULTILINE)
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000\f\v]+")
_BLANKS = re.compile(r"\n{3,}")


def _html_to_text(text: str) -> str:
    text = _DROP_BLOCKS.sub("", text)

    def tag(match: re.Match[str]) -> str:
        name = match.group(2).lower()
        if name == "li" and not match.group(1):
            return "\n- "
        return "\n" if name in _BLOCK_TAGS else ""

    return _TAG.sub(tag, text)


def _strip_markdown(text: str) -> str:
    text = _HEADING.sub("", text)
    for pattern in _EMPHASIS:
        text = pattern.sub(lambda m: m.group(m.lastindex or 0), text)
    return text


def normalise_whitespace(text: str, *, html_tags: bool = True, markdown: bool = True) -> str:
    """Spaces and blank lines collapsed, lines stripped; HTML tags and emphasis markers dropped.

    Only known HTML tag names count as markup, so `<support@example.com>` stays.
    """
    if not text:
        return text
    out = text.replace("\r\n", "\n").replace("\r", "\n")
    out = _INVISIBLE.sub("", out)
    if html_tags and _TAG.search(out):
        out = _html_to_text(out)
    if html_tags and _ENTITY.search(out):
        out = html.unescape(out)
    if markdown:
        out = _strip_markdown(out)
    out = _SPACES.sub(" ", out)
    out = "\n".join(line.strip() for line in out.split("\n"))
    return _BLANKS.sub("\n\n", out).strip()


def drop_repeated_lines(text: str, *, min_chars: int = 1) -> str:
    """Each non-blank line kept the first time it appears (compared stripped); blanks kept."""
    if not text:
        return text
    seen: set[str] = set()
    out: list[str] = []
    dropped = False
    for line in text.split("\n"):
        key = line.strip()
        if key and len(key) >= min_chars:
            if key in seen:
                dropped = True
                continue
            seen.add(key)
        out.append(line)
    if not dropped:
        return text
    return _BLANKS.sub("\n\n", "\n".join(out)).strip("\n")


def _words(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def _longest_prefix(words: list[tuple[int, int]], text: str, budget: int, model: str) -> int:
    """How many leading words fit in `budget` tokens (binary search)."""
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[: words[mid - 1][1]], model) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _longest_suffix(words: list[tuple[int, int]], text: str, budget: int, model: str) -> int:
    """How many trailing words fit in `budget` tokens (binary search)."""
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[words[len(words) - mid][0] :], model) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cut_to_budget(
    text: str,
    budget: int,
    model: str,
    *,
    keep_tail_share: float = 0.3,
    marker: str = DEFAULT_CUT_MARKER,
    tokens: int | None = None,
) -> str:
    """`text` within `budget` tokens: its head and tail kept at word boundaries, the middle
    replaced by `marker` ({n}: the tokens cut). Text already within budget is returned as is.

    `tokens` is `text`'s count if the caller knows it.
    """
    total = count_tokens(text, model) if tokens is None else tokens
    if total <= budget:
        return text
    words = _words(text)
    room = budget - count_tokens(f"\n{marker.format(n=total)}\n", model)
    if room <= 0 or not words:
        return (
            marker.format(n=total) if count_tokens(marker.format(n=total), model) <= budget else ""
        )
    tail_budget = int(room * keep_tail_share)
    head_budget = room - tail_budget
    n_tail = _longest_suffix(words, text, tail_budget, model) if tail_budget else 0
    n_head = _longest_prefix(words[: len(words) - n_tail], text, head_budget, model)
    head = text[: words[n_head - 1][1]] if n_head else ""
    tail = text[words[len(words) - n_tail][0] :] if n_tail else ""
    cut = max(total - count_tokens(head, model) - count_tokens(tail, model), 0)
    return "\n".join(part for part in (head, marker.format(n=cut), tail) if part)


def trim_examples(
    examples: Sequence[str],
    max_tokens: int,
    model: str,
    *,
    separator: str = "\n\n",
    min_examples: int = 0,
) -> list[str]:
    """The leading examples whose text (joined by `separator`) fits `max_tokens`; whole examples
    are dropped from the end, never fewer than `min_examples` kept."""
    kept = list(examples)
    while len(kept) > min_examples and count_tokens(separator.join(kept), model) > max_tokens:
        kept.pop()
    return kept


def trim_few_shot_text(
    text: str,
    max_tokens: int,
    model: str,
    *,
    separator: str = "\n\n",
    min_examples: int = 0,
) -> str:
    """A text of examples separated by `separator`, trimmed like `trim_examples`."""
    if not text or count_tokens(text, model) <= max_tokens:
        return text
    parts = text.split(separator)
    kept = trim_examples(parts, max_tokens, model, separator=separator, min_examples=min_examples)
    return separator.join(kept)
