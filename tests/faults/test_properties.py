"""Property tests (hypothesis) over the pipeline loader, the exact-dedup normaliser, the
compression steps and the template renderer: whatever they are given, they fail only with
batchopt's own one-line errors, and they keep the promises their docstrings make.

The examples are drawn the same way every run (the `ci` profile in tests/conftest.py); set
HYPOTHESIS_PROFILE=explore to search wider.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from faults import tally
from helpers import pipeline_dict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchopt.config.pipeline import load_pipeline
from batchopt.dedup.exact import exact_groups, normalise
from batchopt.errors import ConfigError, InputError
from batchopt.prompts.compress import (
    cut_to_budget,
    drop_repeated_lines,
    normalise_whitespace,
    strip_boilerplate,
)
from batchopt.prompts.template import PromptRenderer, render_prompts
from batchopt.tokens import count_tokens

MODEL = "gpt-4o-mini"
_quick = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def yaml_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file the loader tests overwrite for each example."""
    return tmp_path_factory.mktemp("props") / "pipeline.yaml"


def _load(path: Path, text: str | bytes) -> Any:
    """load_pipeline on `text`; None for a ConfigError, anything else is raised."""
    tally.add("bad inputs tried")
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        return load_pipeline(path, env={})
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message
        return None


# ---- the YAML loader -----------------------------------------------------------------------

_YAML_BITS = st.sampled_from([
    "\n", "  ", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "!!str ", "!!python/name:os ",
    "? ", "|\n  ", "name", "profiles", "prompt", "template", "'", '"', "#", "${X}", "2026-02-30",
    "1e9", "-1", ".inf", "null", "yes", "<<: *a", "\t", "\x00", "\ufeff", "é",
])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=20))
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.booleans()), inner,
                        max_size=4),
    ),
    max_leaves=20,
)


@_quick
@given(text=st.one_of(st.text(max_size=200), st.lists(_YAML_BITS, max_size=40).map("".join)))
def test_any_text_is_a_pipeline_or_a_config_error(yaml_file, text):
    _load(yaml_file, text)


@_quick
@given(data=st.binary(max_size=200))
def test_any_bytes_are_a_pipeline_or_a_config_error(yaml_file, data):
    _load(yaml_file, data)


@_quick
@given(tree=_TREES)
def test_any_mapping_is_a_pipeline_or_a_config_error(yaml_file, tree):
    _load(yaml_file, yaml.safe_dump(tree))


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a pipeline dict."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, (*prefix, i))
    return out


_VALID = pipeline_dict(prompt={"system": "s", "template": "{{ body }}", "examples": [
    {"input": "a", "output": "b"}]})
_PATHS = _paths(_VALID)


@_quick
@given(where=st.sampled_from(_PATHS), junk=_TREES)
def test_a_valid_pipeline_with_one_value_replaced(yaml_file, where, junk):
    data = yaml.safe_load(yaml.safe_dump(_VALID))
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = junk
    _load(yaml_file, yaml.safe_dump(data))


@_quick
@given(where=st.sampled_from([p for p in _PATHS if isinstance(p[-1], str)]),
       key=st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12))
def test_an_unknown_key_anywhere_is_named(yaml_file, where, key):
    key = f"zz_{key}"  # no key of a pipeline starts so: a real key left out is not "unknown"
    data = yaml.safe_load(yaml.safe_dump(_VALID))
    node = data
    for part in where[:-1]:
        node = node[part]
    assume(key not in node)
    node[key] = 1
    assert _load(yaml_file, yaml.safe_dump(data)) is None
    if where[:-1] == ("profiles",):
        return  # a free-form name: a new profile (whose value is wrong), not a misspelt key
    location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*where[:-1], key))
    with pytest.raises(ConfigError, match=r"unknown key") as info:
        load_pipeline(yaml_file, env={})
    assert f"{location.lstrip('.')}: unknown key" in str(info.value)


_NAMES = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)


@_quick
@given(name=_NAMES, system=_TEXT, body=_TEXT, max_tokens=st.integers(1, 10**6),
       temperature=st.floats(0, 2), concurrency=st.integers(1, 1024),
       policy=st.sampled_from(["fail", "skip", "truncate"]), confine=st.booleans())
def test_valid_pipelines_round_trip(yaml_file, name, system, body, max_tokens, temperature,
                                    concurrency, policy, confine):
    data = pipeline_dict(name=name, paths={"confine": confine})
    data["prompt"].update({"system": system, "template": "{{ body }} " + body.replace("{", "")})
    data["profiles"]["openai"].update({"max_tokens": max_tokens, "temperature": temperature,
                                       "concurrency": concurrency,
                                       "on_context_overflow": policy})
    assume(data["prompt"]["template"].strip())
    first = _load(yaml_file, yaml.safe_dump(data, allow_unicode=True))
    assert first is not None
    again = _load(yaml_file, yaml.safe_dump(first.config.model_dump(mode="json"),
                                            allow_unicode=True))
    assert again is not None and again.config == first.config


# ---- the exact-dedup normaliser ------------------------------------------------------------

_ANY_TEXT = st.text(max_size=80)


@_quick
@given(text=_ANY_TEXT, ignore_case=st.booleans())
def test_normalise_is_idempotent(text, ignore_case):
    once = normalise(text, ignore_case)
    assert normalise(once, ignore_case) == once


@_quick
@given(words=st.lists(st.text(alphabet=string.ascii_letters + string.digits + "#$.,",
                              min_size=1, max_size=8), min_size=1, max_size=8),
       gaps=st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \u00a0", "\u3000", "\r\n"]),
                     min_size=9, max_size=9))
def test_equal_text_up_to_whitespace_is_one_group(words, gaps):
    plain = " ".join(words)
    spaced = gaps[0] + "".join(w + g for w, g in zip(words, gaps[1:], strict=False))
    frame = pl.DataFrame({"id": ["a", "b", "c"], "t": [plain, spaced, plain + " x"]})
    groups = exact_groups(frame, "id", "t")
    assert normalise(plain) == normalise(spaced)
    assert groups["group_id"][0] == groups["group_id"][1] != groups["group_id"][2]
    assert groups["dedup"].to_list() == ["none", "exact", "none"]


@_quick
@given(a=_ANY_TEXT, b=_ANY_TEXT)
def test_groups_follow_the_normalised_text(a, b):
    frame = pl.DataFrame({"id": ["1", "2"], "t": [a, b]})
    groups = exact_groups(frame, "id", "t")
    same = groups["group_id"][0] == groups["group_id"][1]
    assert same == (normalise(a) == normalise(b))


# ---- compression steps ---------------------------------------------------------------------

_PROSE = st.lists(
    st.one_of(st.text(alphabet=string.ascii_letters + " ,.!?'-", max_size=30),
              st.sampled_from(["", "Hi,", "Thanks,", "-- ", "> quoted line", "Best regards,",
                               "Sent from my iPhone", "**bold** and _it_", "# Heading",
                               "<p>para</p>", "&amp;", "  indented", "\t", "Jane Doe"])),
    max_size=12,
).map("\n".join)


_STEPS = {
    "whitespace": normalise_whitespace,
    "whitespace (no html)": lambda t: normalise_whitespace(t, html_tags=False),
    "repeated_lines": drop_repeated_lines,
    "boilerplate": strip_boilerplate,
}


@pytest.mark.parametrize("name", [n for n in _STEPS if n != "boilerplate"])
@_quick
@given(text=_PROSE)
def test_steps_are_idempotent(name, text):
    step = _STEPS[name]
    once = step(text)
    assert step(once) == once


def test_boilerplate_is_idempotent_on_stacked_greetings():
    once = strip_boilerplate("Hi,\nHello team,\nMy order #12 is late.")
    assert once == "My order #12 is late."
    assert strip_boilerplate(once) == once


@pytest.mark.parametrize("name", ["repeated_lines", "boilerplate"])
@_quick
@given(text=_PROSE)
def test_steps_never_add_tokens(name, text):
    assert count_tokens(_STEPS[name](text), MODEL) <= count_tokens(text, MODEL)


@pytest.mark.parametrize("name", ["whitespace", "whitespace (no html)"])
@_quick
@given(text=_PROSE)
def test_whitespace_adds_at_most_a_token_a_line(name, text):
    """Stripping a line's leading space can split its first word into more tokens (' LJ' is one
    token, 'LJ' two), so this step's bound is looser: one token a line."""
    lines = text.count("\n") + 1
    assert count_tokens(_STEPS[name](text), MODEL) <= count_tokens(text, MODEL) + lines


def test_compression_never_reports_a_negative_saving():
    """normalise_whitespace alone can add a token (' LJ' is one token, 'LJ' two); the compress
    stage keeps the cheaper text, so no row is reported as having saved -1 tokens."""
    import polars as pl

    from batchopt.config.compress import parse_compress
    from batchopt.prompts.compress import SAVED_COLUMN, compress_rows

    assert count_tokens(normalise_whitespace(" LJ"), MODEL) > count_tokens(" LJ", MODEL)
    rows = pl.DataFrame({"body": [" LJ", "  a   b  "]})
    config = parse_compress({"steps": [{"type": "whitespace"}]})
    out, report = compress_rows(rows, config, ["body"], MODEL)
    assert out["body"].to_list() == [" LJ", "a b"]
    assert report[SAVED_COLUMN].to_list()[0] == 0 and report[SAVED_COLUMN].min() >= 0


@_quick
@given(text=st.text(alphabet=string.printable, max_size=600), budget=st.integers(12, 120))
def test_cut_to_budget_fits_is_idempotent_and_never_adds_tokens(text, budget):
    cut = cut_to_budget(text, budget, MODEL)
    assert count_tokens(cut, MODEL) <= max(budget, 0) or cut == text
    assert count_tokens(cut, MODEL) <= count_tokens(text, MODEL)
    assert cut_to_budget(cut, budget, MODEL) == cut


_FILLER = st.lists(st.text(alphabet=string.ascii_lowercase + " ", min_size=1, max_size=40),
                   max_size=5)


@_quick
@given(before=_FILLER, after=_FILLER, order=st.integers(1000, 99_999_999),
       cents=st.integers(100, 10**7), greeting=st.booleans(), quoted=st.booleans(),
       signature=st.booleans(), disclaimer=st.booleans())
def test_a_planted_fact_survives_every_step(before, after, order, cents, greeting, quoted,
                                            signature, disclaimer):
    amount = f"{cents // 100}.{cents % 100:02d}"
    fact = f"Please refund order #{order} of ${amount} to my card."
    lines = (["Hi team,", ""] if greeting else []) + before + [fact] + after
    if signature:
        lines += ["", "Thanks,", "Jane Doe", "Support lead"]
    if disclaimer:
        lines += ["", "This email is confidential and intended only for the addressee."]
    if quoted:
        lines += ["", "On Mon, 3 Mar 2026, Northpeak wrote:", "> Your order #1 shipped.",
                  "> Amount $0.01"]
    text = "\n".join(lines)
    out = text
    for step in (normalise_whitespace, strip_boilerplate, drop_repeated_lines):
        out = step(out)
        assert f"#{order}" in out and f"${amount}" in out, (step, text, out)
    if quoted:
        assert "shipped" not in out
    if disclaimer:
        assert "confidential" not in out


# ---- the template renderer -----------------------------------------------------------------

_COLUMN_TEXT = st.one_of(
    st.text(max_size=100),
    st.lists(st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", " 7*7 ", "body", "raw",
                              "endraw", "self", "__class__", "cycler", "|", "(", ")", "'",
                              "\x00", "\n"]), max_size=20).map("".join),
)


@_quick
@given(body=_COLUMN_TEXT, subject=_COLUMN_TEXT)
def test_column_text_renders_literally(body, subject):
    frame = pl.DataFrame({"id": ["r1"], "body": [body], "subject": [subject]})
    out = render_prompts(frame, PromptRenderer("{{ subject }}|{{ body | trim }}"), "id")
    assert out["prompt_user"][0] == f"{subject}|{body.strip()}"


def test_a_column_holding_a_template_is_not_evaluated():
    frame = pl.DataFrame({"id": ["r1"], "body": ["{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"]})
    out = render_prompts(frame, PromptRenderer("Q: {{ body }}"), "id")
    assert out["prompt_user"][0] == "Q: {{ 7*7 }} {% for x in range(3) %}x{% endfor %}"


_TEMPLATE_BITS = st.sampled_from([
    "{{", "}}", "{%", "%}", " ", "body", "subject", "|", "upper", "trim", "length", "int",
    "(", ")", "[", "]", "0", "9", "99", "**", "*", "/", "+", "-", "~", "'x'", "for", "in",
    "endfor", "if", "endif", "set", "=", "range", "cycler", "__class__", "mro", ".", ",",
    "lipsum", "namespace", "self", "loop", "none", "true", "format", "attr",
])


@_quick
@given(template=st.one_of(st.text(max_size=60), st.lists(_TEMPLATE_BITS, max_size=25)
                          .map("".join)), body=_COLUMN_TEXT)
def test_any_template_renders_or_fails_with_our_errors(template, body):
    tally.add("bad inputs tried")
    try:
        renderer = PromptRenderer(template)
    except ConfigError as exc:
        assert "\n" not in str(exc) or str(exc).startswith("prompt.template")
        return
    frame = pl.DataFrame({"id": ["r1"], "body": [body], "subject": ["s"]})
    try:
        render_prompts(frame, renderer, "id")
    except InputError as exc:
        assert str(exc).startswith("prompt.template: row 'r1': ")
