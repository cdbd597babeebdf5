"""Removing e-mail boilerplate from a field without losing what the writer added.

Quoted history goes line by line: a `>` line and the `On ... wrote:` line above it are removed,
and text written between or after quoted blocks (an interleaved reply) stays. An Outlook-style
header (`-----Original Message-----`, or `From:` followed by `Sent:`/`Date:`) has no per-line
marks, so it and everything below it are removed.

Signatures: a `-- ` line and the lines below it up to the next blank line; a sign-off line
("Thanks,", "Best regards,") followed by short name lines (a name, a title, a phone number) up to
a blank line. A line below a sign-off that carries a fact (an amount, a code, an order number)
or reads as a sentence is kept, and so is everything after it. A closing courtesy line ("Thank
you so much for your help.", "Have a nice day!") counts as part of the sign-off block, and such
lines at the very end of the field are removed too: whether a writer puts the thanks above or
below the name must not change what is sent, or two tickets that ask the same thing would be
compressed to different prompts.

A greeting alone on the first line ("Hi,", "Dear Northpeak team,") is removed.

Disclaimers are removed sentence by sentence; a sentence with a digit is never removed, so a fact
written in disclaimer words survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["strip_boilerplate"]

_QUOTED = re.compile(r"^\s*>")
_ATTRIBUTION = re.compile(r"^\s*(>\s*)*On\b.{4,200}\bwrote:\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(Original Message|Original-Nachricht|Message d'origine)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?From:\*?\s+\S")
_HEADER_NEXT = re.compile(r"^\s*\*?(Sent|Date|To|Cc|Subject):\*?\s", re.IGNORECASE)
_SIG_DASHES = re.compile(r"^--\s*$")
_SIGN_OFF = re.compile(
    r"^\s*(thanks( (so|very) much| again| in advance| a lot)?|thank you( (so|very) much| again"
    r"| in advance)?|many thanks|thx|ty|cheers|best|best wishes|all the best|regards|"
    r"(best|kind|warm|warmest) regards|sincerely|yours (sincerely|truly)|br|cordially|"
    r"take care)\s*[,.!]*\s*$",
    re.IGNORECASE,
)
# A line that is a fact rather than part of a name block (phone numbers are allowed).
_FACT = re.compile(
    r"[$€£¥]\s?\d|\d\s?(usd|eur|gbp)\b|#\s?\d|\b[A-Z]{1,5}-?\d{3,}\b|\border\b|\binvoice\b"
    r"|\b(error|code|ref|ticket)\b|\d{4}-\d{2}-\d{2}|\d+[.,]\d{2}\b",
    re.IGNORECASE,
)
# A whole line of thanks or good wishes with no request in it.
_COURTESY = re.compile(
    r"^\s*((many )?thanks|thank you)( (so|very) much)?( again)?( in advance)?"
    r"( for (all )?(your|the) (help|time|assistance|support|patience|understanding|"
    r"quick (reply|response)))?"
    r"( in advance)?[,.!]*\s*$"
    r"|^\s*(have a (nice|good|great|lovely) (day|weekend|evening|one)|looking forward to "
    r"(hearing from you|your (reply|response|answer))( soon)?|hope to hear from you soon|"
    r"any help (is|would be) (much |greatly )?appreciated)[,.!]*\s*$",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|greetings|dear|good (morning|afternoon|evening)|to whom it may "
    r"concern)\b[^.?!\d]{0,40}[,!:]?\s*$",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_DISCLAIMER = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(this|the)\s+(e-?mail|message|communication|transmission)\b.*\b(confidential|"
        r"privileged|intended (only|solely)|proprietary)",
        r"^\s*(confidentiality notice|disclaimer|legal notice)\s*:",
        r"\bif you (have )?received (this|it)\b.*\bin error\b",
        r"\b(any )?(unauthori[sz]ed )?(use|review|disclosure|distribution|copying|"
        r"dissemination)\b.*\b(strictly )?prohibited\b",
        r"\bintended (only|solely) for the (use of the )?(addressee|recipient|individual)",
        r"^\s*sent from my \w+",
        r"^\s*sent (from|via|with) (outlook|gmail|yahoo mail|mail for windows|blackberry)",
        r"^\s*get outlook for \w+",
        r"please consider the environment before printing",
        r"\bviruses?\b.*\b(no liability|not liable|accepts? no)",
    )
]


def _drop_quoted(lines: list[str]) -> list[str]:
    """Without `>` lines, their attribution lines and an Outlook header with what follows."""
    kept: list[str] = []
    n = len(lines)
    for i, line in enumerate(lines):
        if _ORIGINAL.match(line):
            break
        if _HEADER_FROM.match(line) and any(
            _HEADER_NEXT.match(nxt) for nxt in lines[i + 1 : i + 4]
        ):
            break
        if _QUOTED.match(line):
            continue
        if _ATTRIBUTION.match(line):
            rest = next((x for x in lines[i + 1 : n] if x.strip()), None)
            if rest is None or _QUOTED.match(rest):
                continue
        kept.append(line)
    return kept


def _name_line(line: str) -> bool:
    """A line that can belong to a signature's name block."""
    text = line.strip()
    if not text or len(text) > 70 or _FACT.search(text):
        return False
    words = text.split()
    return not (len(words) >= 5 and text[-1] in ".?!:") and len(words) <= 8


def _drop_signatures(lines: list[str]) -> list[str]:
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if _SIG_DASHES.match(line):
            j = i + 1
            while j < n and lines[j].strip() and not _FACT.search(lines[j]):
                j += 1
            if j < n and lines[j].strip():  # a fact inside the block: keep from there
                i = j
                continue
            i = j
            continue
        if _SIGN_OFF.match(line):
            j = i + 1
            while j < n and (_name_line(lines[j]) or _COURTESY.match(lines[j])):
                j += 1
            if j >= n or not lines[j].strip():
                i = j
                continue
        out.append(line)
        i += 1
    content = [k for k, x in enumerate(out) if x.strip() and not _COURTESY.match(x)]
    return out[: content[-1] + 1] if content else out


def _drop_disclaimers(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        sentences = _SENTENCE.split(line.strip())
        kept = [
            s
            for s in sentences
            if any(ch.isdigit() for ch in s) or not any(p.search(s) for p in _DISCLAIMER)
        ]
        if len(kept) == len(sentences):
            out.append(line)
        elif kept:
            out.append(" ".join(kept))
    return out


def _drop_greeting(lines: list[str]) -> list[str]:
    """Without the greeting lines ("Hi,", "Dear team,") at the top, however many are stacked."""
    out = list(lines)
    while True:
        first = next((i for i, line in enumerate(out) if line.strip()), None)
        if first is None or not _GREETING.match(out[first]):
            return out
        del out[first]


def _tidy(lines: list[str]) -> str:
    text = "\n".join(lines)
    return re.sub(r"\n[ \t]*(\n[ \t]*)+\n", "\n\n", text).strip()


def strip_boilerplate(
    text: str,
    *,
    quoted: bool = True,
    signatures: bool = True,
    disclaimers: bool = True,
    greetings: bool = True,
    extra_patterns: Iterable[str | re.Pattern[str]] = (),
) -> str:
    """`text` without quoted history, signatures, disclaimers and `extra_patterns` matches."""
    if not text:
        return text
    original = text
    for pattern in extra_patterns:
        compiled = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        text = compiled.sub("", text)
    lines = text.split("\n")
    before = list(lines)
    if quoted:
        lines = _drop_quoted(lines)
    if disclaimers:
        lines = _drop_disclaimers(lines)
    if signatures:
        lines = _drop_signatures(lines)
    if greetings:
        lines = _drop_greeting(lines)
    return original if lines == before and text == original else _tidy(lines)
