"""A small, safe evaluator for the value templates discovery configs carry.

Home Assistant's ``value_template`` is Jinja, and a discovery config comes from anyone
who can publish to the broker: it is never handed to a template engine or to ``eval``.
Only this grammar is accepted (whitespace allowed between the parts)::

    template := "{{" expr ("|" filter)* "}}"
    expr     := "value" | "value_json" ( "." name | "[" string "]" | "[" integer "]" )*
    filter   := "float" ["(" default ")"] | "int" ["(" default ")"]
              | "round" ["(" digits ["," "'common'"|"'floor'"|"'ceil'"] ")"]
              | "multiply" "(" number ")" | ("default" | "d") "(" literal ")"
              | "is_defined"

Nothing else: no text around the braces, no ``{% %}`` statements, no attributes of
Python objects (``value_json.x`` looks up the key ``"x"`` and nothing more), no calls,
no arithmetic. A template outside the grammar is refused when the config arrives
(:class:`UnsupportedTemplate`); one that fails on a payload (a missing key, a value
``float`` cannot read) raises :class:`TemplateValueError` for that message only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_TEMPLATE_CHARS",
    "Template",
    "TemplateValueError",
    "UnsupportedTemplate",
    "compile_template",
]

# Real value templates are a few dozen characters; a longer one is not one we can read.
MAX_TEMPLATE_CHARS: Final = 512
MAX_PATH_DEPTH: Final = 16
MAX_FILTERS: Final = 8
MAX_ROUND_DIGITS: Final = 10

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<open>\{\{) | (?P<close>\}\}) |
        (?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?) |
        (?P<name>[A-Za-z_][A-Za-z0-9_]*) |
        (?P<string>'[^'\\]*'|"[^"\\]*") |
        (?P<punct>[.\[\](),|])
    )""",
    re.VERBOSE,
)
_ROUND_METHODS: Final = ("common", "floor", "ceil")
_LITERAL_NAMES: Final[dict[str, object]] = {
    "true": True, "True": True, "false": False, "False": False, "none": None, "None": None,
}  # fmt: skip


class UnsupportedTemplate(ValueError):
    """A template outside the supported grammar (the entity is refused)."""


class TemplateValueError(ValueError):
    """A supported template that cannot be evaluated on this payload."""


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()
_NO_JSON: Final = _Undefined()

Filter = Callable[[object], object]


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled value template; :meth:`render` applies it to one payload."""

    source: str
    uses_json: bool
    path: tuple[str | int, ...]
    filters: tuple[tuple[str, Filter], ...]

    @property
    def key(self) -> str | None:
        """The last JSON key the template reads (``value_json.a.temperature`` →
        ``"temperature"``), or None."""
        for part in reversed(self.path):
            if isinstance(part, str):
                return part
        return None

    def render(self, value: str, value_json: object = _NO_JSON) -> object:
        """The template's result for a payload (``value_json``: the payload parsed)."""
        result: object
        if not self.uses_json:
            result = value
        else:
            if value_json is _NO_JSON:
                msg = "the payload is not JSON"
                raise TemplateValueError(msg)
            result = value_json
            for part in self.path:
                result = _item(result, part)
                if result is UNDEFINED:
                    break
        for name, apply in self.filters:
            if result is UNDEFINED and name not in ("default", "d"):
                raise TemplateValueError(f"value_json has no {_show_path(self.path)}")
            result = apply(result)
        if result is UNDEFINED:
            raise TemplateValueError(f"value_json has no {_show_path(self.path)}")
        return result


def _item(container: object, key: str | int) -> object:
    if isinstance(key, str) and isinstance(container, dict):
        return container.get(key, UNDEFINED)
    if (
        isinstance(key, int)
        and isinstance(container, list)
        and -len(container) <= key < len(container)
    ):
        return container[key]
    return UNDEFINED


def _show_path(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p!r}]" for p in path) or "value"


def compile_template(source: str | None) -> Template:
    """Parse ``source`` (None or empty: the payload as it is); UnsupportedTemplate says
    what is wrong."""
    if source is None or not source.strip():
        return Template("", False, (), ())
    if len(source) > MAX_TEMPLATE_CHARS:
        msg = f"template is {len(source)} characters long (at most {MAX_TEMPLATE_CHARS})"
        raise UnsupportedTemplate(msg)
    return _Parser(source).parse()


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(source):
            match = _TOKEN.match(source, pos)
            if match is None or match.end() == pos:
                rest = source[pos:].strip()
                if not rest:
                    break
                msg = f"unsupported template syntax at {_excerpt(rest)}"
                if rest.startswith(("{%", "{#")):
                    msg = "template statements and comments ({% %}, {# #}) are not supported"
                raise UnsupportedTemplate(msg)
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.i = 0

    def parse(self) -> Template:
        self._expect("open", "{{", "a template must be one {{ … }} expression")
        uses_json, path = self._expr()
        filters: list[tuple[str, Filter]] = []
        while self._peek() == ("punct", "|"):
            self.i += 1
            if len(filters) >= MAX_FILTERS:
                raise UnsupportedTemplate(f"more than {MAX_FILTERS} filters")
            filters.append(self._filter())
        self._expect("close", "}}", "expected | or }}")
        if self.i != len(self.tokens):
            msg = "text after }} is not supported (one {{ … }} expression only)"
            raise UnsupportedTemplate(msg)
        return Template(self.source, uses_json, tuple(path), tuple(filters))

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _next(self, what: str) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise UnsupportedTemplate(f"template ends early: {what}")
        self.i += 1
        return token

    def _expect(self, kind: str, text: str, what: str) -> None:
        token = self._next(what)
        if token != (kind, text):
            raise UnsupportedTemplate(f"{what}, got {_excerpt(token[1])}")

    def _expr(self) -> tuple[bool, list[str | int]]:
        kind, text = self._next("expected value or value_json")
        if kind != "name" or text not in ("value", "value_json"):
            msg = f"only value and value_json can be read, got {_excerpt(text)}"
            raise UnsupportedTemplate(msg)
        if text == "value":
            return False, []
        path: list[str | int] = []
        while (token := self._peek()) in (("punct", "."), ("punct", "[")):
            self.i += 1
            if len(path) >= MAX_PATH_DEPTH:
                raise UnsupportedTemplate(f"a path deeper than {MAX_PATH_DEPTH} keys")
            if token == ("punct", "."):
                kind, text = self._next("expected a key after .")
                if kind != "name":
                    raise UnsupportedTemplate(f"expected a key after ., got {_excerpt(text)}")
                path.append(_key(text))
            else:
                kind, text = self._next("expected a key in [ ]")
                if kind == "string":
                    path.append(_key(text[1:-1]))
                elif kind == "number" and re.fullmatch(r"-?\d+", text):
                    path.append(int(text))
                else:
                    raise UnsupportedTemplate(f"expected a key in [ ], got {_excerpt(text)}")
                self._expect("punct", "]", "expected ]")
        return True, path

    def _args(self) -> list[object]:
        if self._peek() != ("punct", "("):
            return []
        self.i += 1
        args: list[object] = []
        if self._peek() == ("punct", ")"):
            self.i += 1
            return args
        while True:
            kind, text = self._next("expected an argument")
            if kind == "number":
                args.append(float(text) if any(c in text for c in ".eE") else int(text))
            elif kind == "string":
                args.append(text[1:-1])
            elif kind == "name" and text in _LITERAL_NAMES:
                args.append(_LITERAL_NAMES[text])
            else:
                msg = f"filter arguments must be literals, got {_excerpt(text)}"
                raise UnsupportedTemplate(msg)
            kind, text = self._next("expected , or )")
            if (kind, text) == ("punct", ")"):
                return args
            if (kind, text) != ("punct", ","):
                raise UnsupportedTemplate(f"expected , or ), got {_excerpt(text)}")
            if len(args) >= 2:
                raise UnsupportedTemplate("too many filter arguments")

    def _filter(self) -> tuple[str, Filter]:
        kind, name = self._next("expected a filter name after |")
        if kind != "name":
            raise UnsupportedTemplate(f"expected a filter name after |, got {_excerpt(name)}")
        args = self._args()
        maker = _FILTERS.get(name)
        if maker is None:
            msg = (
                f"filter {_excerpt(name)} is not supported (supported: "
                f"{', '.join(sorted(_FILTERS))})"
            )
            raise UnsupportedTemplate(msg)
        return name, maker(args)


def _key(text: str) -> str:
    if text.startswith("__"):
        # Harmless here (keys are only looked up in the payload), but no real
        # template reads such a key, and refusing it keeps the intent plain.
        raise UnsupportedTemplate(f"key {_excerpt(text)} is not supported")
    return text


def _excerpt(text: str, limit: int = 30) -> str:
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown)


def _arity(name: str, args: list[object], most: int) -> None:
    if len(args) > most:
        raise UnsupportedTemplate(f"{name} takes at most {most} argument(s)")


def _number(value: object, kind: type[int] | type[float]) -> int | float:
    number: float | None = None
    if isinstance(value, int | float):  # bool included: True is 1
        number = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or (kind is int and not math.isfinite(number)):
        msg = f"{kind.__name__} cannot read {_excerpt(str(value))}"
        raise TemplateValueError(msg)
    return int(number) if kind is int else float(number)


def _to_number(name: str, kind: type[int] | type[float]) -> Callable[[list[object]], Filter]:
    def make(args: list[object]) -> Filter:
        _arity(name, args, 1)
        if not args:
            return lambda v: _number(v, kind)
        fallback = args[0]

        def apply(v: object) -> object:
            try:
                return _number(v, kind)
            except TemplateValueError:
                return fallback

        return apply

    return make


def _round(args: list[object]) -> Filter:
    _arity("round", args, 2)
    digits = args[0] if args else 0
    method = args[1] if len(args) > 1 else "common"
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 10:
        raise UnsupportedTemplate(f"round's precision must be 0 to {MAX_ROUND_DIGITS}")
    if method not in _ROUND_METHODS:
        raise UnsupportedTemplate(f"round's method must be one of {', '.join(_ROUND_METHODS)}")

    def apply(v: object) -> object:
        x = _number(v, float)
        if not math.isfinite(x):
            return x
        scale = 10**digits
        if method == "floor":
            return math.floor(x * scale) / scale
        if method == "ceil":
            return math.ceil(x * scale) / scale
        return round(x, digits)

    return apply


def _multiply(args: list[object]) -> Filter:
    _arity("multiply", args, 1)
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise UnsupportedTemplate("multiply takes one number")
    factor = args[0]
    return lambda v: _number(v, float) * factor


def _default(args: list[object]) -> Filter:
    _arity("default", args, 2)
    if not args:
        raise UnsupportedTemplate("default takes a value")
    fallback = args[0]
    return lambda v: fallback if v is UNDEFINED else v


def _is_defined(args: list[object]) -> Filter:
    _arity("is_defined", args, 0)
    return lambda v: v


_FILTERS: Final[dict[str, Callable[[list[object]], Filter]]] = {
    "float": _to_number("float", float),
    "int": _to_number("int", int),
    "round": _round,
    "multiply": _multiply,
    "default": _default,
    "d": _default,
    "is_defined": _is_defined,
}
