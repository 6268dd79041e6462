"""Every import of a component is checked when it is loaded, WASI ones included."""

from __future__ import annotations

import pytest

from capsule_testkit import manifest, write_capsule
from hypermesh.capsules.errors import LinkError
from hypermesh.capsules.lifecycle import State

# A component whose `handle` returns an empty list, importing IMPORT (unused).
COMPONENT_WAT = """
(component
  IMPORT
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "handle") (param i32 i32) (result i32)
      (i32.store (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (i32.const 16)))
  (core instance $i (instantiate $m))
  (func (export "handle") (param "input" (list u8)) (result (list u8))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
)
"""
KEYVALUE = '(import "wasi:keyvalue/store@0.2.0" (instance (export "open" (func))))'
RANDOM = '(import "wasi:random/random@0.2.0" (instance (export "get-random-u64" (func (result u64)))))'
CLOCK = '(import "wasi:clocks/monotonic-clock@0.2.0" (instance (export "now" (func (result u64)))))'
UNKNOWN_FUNCTION = '(import "wasi:random/random@0.2.0" (instance (export "get-random-u512" (func (result u64)))))'


def install(runtime, tmp_path, imported: str, requires=()):
    doc = manifest("tests.imports", kind="component", entries=("handle",), requires=requires)
    capsule = runtime.install(write_capsule(tmp_path / "c", doc, COMPONENT_WAT.replace("IMPORT", imported)))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    return capsule


def test_wasi_interface_nobody_provides_is_refused_at_activation(runtime, tmp_path):
    capsule = install(runtime, tmp_path, KEYVALUE)
    with pytest.raises(LinkError) as failure:
        runtime.activate(capsule.cid)
    assert "imports wasi:keyvalue/store@0.2.0, which this runtime does not provide" in str(failure.value)
    assert capsule.state == State.QUARANTINED and capsule.diagnostics[0].code == "link_error"


def test_wasi_function_the_runtime_lacks_is_refused_at_activation(runtime, tmp_path):
    capsule = install(runtime, tmp_path, UNKNOWN_FUNCTION, requires=["random"])
    with pytest.raises(LinkError) as failure:
        runtime.activate(capsule.cid)
    assert "get-random-u512" in str(failure.value) and "does not link" in str(failure.value)


@pytest.mark.parametrize("imported, capability", [(RANDOM, "random"), (CLOCK, "clock")])
def test_wasi_clock_and_random_need_their_capability(runtime, tmp_path, imported, capability):
    capsule = install(runtime, tmp_path, imported)
    with pytest.raises(LinkError) as failure:
        runtime.activate(capsule.cid)
    assert f"needs capability {capability!r} that its manifest does not require" in str(failure.value)


@pytest.mark.parametrize("imported, capability", [(RANDOM, "random"), (CLOCK, "clock")])
def test_declared_wasi_clock_and_random_link(runtime, tmp_path, imported, capability):
    capsule = install(runtime, tmp_path, imported, requires=[capability])
    runtime.activate(capsule.cid)
    assert runtime.call("tests.imports", "handle", b"x").output == b""
