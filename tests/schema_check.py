"""A strict JSON Schema check for the documents FastAPI and pydantic generate.

Covers the keywords those documents use (``$ref``, ``type``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``anyOf``, ``enum``, ``const``, numeric and length
bounds); any other validation keyword fails the check rather than being ignored, so a
schema this module does not understand can never pass silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Keywords that only annotate (never constrain) in the documents checked.
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "format", "deprecated", "readOnly", "$defs"}
)
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


class SchemaError(AssertionError):
    """``value`` does not match the schema; the message says where."""


def _is(value: Any, type_name: str) -> bool:
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[type_name])


class SchemaChecker:
    """Checks values against schemas whose ``$ref`` point into ``root`` (an OpenAPI
    document, ``#/components/schemas/...``, or a JSON schema with ``#/$defs/...``)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise SchemaError(f"external $ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node  # type: ignore[no-any-return]

    def check(self, value: Any, schema: Mapping[str, Any], where: str = "$") -> None:
        """Raise :class:`SchemaError` unless ``value`` matches ``schema``."""
        unknown = set(schema) - ANNOTATIONS - set(_KEYWORDS)
        if unknown:
            raise SchemaError(f"{where}: keyword(s) {sorted(unknown)} not understood")
        for keyword, rule in _KEYWORDS.items():
            if keyword in schema and rule is not None:
                rule(self, value, schema, where)
        if any(keyword in schema for keyword in _BOUNDS):
            self._bounds(value, schema, where)

    def lint(self, schema: Any, where: str = "$") -> None:
        """Raise :class:`SchemaError` if ``schema`` or any schema inside it uses a keyword
        :meth:`check` does not understand (a document this module cannot check fully)."""
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object, not {schema!r}")
        unknown = set(schema) - ANNOTATIONS - set(_KEYWORDS)
        if unknown:
            raise SchemaError(f"{where}: keyword(s) {sorted(unknown)} not understood")
        for name, sub in {**schema.get("properties", {}), **schema.get("$defs", {})}.items():
            self.lint(sub, f"{where}.{name}")
        for i, sub in enumerate(schema.get("anyOf", [])):
            self.lint(sub, f"{where}|{i}")
        for keyword in ("items", "additionalProperties"):
            if isinstance(schema.get(keyword), Mapping):
                self.lint(schema[keyword], f"{where}.{keyword}")

    def _ref(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        self.check(value, self.resolve(schema["$ref"]), where)

    def _type(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, n) for n in names):
            raise SchemaError(f"{where}: {value!r} is not of type {names}")

    def _any_of(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        errors = []
        for option in schema["anyOf"]:
            try:
                self.check(value, option, where)
                return
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(f"{where}: no anyOf option matches: {errors}")

    def _enum(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if value not in schema["enum"]:
            raise SchemaError(f"{where}: {value!r} not in {schema['enum']}")

    def _const(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if value != schema["const"]:
            raise SchemaError(f"{where}: {value!r} != {schema['const']!r}")

    def _properties(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            return
        for key, sub in schema["properties"].items():
            if key in value:
                self.check(value[key], sub, f"{where}.{key}")

    def _required(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if isinstance(value, dict):
            missing = [k for k in schema["required"] if k not in value]
            if missing:
                raise SchemaError(f"{where}: required key(s) {missing} missing")

    def _additional(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            return
        extra = [k for k in value if k not in schema.get("properties", {})]
        rule = schema["additionalProperties"]
        if rule is False and extra:
            raise SchemaError(f"{where}: key(s) {extra} not in the schema")
        if isinstance(rule, Mapping):
            for key in extra:
                self.check(value[key], rule, f"{where}.{key}")

    def _items(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.check(item, schema["items"], f"{where}[{i}]")

    def _bounds(self, value: Any, schema: Mapping[str, Any], where: str) -> None:
        checks = {
            "minimum": lambda v, b: v >= b,
            "maximum": lambda v, b: v <= b,
            "exclusiveMinimum": lambda v, b: v > b,
            "exclusiveMaximum": lambda v, b: v < b,
            "minLength": lambda v, b: len(v) >= b,
            "maxLength": lambda v, b: len(v) <= b,
            "minItems": lambda v, b: len(v) >= b,
            "maxItems": lambda v, b: len(v) <= b,
        }
        for keyword, ok in checks.items():
            if keyword in schema and not ok(value, schema[keyword]):
                raise SchemaError(f"{where}: {value!r} breaks {keyword} {schema[keyword]}")


_BOUNDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
_KEYWORDS: dict[str, Any] = {
    "$ref": SchemaChecker._ref,
    "type": SchemaChecker._type,
    "anyOf": SchemaChecker._any_of,
    "enum": SchemaChecker._enum,
    "const": SchemaChecker._const,
    "properties": SchemaChecker._properties,
    "required": SchemaChecker._required,
    "additionalProperties": SchemaChecker._additional,
    "items": SchemaChecker._items,
    # every bound present is checked by one call
    **dict.fromkeys(_BOUNDS, None),
}
