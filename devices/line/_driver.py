"""The ``line`` driver: one reading per text line from a serial device."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from devices._parsing import (
    decode_text,
    excerpt,
    flatten,
    loads_json,
    parse_scalar,
    to_time_ns,
)
from gateway.driver import RawSample, RejectedInput, SerialDriver, SerialOptions

__all__ = ["LineDriver", "LineOptions"]

Format = Literal["kv", "json", "csv", "regex"]

# kv pairs are split on runs of blanks and/or commas unless a separator is given.
_DEFAULT_SEPARATOR: Final = re.compile(r"[\s,]+")
# A csv column with this name is read and thrown away.
SKIP_COLUMN: Final = "_"
# Which options belong to which format: setting one for another format is a mistake.
_FORMAT_OPTIONS: Final[dict[str, Format]] = {
    "separator": "kv",
    "kv_delimiter": "kv",
    "columns": "csv",
    "delimiter": "csv",
    "pattern": "regex",
}


class LineOptions(SerialOptions):
    """Options of the ``line`` driver (see ``devices/line/sample.toml``)."""

    format: Format = Field(
        default="kv", description="Line layout: kv (key=value pairs), json, csv or regex."
    )
    separator: str | None = Field(
        default=None,
        min_length=1,
        description="kv: between pairs; unset accepts blanks and/or commas.",
    )
    kv_delimiter: str = Field(
        default="=", min_length=1, description="kv: between a key and its value."
    )
    columns: list[str] | None = Field(
        default=None,
        validate_default=True,
        description='csv (required): column names in order; "_" skips a column.',
    )
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="csv: the column separator."
    )
    pattern: str | None = Field(
        default=None,
        validate_default=True,
        description="regex (required): a Python regex whose named groups become fields.",
    )
    time_field: str | None = Field(
        default=None,
        min_length=1,
        description="Field with the device's time: epoch s/ms/µs/ns or RFC 3339 (no zone = UTC).",
    )
    encoding: str = Field(default="utf-8", description="How the line's bytes are decoded.")
    skip_prefix: list[str] = Field(
        default_factory=lambda: ["#"],
        description="Lines starting with one of these are skipped (banners, comments).",
    )

    @field_validator("columns")
    @classmethod
    def _columns(cls, columns: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if info.data.get("format") == "csv":
            check_columns(columns)
        return columns

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, pattern: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("format") == "regex":
            compile_pattern(pattern)
        return pattern

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, encoding: str) -> str:
        check_encoding(encoding)
        return encoding

    @field_validator("skip_prefix")
    @classmethod
    def _skip_prefix(cls, prefixes: list[str]) -> list[str]:
        check_skip_prefix(prefixes)
        return prefixes

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_consistency(self)
        return self


def check_columns(columns: list[str] | None) -> list[str]:
    """The csv columns, or ValueError saying what is wrong with them."""
    if columns is None:
        msg = 'columns is required when format = "csv", e.g. columns = ["seq", "temperature"]'
        raise ValueError(msg)
    named = [c for c in columns if c != SKIP_COLUMN]
    if not named:
        msg = f'columns needs at least one column not named "{SKIP_COLUMN}"'
        raise ValueError(msg)
    if "" in named:
        msg = f'column names must not be empty (use "{SKIP_COLUMN}" to skip a column)'
        raise ValueError(msg)
    if twice := sorted({c for c in named if named.count(c) > 1}):
        msg = f"column names must be unique: {', '.join(twice)} appear more than once"
        raise ValueError(msg)
    return columns


def compile_pattern(pattern: str | None) -> re.Pattern[str]:
    """The compiled regex, or ValueError if it is missing, invalid or has no named group."""
    if pattern is None:
        msg = 'pattern is required when format = "regex", e.g. pattern = "T=(?P<temperature>[-0-9.]+)"'
        raise ValueError(msg)
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        msg = f"pattern is not a valid regular expression: {err}"
        raise ValueError(msg) from None
    if not compiled.groupindex:
        msg = "pattern needs at least one named group, like (?P<temperature>[-0-9.]+)"
        raise ValueError(msg)
    return compiled


def check_encoding(encoding: str) -> None:
    """ValueError unless ``encoding`` is a text encoding that frames lines like ASCII."""
    try:
        newline = "\n".encode(encoding)  # LookupError for codecs like rot13 and base64 too
    except LookupError:
        msg = (
            f'"{encoding}" is not a text encoding Python knows (try "utf-8", "latin-1" or "ascii")'
        )
        raise ValueError(msg) from None
    if newline != b"\n":
        msg = f'encoding "{encoding}" does not write a newline as one byte; lines need utf-8, latin-1 or similar'
        raise ValueError(msg)


def check_skip_prefix(prefixes: list[str]) -> None:
    """ValueError if a prefix is empty (it would skip every line)."""
    if "" in prefixes:
        msg = "skip_prefix entries must not be empty (an empty prefix would skip every line)"
        raise ValueError(msg)


def check_consistency(options: LineOptions) -> None:
    """ValueError for options that contradict each other or the chosen format."""
    for name, fmt in _FORMAT_OPTIONS.items():
        if name in options.model_fields_set and options.format != fmt:
            msg = f'{name} only applies to format = "{fmt}" (format is "{options.format}")'
            raise ValueError(msg)
    if options.format == "kv" and options.separator == options.kv_delimiter:
        msg = f'separator and kv_delimiter must differ (both are "{options.kv_delimiter}")'
        raise ValueError(msg)
    tf = options.time_field
    if tf is None:
        return
    if options.format == "csv" and options.columns is not None and tf not in options.columns:
        msg = f'time_field "{tf}" is not one of the columns ({", ".join(options.columns)})'
        raise ValueError(msg)
    if options.format == "regex" and options.pattern is not None:
        groups = compile_pattern(options.pattern).groupindex
        if tf not in groups:
            msg = f'time_field "{tf}" is not a named group of pattern ({", ".join(groups)})'
            raise ValueError(msg)


class LineDriver(SerialDriver[LineOptions]):
    """Reads one sample per line: ``key=value`` pairs, a JSON object, CSV or a regex.

    Numbers become ints or floats, ``true``/``false`` bools, anything else stays a
    string; the core's field rules decide the stored types. Blank lines and lines
    starting with a ``skip_prefix`` are ignored. Rejections: ``encoding`` (bytes not
    valid in ``encoding``), ``malformed`` (bad kv token, bad JSON, wrong column count,
    no regex match), ``not_object`` (JSON that is not an object), ``empty`` (a line
    with no field), ``bad_time`` (an unreadable ``time_field``).
    """

    Options: ClassVar[type[LineOptions]] = LineOptions
    description: ClassVar[str] = "text lines on a serial port: key=value, JSON, CSV or regex"

    def __init__(self, device: str, options: LineOptions) -> None:
        super().__init__(device, options)
        # The options were validated by pydantic already, unless built with
        # model_construct(); checking again costs nothing and keeps __init__ honest.
        check_encoding(options.encoding)
        check_skip_prefix(options.skip_prefix)
        check_consistency(options)
        self._encoding = options.encoding
        self._skip = tuple(options.skip_prefix)
        self._time_field = options.time_field
        self._json = options.format == "json"
        self._split: Callable[[str], dict[str, str]]
        if options.format == "kv":
            sep = options.separator
            self._kv_split = _DEFAULT_SEPARATOR.split if sep is None else _literal_split(sep)
            self._kv_delim = options.kv_delimiter
            self._split = self._split_kv_blanks if sep is None else self._split_kv
        elif options.format == "csv":
            self._columns = check_columns(options.columns)
            self._delimiter = options.delimiter
            self._split = self._split_csv
        elif options.format == "regex":
            self._pattern = compile_pattern(options.pattern)
            self._split = self._split_regex

    def parse(self, frame: bytes) -> list[RawSample]:
        """Decode one line; ``[]`` for blank and comment lines."""
        text = decode_text(frame, self._encoding).strip()
        if not text or text.startswith(self._skip):
            return []
        if self._json:
            return [self._parse_json(text)]
        raw = self._split(text)
        time_ns = None
        if self._time_field is not None and (stamp := raw.pop(self._time_field, "")):
            time_ns = _time_ns(self._time_field, stamp)
        fields = {}
        for name, value in raw.items():  # a loop, not a comprehension: 3.11 makes that a call
            if value:
                fields[name] = parse_scalar(value)
        if not fields:
            msg = f"no fields in line {excerpt(text)}"
            raise RejectedInput(msg, reason="empty")
        return [RawSample(fields, time_ns=time_ns)]

    def _split_kv_blanks(self, text: str) -> dict[str, str]:
        """``_split_kv`` for the default separator (blanks and/or commas), faster.

        ``str.split()`` cuts at the same whitespace as the pattern's ``\\s``, and its
        tokens hold no blanks to strip. Anything unusual goes to ``_split_kv``, which
        says what is wrong.
        """
        pairs: dict[str, str] = {}
        delim = self._kv_delim
        for token in text.replace(",", " ").split():
            key, found, value = token.partition(delim)
            if not found or not key or key in pairs or not key.isprintable():
                return self._split_kv(text)
            pairs[key] = value
        return pairs

    def _split_kv(self, text: str) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for token in self._kv_split(text):
            token = token.strip()
            if not token:
                continue
            key, delim, value = token.partition(self._kv_delim)
            key = key.strip()
            if not delim or not key:
                what = f'no "{self._kv_delim}"' if not delim else "an empty key"
                msg = (
                    f"kv token {excerpt(token, 40)} has {what} (expected key{self._kv_delim}value)"
                )
                raise RejectedInput(msg, reason="malformed")
            if not key.isprintable():
                msg = f"kv key {excerpt(key, 40)} contains control characters"
                raise RejectedInput(msg, reason="malformed")
            if key in pairs:
                msg = f'field "{key}" appears twice in the line'
                raise RejectedInput(msg, reason="malformed")
            pairs[key] = value.strip()
        return pairs

    def _split_csv(self, text: str) -> dict[str, str]:
        try:
            row = next(csv.reader([text], delimiter=self._delimiter))
        except csv.Error as err:
            msg = f"unreadable csv line {excerpt(text)}: {err}"
            raise RejectedInput(msg, reason="malformed") from None
        if len(row) != len(self._columns):
            msg = (
                f"expected {len(self._columns)} columns ({', '.join(self._columns)}), "
                f"got {len(row)} in {excerpt(text)}"
            )
            raise RejectedInput(msg, reason="malformed")
        return {
            name: value.strip()
            for name, value in zip(self._columns, row, strict=True)
            if name != SKIP_COLUMN
        }

    def _split_regex(self, text: str) -> dict[str, str]:
        match = self._pattern.search(text)
        if match is None:
            msg = f"line does not match pattern: {excerpt(text)}"
            raise RejectedInput(msg, reason="malformed")
        return {k: v for k, v in match.groupdict().items() if v is not None}

    def _parse_json(self, text: str) -> RawSample:
        doc = loads_json(text)
        if not isinstance(doc, dict):
            msg = f"expected a JSON object, got {excerpt(text, 40)}"
            raise RejectedInput(msg, reason="not_object")
        fields = flatten(doc)
        time_ns = None
        if self._time_field is not None:
            stamp = fields.pop(self._time_field, None)
            if stamp is not None and stamp != "":
                time_ns = _time_ns(self._time_field, stamp)
        if not fields:
            msg = f"no fields in JSON line {excerpt(text)} (arrays and nulls are skipped)"
            raise RejectedInput(msg, reason="empty")
        return RawSample(fields, time_ns=time_ns)


def _literal_split(separator: str) -> Callable[[str], list[str]]:
    def split(text: str) -> list[str]:
        return text.split(separator)

    return split


def _time_ns(name: str, value: Any) -> int:
    try:
        return to_time_ns(value)
    except ValueError as err:
        msg = f'time field "{name}": {err}'
        raise RejectedInput(msg, reason="bad_time") from None
