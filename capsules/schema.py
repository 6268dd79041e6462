"""Strict JSON decoding and validation against the shipped JSON Schemas.

Every JSON document a capsule or a peer hands us goes through
:func:`decode_document`: bounded size, UTF-8, no duplicate keys, no NaN, then
its schema. Errors name the document and the JSON path that failed.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any, Callable

import jsonschema

from .errors import FormatError

MANIFEST = "manifest"
RECEIPT = "receipt"
TRUST_POLICY = "trust-policy"
CHUNK_LIST = "chunk-list"
EXECUTION_RECEIPT = "execution-receipt"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    text = resources.files(__package__).joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# What quick_check understands; a schema using anything else is left to jsonschema.
_QUICK_TOP = {"$schema", "$id", "title", "description", "type", "additionalProperties", "required", "properties"}
_QUICK_STRING = {"type", "pattern", "minLength", "maxLength", "description"}
_QUICK_INTEGER = {"type", "minimum", "maximum", "description"}


@cache
def quick_check(name: str) -> Callable[[Any], bool] | None:
    """A fast acceptance test for a flat object schema (one JSON object of strings, integers and
    constants), or None for a schema using more than that.

    It only ever says True for a document jsonschema accepts; False sends the
    document to jsonschema, which decides and words the error. (jsonschema
    walks the schema afresh for every document: ~10x slower on the execution
    receipt, which every remote run checks.)
    """
    schema = json.loads(resources.files(__package__).joinpath("schemas", f"{name}.schema.json").read_text("utf-8"))
    if set(schema) - _QUICK_TOP or schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        return None
    checks = {}
    for key, rule in schema.get("properties", {}).items():
        check = _quick_property(rule)
        if check is None:
            return None
        checks[key] = check
    required = frozenset(schema.get("required", ()))
    if not required <= set(checks):
        return None

    def accepts(document: Any) -> bool:
        return (isinstance(document, dict) and required <= document.keys() <= checks.keys()
                and all(checks[key](value) for key, value in document.items()))

    return accepts


def _quick_property(rule: dict) -> Callable[[Any], bool] | None:
    if set(rule) <= {"const", "description"} and isinstance(rule.get("const"), str):
        expected = rule["const"]
        return lambda value: isinstance(value, str) and value == expected
    if rule.get("type") == "string" and set(rule) <= _QUICK_STRING:
        pattern = re.compile(rule.get("pattern", ""))  # jsonschema searches with Python's re too
        shortest, longest = rule.get("minLength", 0), rule.get("maxLength", float("inf"))
        return lambda value: isinstance(value, str) and shortest <= len(value) <= longest and pattern.search(value) is not None
    if rule.get("type") == "integer" and set(rule) <= _QUICK_INTEGER:
        low, high = rule.get("minimum", float("-inf")), rule.get("maximum", float("inf"))
        return lambda value: type(value) is int and low <= value <= high
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FormatError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise FormatError(f"non-standard JSON constant {name}")


def parse_json(data: bytes, what: str, limit: int) -> Any:
    """Decode UTF-8 JSON of at most ``limit`` bytes, refusing duplicate keys and NaN."""
    if len(data) > limit:
        raise FormatError(f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from None


def validate(document: Any, schema_name: str, what: str) -> None:
    """Raise :class:`FormatError` naming the first schema violation (JSON path, message)."""
    quick = quick_check(schema_name)
    if quick is not None and quick(document):
        return
    errors = sorted(validator(schema_name).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(part) for part in first.absolute_path) or "(top level)"
        raise FormatError(f"{what} does not match its schema at {where}: {first.message}")


def decode_document(data: bytes, schema_name: str, what: str, limit: int) -> Any:
    document = parse_json(data, what, limit)
    validate(document, schema_name, what)
    return document


def canonical_json(document: Any) -> bytes:
    """The byte form we hash and sign: sorted keys, no whitespace, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
