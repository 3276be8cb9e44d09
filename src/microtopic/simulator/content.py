"""Build a JSON value that validates against a JSON Schema, as pydantic v2 emits it.

The simulator fills `response_format` schemas with this, so a client gets a reply of
the right shape without a model. Supported keywords:

- `$ref` to a local JSON pointer (`#/$defs/...`), with sibling keywords applied on top,
  and `allOf`, whose parts are merged;
- `const`, `enum`, and `anyOf`/`oneOf`, which take a non-null branch;
- `type`, one name or a list, and when it is missing a type inferred from the keywords;
- objects: every property in `properties`, any other name in `required`, and entries
  for `additionalProperties` when there are no properties;
- arrays: `items`, `prefixItems`, `minItems`, `maxItems` and `uniqueItems` (strings are
  then distinct even case-insensitively);
- strings: `minLength`, `maxLength`, a few `format`s, and `pattern`, which is only checked;
- integers and numbers: `minimum`, `maximum`, their exclusive forms and `multipleOf`;
- booleans and null.

Other keywords are ignored. When no value can satisfy the schema, or the schema uses
something unsupported in a way that matters, `UnsupportedSchemaError` is raised.
"""

from __future__ import annotations

import datetime
import json
import math
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from microtopic.simulator.text import LessonText, distinct_label

# Deeper than this, arrays get their minimum number of items and optional values are null,
# so that recursive schemas end.
_SHALLOW_DEPTH = 8
_MAX_DEPTH = 64
# An array gets at most this many items more than its minimum, to keep replies small.
_SPARE_ITEMS = 3
# Values tried before a `uniqueItems` array falls back to generated labels.
_UNIQUE_ATTEMPTS = 12

_MINIMUM_KEYWORDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_MAXIMUM_KEYWORDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


class UnsupportedSchemaError(ValueError):
    """Raised when no value can be built for a schema; `path` locates the subschema."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{message} (at {path})")
        self.path = path


@dataclass(frozen=True)
class _Site:
    """Location of a value being built: schema path, field name, array position and depth."""

    path: str
    field: str | None = None
    ordinal: int = 0
    depth: int = 0

    def child(self, segment: str, *, field: str | None = None, ordinal: int = 0) -> _Site:
        return _Site(
            path=f"{self.path}/{segment}",
            field=self.field if field is None else field,
            ordinal=ordinal,
            depth=self.depth + 1,
        )


def instance_from_schema(schema: dict[str, Any], *, rng: random.Random, topic_hint: str) -> Any:
    """Build a value that validates against `schema`, with strings about `topic_hint`.

    The value depends only on `schema`, `topic_hint` and the state of `rng`.
    Raises UnsupportedSchemaError when no value can be built.
    """
    builder = _InstanceBuilder(schema, rng=rng, topic_hint=topic_hint)
    return builder.build(schema, _Site(path="#"))


class _InstanceBuilder:
    def __init__(self, root: dict[str, Any], *, rng: random.Random, topic_hint: str) -> None:
        self._root = root
        self._rng = rng
        self._text = LessonText(rng, topic_hint)
        self._builders: dict[str, Callable[[dict[str, Any], _Site], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }

    def build(self, schema: Any, site: _Site) -> Any:
        if site.depth > _MAX_DEPTH:
            raise UnsupportedSchemaError("The schema nests too deeply", path=site.path)
        schema = self._resolve(_as_schema(schema, site), site)

        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._choose_enum(schema["enum"], site)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return self.build(self._choose_branch(schema, keyword, site), site)

        type_name = self._type_of(schema, site)
        return self._builders[type_name](schema, site)

    # References and combinations

    def _resolve(self, schema: dict[str, Any], site: _Site) -> dict[str, Any]:
        followed: set[str] = set()
        while "$ref" in schema:
            reference = schema["$ref"]
            if reference in followed:
                raise UnsupportedSchemaError(
                    f"The reference {reference} refers back to itself", path=site.path
                )
            followed.add(reference)
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**_as_schema(self._lookup(reference, site), site), **siblings}

        if "allOf" not in schema:
            return schema
        merged = {key: value for key, value in schema.items() if key != "allOf"}
        for part in schema["allOf"]:
            merged = _merge(merged, self._resolve(_as_schema(part, site), site))
        return merged

    def _lookup(self, reference: Any, site: _Site) -> Any:
        if not isinstance(reference, str) or not reference.startswith("#"):
            raise UnsupportedSchemaError(
                f"Only local references such as #/$defs/Name are supported, not {reference!r}",
                path=site.path,
            )
        target: Any = self._root
        for token in reference[1:].split("/")[1:]:
            name = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or name not in target:
                raise UnsupportedSchemaError(
                    f"The reference {reference} is not found", path=site.path
                )
            target = target[name]
        return target

    def _choose_branch(self, schema: dict[str, Any], keyword: str, site: _Site) -> dict[str, Any]:
        branches = schema[keyword]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchemaError(f"`{keyword}` must be a non-empty list", path=site.path)
        resolved = [self._resolve(_as_schema(branch, site), site) for branch in branches]

        non_null = [branch for branch in resolved if not _is_null_schema(branch)]
        if not non_null or (site.depth > _SHALLOW_DEPTH and len(non_null) < len(resolved)):
            non_null = [branch for branch in resolved if _is_null_schema(branch)]
        siblings = {key: value for key, value in schema.items() if key != keyword}
        return {**siblings, **self._rng.choice(non_null)}

    def _choose_enum(self, values: Any, site: _Site) -> Any:
        if not isinstance(values, list) or not values:
            raise UnsupportedSchemaError("`enum` must be a non-empty list", path=site.path)
        non_null = [value for value in values if value is not None]
        return self._rng.choice(non_null or values)

    def _type_of(self, schema: dict[str, Any], site: _Site) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            non_null = [name for name in declared if name != "null"]
            declared = self._rng.choice(non_null) if non_null else "null"
        if declared is None:
            declared = _infer_type(schema)
        if not isinstance(declared, str) or declared not in self._builders:
            raise UnsupportedSchemaError(f"The type {declared!r} is not supported", path=site.path)
        return declared

    # Values by type

    def _object(self, schema: dict[str, Any], site: _Site) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        value = {
            name: self.build(subschema, site.child(f"properties/{name}", field=name))
            for name, subschema in properties.items()
        }
        for name in schema.get("required", []):
            # A required name without a property schema accepts any value, so a string will do.
            if name not in value:
                value[name] = self._text.write(name, 0, max_length=200)

        extra_schema = schema.get("additionalProperties")
        if not properties and isinstance(extra_schema, dict):
            count = max(int(schema.get("minProperties", 0)), 1)
            for index in range(count):
                name = f"{site.field or 'item'}_{index + 1}"
                item_site = site.child("additionalProperties", ordinal=index)
                value[name] = self.build(extra_schema, item_site)
        return value

    def _array(self, schema: dict[str, Any], site: _Site) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        count = self._item_count(schema, len(prefix), site)
        unique = schema.get("uniqueItems") is True

        values: list[Any] = []
        seen: set[str] = set()
        for index in range(count):
            item_schema = prefix[index] if index < len(prefix) else items
            item_site = site.child(f"items/{index}", ordinal=index)
            if unique:
                values.append(self._unique_item(item_schema, item_site, seen))
            else:
                values.append(self.build(item_schema, item_site))
        return values

    def _item_count(self, schema: dict[str, Any], prefix_count: int, site: _Site) -> int:
        min_items = int(schema.get("minItems", 0))
        max_items = schema.get("maxItems")
        if schema.get("items") is False:
            max_items = prefix_count if max_items is None else min(max_items, prefix_count)
        if max_items is not None and max_items < min_items:
            raise UnsupportedSchemaError(
                f"`maxItems` {max_items} is below `minItems` {min_items}", path=site.path
            )

        if site.depth > _SHALLOW_DEPTH:
            return min_items
        upper = min_items + _SPARE_ITEMS
        if max_items is not None:
            upper = min(upper, int(max_items))
        return self._rng.randint(min_items, upper)

    def _unique_item(self, schema: Any, site: _Site, seen: set[str]) -> Any:
        for attempt in range(_UNIQUE_ATTEMPTS):
            value = self.build(schema, replace(site, ordinal=site.ordinal + attempt))
            identity = _identity(value)
            if identity not in seen:
                seen.add(identity)
                return value

        value = self._distinct_string(schema, site, seen)
        seen.add(_identity(value))
        return value

    def _distinct_string(self, schema: Any, site: _Site, seen: set[str]) -> str:
        resolved = self._resolve(_as_schema(schema, site), site)
        constrained = {"const", "enum", "anyOf", "oneOf", "pattern", "format"} & resolved.keys()
        if constrained or self._type_of(resolved, site) != "string":
            raise UnsupportedSchemaError(
                "Cannot build distinct items for the array", path=site.path
            )
        min_length = int(resolved.get("minLength", 0))
        max_length = resolved.get("maxLength")

        index = 0
        while (label := distinct_label(index, min_length, max_length)) is not None:
            if label.casefold() not in seen:
                return label
            index += 1
        raise UnsupportedSchemaError("Too few distinct strings fit `maxLength`", path=site.path)

    def _string(self, schema: dict[str, Any], site: _Site) -> str:
        min_length = int(schema.get("minLength", 0))
        max_length = schema.get("maxLength")
        if max_length is not None and max_length < min_length:
            raise UnsupportedSchemaError(
                f"`maxLength` {max_length} is below `minLength` {min_length}", path=site.path
            )

        value = self._formatted(schema.get("format"), site)
        if value is None:
            value = self._text.write(
                site.field, site.ordinal, min_length=min_length, max_length=max_length
            )
        elif len(value) < min_length or (max_length is not None and len(value) > max_length):
            raise UnsupportedSchemaError(
                "The `format` does not fit the length limits", path=site.path
            )

        pattern = schema.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            raise UnsupportedSchemaError(
                f"Cannot build a string that matches the pattern {pattern!r}", path=site.path
            )
        return value

    def _formatted(self, format_name: Any, site: _Site) -> str | None:
        moment = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
            minutes=self._rng.randrange(60 * 24 * 365)
        )
        number = site.ordinal + 1
        if format_name == "date-time":
            return moment.isoformat().replace("+00:00", "Z")
        if format_name == "date":
            return moment.date().isoformat()
        if format_name == "time":
            return moment.time().isoformat() + "Z"
        if format_name == "email":
            return f"learner{number}@example.com"
        if format_name in ("uri", "url"):
            return f"https://example.com/lessons/{number}"
        if format_name == "uuid":
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        return None

    def _integer(self, schema: dict[str, Any], site: _Site) -> int:
        low, high = _integer_bounds(schema)
        if low > high:
            raise UnsupportedSchemaError("No integer fits the bounds", path=site.path)

        multiple = schema.get("multipleOf")
        if multiple is None:
            return self._rng.randint(low, high)
        if not isinstance(multiple, int) or multiple <= 0:
            raise UnsupportedSchemaError("`multipleOf` must be a positive integer", path=site.path)
        first, last = math.ceil(low / multiple), math.floor(high / multiple)
        if first > last:
            raise UnsupportedSchemaError("No multiple of `multipleOf` fits", path=site.path)
        return self._rng.randint(first, last) * multiple

    def _number(self, schema: dict[str, Any], site: _Site) -> float:
        low, high = _number_range(schema)
        candidates = [round(self._rng.uniform(low, high), 2) for _ in range(8)]
        candidates.append((low + high) / 2)

        multiple = _bound(schema, "multipleOf")
        if multiple is not None and multiple > 0:
            first, last = math.ceil(low / multiple), math.floor(high / multiple)
            candidates = []
            if first <= last:
                candidates = [self._rng.randint(first, last) * multiple for _ in range(8)]

        for candidate in candidates:
            if _number_fits(candidate, schema):
                return float(candidate)
        raise UnsupportedSchemaError("No number fits the bounds", path=site.path)

    def _boolean(self, schema: dict[str, Any], site: _Site) -> bool:
        return self._rng.random() < 0.5

    def _null(self, schema: dict[str, Any], site: _Site) -> None:
        return None


def _as_schema(schema: Any, site: _Site) -> dict[str, Any]:
    if schema is True:
        return {}
    if isinstance(schema, dict):
        return schema
    if schema is False:
        raise UnsupportedSchemaError("The schema `false` accepts no value", path=site.path)
    raise UnsupportedSchemaError(
        f"A schema must be an object, not {type(schema).__name__}", path=site.path
    )


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Merge two `allOf` parts, keeping the stricter of two bounds."""
    merged = {**first, **second}
    if "properties" in first and "properties" in second:
        merged["properties"] = {**first["properties"], **second["properties"]}
    if "required" in first and "required" in second:
        merged["required"] = list(dict.fromkeys([*first["required"], *second["required"]]))
    for keyword in _MINIMUM_KEYWORDS:
        if keyword in first and keyword in second:
            merged[keyword] = max(first[keyword], second[keyword])
    for keyword in _MAXIMUM_KEYWORDS:
        if keyword in first and keyword in second:
            merged[keyword] = min(first[keyword], second[keyword])
    return merged


def _is_null_schema(schema: dict[str, Any]) -> bool:
    return (
        schema.get("type") == "null"
        or ("const" in schema and schema["const"] is None)
        or schema.get("enum") == [None]
    )


def _infer_type(schema: dict[str, Any]) -> str:
    if {"properties", "additionalProperties", "required"} & schema.keys():
        return "object"
    if {"items", "prefixItems", "minItems", "maxItems"} & schema.keys():
        return "array"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
        return "number"
    return "string"


def _identity(value: Any) -> str:
    """Return what two `uniqueItems` entries must not share; strings compare case-insensitively."""
    if isinstance(value, str):
        return value.casefold()
    return json.dumps(value, sort_keys=True)


def _bound(schema: dict[str, Any], keyword: str) -> float | None:
    # Booleans are ints in Python, so a draft-4 `exclusiveMinimum: true` would read as 1.
    value = schema.get(keyword)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _integer_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    low, high = _number_range(schema)
    low_is_exclusive = _bound(schema, "exclusiveMinimum") == low
    high_is_exclusive = _bound(schema, "exclusiveMaximum") == high

    low_integer = math.floor(low) + 1 if low_is_exclusive else math.ceil(low)
    high_integer = math.ceil(high) - 1 if high_is_exclusive else math.floor(high)
    return low_integer, high_integer


def _number_range(schema: dict[str, Any]) -> tuple[float, float]:
    """Return the tightest bounds the schema sets, with a default range of 10 where unbounded."""
    lows = [_bound(schema, "minimum"), _bound(schema, "exclusiveMinimum")]
    highs = [_bound(schema, "maximum"), _bound(schema, "exclusiveMaximum")]
    low = max((value for value in lows if value is not None), default=None)
    high = min((value for value in highs if value is not None), default=None)

    if low is None:
        low = 1 if high is None else high - 10
    if high is None:
        high = low + 10
    return low, high


def _number_fits(value: float, schema: dict[str, Any]) -> bool:
    minimum = _bound(schema, "minimum")
    exclusive_minimum = _bound(schema, "exclusiveMinimum")
    maximum = _bound(schema, "maximum")
    exclusive_maximum = _bound(schema, "exclusiveMaximum")
    return (
        (minimum is None or value >= minimum)
        and (exclusive_minimum is None or value > exclusive_minimum)
        and (maximum is None or value <= maximum)
        and (exclusive_maximum is None or value < exclusive_maximum)
    )
