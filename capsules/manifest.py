"""The capsule manifest: what a capsule is, exports, needs and may consume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema

from . import schema
from .errors import FormatError
from .layout import MAX_JSON_BYTES

KIND_MODULE = "module"
KIND_COMPONENT = "component"
COMPONENT_ENTRY = "handle"
# Exports of a core module that the host calls itself (see docs/CAPSULES.md):
# an entry point of one of these names would replace its signature check.
ALLOC_EXPORT = "hm_alloc"
MEMORY_EXPORT = "memory"
RESERVED_MODULE_EXPORTS = (ALLOC_EXPORT, MEMORY_EXPORT)
TRUST_ZONES = ("system", "tenant", "session", "ephemeral")
CAPABILITIES = ("log", "kv", "clock", "random", "invoke")
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EntryPoint:
    name: str
    io: str  # "bytes" or "json"
    input_schema: Any
    output_schema: Any


@dataclass(frozen=True, slots=True)
class Resources:
    fuel: int
    memory_bytes: int
    timeout_ms: int
    max_output_bytes: int


@dataclass(frozen=True, slots=True)
class HealthCheck:
    function: str
    input: bytes
    expect_output: bytes | None


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    kind: str
    impl: str
    entry_points: dict[str, EntryPoint]
    requires: frozenset[str]
    provides: tuple[str, ...]
    trust_zone: str
    resources: Resources
    health_check: HealthCheck | None
    document: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def parse_manifest(data: bytes) -> Manifest:
    """Decode and validate manifest.json, including the schemas it embeds."""
    doc = schema.decode_document(data, schema.MANIFEST, "manifest.json", MAX_JSON_BYTES)
    entries = {}
    for name, entry in doc["entry_points"].items():
        for key in ("input_schema", "output_schema"):
            if key in entry:
                try:
                    jsonschema.validators.validator_for(entry[key]).check_schema(entry[key])
                except jsonschema.SchemaError as exc:
                    raise FormatError(f"manifest.json entry_points/{name}/{key} is not a JSON Schema: {exc.message}") from None
        entries[name] = EntryPoint(name, entry["io"], entry.get("input_schema", True), entry.get("output_schema", True))
    if doc["kind"] == KIND_MODULE and (reserved := sorted(set(entries) & set(RESERVED_MODULE_EXPORTS))):
        raise FormatError(f"manifest.json entry point {reserved[0]!r} is a name reserved for the core-module ABI {RESERVED_MODULE_EXPORTS}")
    if doc["kind"] == KIND_COMPONENT and set(entries) != {COMPONENT_ENTRY}:
        raise FormatError(f"a component capsule exports exactly one entry point, {COMPONENT_ENTRY!r}; manifest lists {sorted(entries)}")
    health = None
    if "health_check" in doc:
        check = doc["health_check"]
        if check["function"] not in entries:
            raise FormatError(f"manifest.json health_check calls {check['function']!r}, which is not an entry point")
        expect = check.get("expect_output")
        health = HealthCheck(check["function"], check["input"].encode("utf-8"), None if expect is None else expect.encode("utf-8"))
    res = doc["resources"]
    return Manifest(
        name=doc["name"],
        version=doc["version"],
        kind=doc["kind"],
        impl=doc["impl"],
        entry_points=entries,
        requires=frozenset(doc["capabilities"]["requires"]),
        provides=tuple(doc["capabilities"]["provides"]),
        trust_zone=doc["trust_zone"],
        resources=Resources(res["fuel"], res["memory_bytes"], res["timeout_ms"], res.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)),
        health_check=health,
        document=doc,
    )
