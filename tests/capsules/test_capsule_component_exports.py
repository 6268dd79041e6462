"""The entry points the host calls on a component are checked against their WIT types when it is loaded."""

from __future__ import annotations

import pytest

from capsule_testkit import manifest, write_capsule
from hypermesh.capsules.errors import LinkError
from hypermesh.capsules.lifecycle import State

# `handle` typed HANDLE_PARAM -> list<u8> returning b"h", plus EXTRA.
COMPONENT_WAT = """
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "handle") (param i32 i32) (result i32)
      (i32.store8 (i32.const 40) (i32.const 104))
      (i32.store (i32.const 16) (i32.const 40))
      (i32.store (i32.const 20) (i32.const 1))
      (i32.const 16))
    (func (export "stdio32") (param i32))
    (func (export "stdio64") (param i64)))
  (core instance $i (instantiate $m))
  (func (export "handle") (param "input" HANDLE_PARAM) (result (list u8))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  EXTRA
)
"""
STDIO_U32 = '(func (export "handle-stdio") (param "input-length" u32) (canon lift (core func $i "stdio32")))'
STDIO_U64 = '(func (export "handle-stdio") (param "input-length" u64) (canon lift (core func $i "stdio64")))'


def activate(runtime, tmp_path, handle_param: str = "(list u8)", extra: str = "", name: str = "tests.exports"):
    doc = manifest(name, kind="component", entries=("handle",))
    capsule = runtime.install(write_capsule(tmp_path / name, doc, COMPONENT_WAT.replace("HANDLE_PARAM", handle_param)
                                            .replace("EXTRA", extra)))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    runtime.activate(capsule.cid)
    return capsule


def test_handle_taking_a_string_is_refused_at_load(runtime, tmp_path):
    with pytest.raises(LinkError, match=r"exports 'handle' with another type than func\(input: list<u8>\) -> list<u8>"):
        activate(runtime, tmp_path, handle_param="string")


def test_handle_stdio_of_the_wrong_type_is_refused_at_load(runtime, tmp_path):
    with pytest.raises(LinkError, match=r"exports 'handle-stdio' with another type than func\(input-length: u64\)"):
        activate(runtime, tmp_path, extra=STDIO_U32)


def test_handle_stdio_is_called_instead_of_handle_when_exported(runtime, tmp_path):
    activate(runtime, tmp_path, name="tests.handle-only")
    assert runtime.call("tests.handle-only", "handle", b"input").output == b"h"
    activate(runtime, tmp_path, extra=STDIO_U64, name="tests.with-stdio")
    # This handle-stdio writes nothing to stdout.
    assert runtime.call("tests.with-stdio", "handle", b"input").output == b""
