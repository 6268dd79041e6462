"""Strict JSON decoding and validation against the shipped JSON Schemas.

Every JSON document a capsule or a peer hands us goes through
:func:`decode_document`: bounded size, UTF-8, no duplicate keys, no NaN, then
its schema. Errors name the document and the JSON path that failed.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

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
