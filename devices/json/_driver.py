"""The ``json`` driver: JSON payloads (or bare values) from MQTT topics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from devices._parsing import (
    MISSING,
    decode_text,
    excerpt,
    flatten,
    loads_json,
    lookup,
    parse_scalar,
    split_path,
    to_time_ns,
)
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput, TopicPattern

__all__ = ["JsonDriver", "JsonOptions"]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAMED_SEGMENT: Final = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class JsonOptions(MqttOptions):
    """Options of the ``json`` driver (see ``devices/json/sample.toml``).

    ``select`` is not called ``fields`` because ``fields`` is the core's table of field
    rules (rename, scale, units, ranges) in the same device table.
    """

    select: list[str] | None = Field(
        default=None,
        min_length=1,
        description='Dotted paths of the values to keep ("AM2301.Temperature"); unset keeps all.',
    )
    value_field: str | None = Field(
        default=None,
        min_length=1,
        description='Field name for bare-value payloads ("21.5"); may use {topic_segment}.',
    )
    time_field: str | None = Field(
        default=None,
        min_length=1,
        description="Dotted path of the device time: epoch s/ms/µs/ns or RFC 3339 (no zone = UTC).",
    )
    tags_from_payload: dict[str, str] = Field(
        default_factory=dict,
        description="Tag name → dotted path of a string or integer in the payload.",
    )
    ignore_topics: list[str] = Field(
        default_factory=list,
        description="Topic patterns whose messages are ignored (LWT, availability, status).",
    )

    @field_validator("select")
    @classmethod
    def _select(cls, paths: list[str] | None) -> list[str] | None:
        if paths is not None:
            for path in paths:
                split_path(path)
            if twice := sorted({p for p in paths if paths.count(p) > 1}):
                msg = f"select lists {', '.join(twice)} more than once"
                raise ValueError(msg)
        return paths

    @field_validator("time_field")
    @classmethod
    def _time_field(cls, path: str | None) -> str | None:
        if path is not None:
            split_path(path)
        return path

    @field_validator("tags_from_payload")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for name, path in tags.items():
            if not name:
                msg = "tag names in tags_from_payload must not be empty"
                raise ValueError(msg)
            split_path(path)
        return tags

    @field_validator("ignore_topics")
    @classmethod
    def _ignore(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            TopicPattern(pattern)
        return patterns

    @field_validator("value_field")
    @classmethod
    def _value_field(cls, template: str | None, info: ValidationInfo) -> str | None:
        topics = info.data.get("topics")
        if template is not None and topics is not None:
            check_value_field(template, topics)
        return template

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_consistency(self)
        return self


def check_value_field(template: str, topics: list[str]) -> list[str]:
    """The ``{segment}`` names in ``template``; ValueError unless every topic pattern has them."""
    names = _PLACEHOLDER.findall(template)
    leftover = _PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        msg = f'value_field "{template}": braces must enclose a segment name like {{sensor}}'
        raise ValueError(msg)
    for topic in topics:
        segments = {m.group(1) for lv in topic.split("/") if (m := _NAMED_SEGMENT.match(lv))}
        if missing := [n for n in names if n not in segments]:
            msg = (
                f'value_field "{template}" uses {{{missing[0]}}}, but topic pattern "{topic}" '
                "has no such named segment"
            )
            raise ValueError(msg)
    return names


def check_consistency(options: JsonOptions) -> None:
    """ValueError for options that contradict each other."""
    if options.select is None:
        return
    taken = {"time_field": options.time_field} | {
        f'tags_from_payload["{tag}"]': path for tag, path in options.tags_from_payload.items()
    }
    for option, path in taken.items():
        if path is not None and path in options.select:
            msg = f'"{path}" is both in select and {option}; a value is a field or not, not both'
            raise ValueError(msg)


class JsonDriver(MqttDriver[JsonOptions]):
    """Decodes JSON object payloads (Tasmota, Zigbee2MQTT, Shelly, ESPHome JSON…).

    Leaves of nested objects are named by dotted path (``AM2301.Temperature``); arrays
    and nulls are skipped unless picked by index (``aenergy.by_minute.0``). With
    ``value_field``, bare-value payloads (ESPHome ``…/state``: ``21.5``, ``nan``, ``ON``)
    become one field. ``NaN``/``Infinity``/``1e999`` pass as float NaN/inf; the
    normalizer drops and counts them (reason ``nan``).

    Rejections: ``topic`` (matches no pattern), ``empty`` (no bytes), ``encoding`` (not
    UTF-8), ``malformed`` (not JSON, nested too deeply, integer too long), ``not_object``
    (JSON that is not an object and no ``value_field``), ``no_fields`` (none of the
    selected values present), ``bad_time`` (an unreadable ``time_field``).
    """

    Options: ClassVar[type[JsonOptions]] = JsonOptions
    description: ClassVar[str] = "JSON payloads over MQTT (Tasmota, Zigbee2MQTT, Shelly, ESPHome…)"

    def __init__(self, device: str, options: JsonOptions) -> None:
        super().__init__(device, options)
        check_consistency(options)
        self._ignore = [TopicPattern(p) for p in options.ignore_topics]
        self._select = (
            None if options.select is None else [(p, split_path(p)) for p in options.select]
        )
        self._time = None if options.time_field is None else split_path(options.time_field)
        self._tag_paths = [(tag, split_path(p)) for tag, p in options.tags_from_payload.items()]
        # Values that became tags or the time are not fields too.
        self._not_fields = set(options.tags_from_payload.values())
        if options.time_field is not None:
            self._not_fields.add(options.time_field)
        self._value_field = options.value_field
        self._value_segments: set[str] = set()
        if options.value_field is not None:
            self._value_segments = set(check_value_field(options.value_field, options.topics))

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """Decode one message; ``[]`` for a topic in ``ignore_topics``."""
        if any(p.match(topic) is not None for p in self._ignore):
            return []
        tags = self.topic_tags(topic)
        if tags is None:
            msg = f'topic "{topic}" matches none of {", ".join(self.options.topics)}'
            raise RejectedInput(msg, reason="topic")
        text = decode_text(payload).strip()
        if not text:
            msg = "empty payload"
            raise RejectedInput(msg, reason="empty")
        if self._value_field is not None and not text.startswith(("{", "[")):
            return [self._bare_value(text, tags)]
        doc = loads_json(text)
        if not isinstance(doc, dict):
            if self._value_field is not None and not isinstance(doc, list):
                return [self._bare_value(text, tags)]
            hint = "" if self._value_field is not None else "; set value_field for bare values"
            msg = f"expected a JSON object, got {excerpt(text, 40)}{hint}"
            raise RejectedInput(msg, reason="not_object")
        return [self._from_object(doc, dict(tags))]

    def _from_object(self, doc: dict[str, object], tags: dict[str, str]) -> RawSample:
        time_ns = None
        if self._time is not None:
            stamp = lookup(doc, self._time)
            if stamp is not MISSING and stamp is not None and stamp != "":
                try:
                    time_ns = to_time_ns(stamp)
                except ValueError as err:
                    msg = f'time field "{self.options.time_field}": {err}'
                    raise RejectedInput(msg, reason="bad_time") from None
        for tag, keys in self._tag_paths:
            value = lookup(doc, keys)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                tags[tag] = str(value)
        if self._select is None:
            fields = flatten(doc)
            for path in self._not_fields:
                fields.pop(path, None)
            if not fields:
                msg = (
                    "payload has no number, boolean or string values (arrays and nulls are skipped)"
                )
                raise RejectedInput(msg, reason="no_fields")
            return RawSample(fields, tags, time_ns)
        fields = {}
        missing: list[str] = []
        for path, keys in self._select:
            value = lookup(doc, keys)
            if isinstance(value, dict):
                fields.update(flatten(value, prefix=f"{path}."))
            elif value is MISSING or value is None:
                missing.append(path)
            elif isinstance(value, list):
                missing.append(f"{path} (an array; pick elements like {path}.0)")
            else:
                fields[path] = value
        if not fields:
            msg = f"none of the selected values is in the payload: {', '.join(missing)}"
            raise RejectedInput(msg, reason="no_fields")
        return RawSample(fields, tags, time_ns)

    def _bare_value(self, text: str, tags: Mapping[str, str]) -> RawSample:
        assert self._value_field is not None
        name = _PLACEHOLDER.sub(lambda m: tags[m.group(1)], self._value_field)
        # Segments that named the field are not tags as well: one series per device.
        rest = {k: v for k, v in tags.items() if k not in self._value_segments}
        if len(text) >= 2 and text[0] == text[-1] == '"':  # a JSON string
            loaded = loads_json(text)
            value: object = loaded if isinstance(loaded, str) else text
        else:
            value = parse_scalar(text)
        return RawSample({name: value}, rest)
