from __future__ import annotations

import polars as pl
import pytest

from batchopt.errors import ConfigError, InputError
from batchopt.prompts.template import PromptRenderer, render_prompts


def test_renders_and_lists_variables() -> None:
    renderer = PromptRenderer(
        "{{ subject }}: {{ body | trim }}{% for t in tags %} #{{ t }}{% endfor %}"
    )
    assert renderer.variables == ["body", "subject", "tags"]
    assert renderer.render({"subject": "S", "body": " b ", "tags": ["x"]}) == "S: b #x"


def test_undefined_variable_is_an_error_not_blank() -> None:
    frame = pl.DataFrame({"id": ["r1"], "subject": ["s"]})
    renderer = PromptRenderer("{{ subject }} {{ subject.nope }}")
    with pytest.raises(InputError, match="row 'r1': cannot render"):
        render_prompts(frame, renderer, "id")


def test_sandbox_blocks_internals_in_template() -> None:
    frame = pl.DataFrame({"id": ["r1"], "body": ["x"]})
    renderer = PromptRenderer("{{ body.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InputError, match="blocked by the sandbox"):
        render_prompts(frame, renderer, "id")


def test_column_text_is_data_never_template() -> None:
    frame = pl.DataFrame({"id": ["r1"], "body": ["{{ 7 * 7 }} {{ ''.__class__ }}"]})
    out = render_prompts(frame, PromptRenderer("{{ body }}"), "id")
    assert out["prompt_user"].to_list() == ["{{ 7 * 7 }} {{ ''.__class__ }}"]


def test_syntax_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"prompt.template: invalid template \(line 1\)"):
        PromptRenderer("{{ body ")


def test_template_may_use_the_id_column() -> None:
    frame = pl.DataFrame({"id": ["r1"], "body": ["b"]})
    out = render_prompts(frame, PromptRenderer("{{ id }}: {{ body }}"), "id")
    assert out["prompt_user"].to_list() == ["r1: b"]
