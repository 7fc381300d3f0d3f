"""The value-template evaluator: the common templates work, nothing else gets in."""

from __future__ import annotations

import json
import time

import pytest

from gateway.discovery.template import (
    MAX_TEMPLATE_CHARS,
    TemplateValueError,
    UnsupportedTemplate,
    compile_template,
)


@pytest.mark.parametrize(
    ("source", "value", "doc", "want"),
    [
        (None, "21.5", None, "21.5"),
        ("", "21.5", None, "21.5"),
        ("{{ value }}", "21.5", None, "21.5"),
        ("{{value}}", "21.5", None, "21.5"),
        ("{{ value | float }}", "21.5", None, 21.5),
        ("{{ value | int }}", "21.5", None, 21),
        ("{{ value_json.temperature }}", "", {"temperature": 21.34}, 21.34),
        ("{{ value_json['a']['b'] }}", "", {"a": {"b": 3}}, 3),
        ('{{ value_json["a"].b }}', "", {"a": {"b": 3}}, 3),
        ("{{ value_json.list[1] }}", "", {"list": [1, 2]}, 2),
        ("{{ value_json.list[-1] }}", "", {"list": [1, 2, 5]}, 5),
        ("{{ value_json.t | float | round(1) }}", "", {"t": "21.349"}, 21.3),
        ("{{ value_json.t | round(2, 'floor') }}", "", {"t": 1.239}, 1.23),
        ("{{ value_json.t | round(0, 'ceil') }}", "", {"t": 1.2}, 2.0),
        ("{{ value_json.t | round }}", "", {"t": 1.6}, 2.0),
        ("{{ value_json.p | multiply(0.001) }}", "", {"p": 3005}, pytest.approx(3.005)),
        ("{{ value_json.x | default(0) }}", "", {}, 0),
        ("{{ value_json.x | d('none') }}", "", {}, "none"),
        ("{{ value_json.x | float(-1) }}", "", {"x": "n/a"}, -1),
        ("{{ value_json.ok | is_defined }}", "", {"ok": True}, True),
        ("{{ value_json.items }}", "", {"items": 4}, 4),  # a key, never dict.items
    ],
)
def test_supported_templates(source: str | None, value: str, doc: object, want: object) -> None:
    template = compile_template(source)
    got = template.render(value, doc) if doc is not None else template.render(value)
    assert got == want


def test_the_key_names_the_field() -> None:
    assert compile_template("{{ value_json.a.temperature }}").key == "temperature"
    assert compile_template("{{ value_json['x'][0] }}").key == "x"
    assert compile_template("{{ value }}").key is None


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ value.__class__ }}",
        "{{ value_json.__class__ }}",
        "{{ value_json['__globals__'] }}",
        "{% for x in range(10) %}{{ x }}{% endfor %}",
        "{% set x = 1 %}{{ value }}",
        "{# comment #}{{ value }}",
        "{{ value }} °C",
        "temperature: {{ value }}",
        "{{ value }}{{ value }}",
        "{{ value_json.x + 1 }}",
        "{{ value_json.x * 9 ** 9 ** 9 }}",
        "{{ lipsum.__globals__.os.popen('id').read() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ value | attr('__class__') }}",
        "{{ value | map('upper') }}",
        "{{ value | float(value_json.x) }}",
        "{{ value | round(99) }}",
        "{{ value | round(1, 'banker') }}",
        "{{ value | multiply('a') }}",
        "{{ value_json.x if value_json.x else 0 }}",
        "{{ states('sensor.x') }}",
        "{{ value_json[value] }}",
        "{{ value",
        "value_json.x",
        "{{ }}",
        "{{ value_json.x | }}",
        "{{ value_json['a }}",
    ],
)
def test_everything_else_is_refused(source: str) -> None:
    with pytest.raises(UnsupportedTemplate):
        compile_template(source)


def test_huge_inputs_are_refused_or_bounded() -> None:
    with pytest.raises(UnsupportedTemplate, match="characters long"):
        compile_template("{{ value_json" + ".a" * 100_000 + " }}")
    with pytest.raises(UnsupportedTemplate, match="deeper"):
        compile_template("{{ value_json" + ".a" * 17 + " }}")
    with pytest.raises(UnsupportedTemplate, match="filters"):
        compile_template("{{ value" + " | float" * 9 + " }}")
    assert len("{{ value_json" + ".a" * 16 + " }}") <= MAX_TEMPLATE_CHARS
    # A huge payload value costs one lookup, and float refuses endless digit strings.
    template = compile_template("{{ value_json.x | float }}")
    start = time.monotonic()
    with pytest.raises(TemplateValueError):
        template.render("", {"x": "9" * 1_000_000})
    assert time.monotonic() - start < 1.0


def test_runtime_failures_name_the_problem() -> None:
    template = compile_template("{{ value_json.a.b }}")
    with pytest.raises(TemplateValueError, match="no \\['a'\\]\\['b'\\]"):
        template.render("", {"a": {}})
    with pytest.raises(TemplateValueError, match="not JSON"):
        template.render("plain")
    with pytest.raises(TemplateValueError, match="float cannot read"):
        compile_template("{{ value | float }}").render("warm")
    with pytest.raises(TemplateValueError, match="int cannot read"):
        compile_template("{{ value_json.x | int }}").render("", json.loads('{"x": NaN}'))
