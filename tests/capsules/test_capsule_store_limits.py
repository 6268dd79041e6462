"""The capsule's whole store is limited: one linear memory, bounded tables, for core modules and components.

A limit per linear memory is not a limit on the capsule: a second memory, or
a table grown by millions of elements, would each get their own allowance.
"""

from __future__ import annotations

import struct

import pytest

from capsule_testkit import manifest, write_capsule
from hypermesh.capsules.errors import CallError, LinkError
from hypermesh.capsules.lifecycle import State

LIMIT = 256 * 1024  # four pages
# Ample: these tests are about memory, not fuel.
FUEL = 100_000_000_000
HUGE_TABLE_GROW = 16 * 1024 * 1024

# Core module, bytes ABI. Each entry writes two i32 at 32 and returns that range.
CORE_WAT = """
(module
  (memory $main (export "memory") 1)
  (table $t 1 funcref)
  (func (export "hm_alloc") (param i32) (result i32) (i32.const 1024))
  (func $report (param $a i32) (param $b i32) (result i64)
    (i32.store (i32.const 32) (local.get $a))
    (i32.store (i32.const 36) (local.get $b))
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 8)))
  ;; grows the table by 16 M elements: (result of table.grow, table size)
  (func (export "table_hog") (param i32 i32) (result i64)
    (call $report (table.grow $t (ref.null func) (i32.const 16777216)) (table.size $t)))
  ;; grows its memory until memory.grow fails: (result of the failing grow, pages)
  (func (export "memory_hog") (param i32 i32) (result i64)
    (local $r i32)
    (block $done (loop $more
      (local.set $r (memory.grow (i32.const 1)))
      (br_if $done (i32.eq (local.get $r) (i32.const -1)))
      (br $more)))
    (call $report (local.get $r) (memory.size)))
  SECOND_MEMORY
)
"""
# A second memory of its own, grown until it fails: (result of the failing grow, its pages)
SECOND_MEMORY = """
  (memory $second 1)
  (func (export "second_hog") (param i32 i32) (result i64)
    (local $r i32)
    (block $done (loop $more
      (local.set $r (memory.grow $second (i32.const 1)))
      (br_if $done (i32.eq (local.get $r) (i32.const -1)))
      (br $more)))
    (call $report (local.get $r) (memory.size $second)))
"""

# A component exporting `handle: func(list<u8>) -> list<u8>` whose core module
# does the same on its own memory and table: input "t" grows the table,
# anything else the memory.
COMPONENT_WAT = """
(component
  (core module $m
    (memory (export "memory") 1)
    (table $t 1 funcref)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "handle") (param $ptr i32) (param $len i32) (result i32)
      (local $r i32)
      (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 116))
        (then
          (i32.store (i32.const 32) (table.grow $t (ref.null func) (i32.const 16777216)))
          (i32.store (i32.const 36) (table.size $t)))
        (else
          (block $done (loop $more
            (local.set $r (memory.grow (i32.const 1)))
            (br_if $done (i32.eq (local.get $r) (i32.const -1)))
            (br $more)))
          (i32.store (i32.const 32) (local.get $r))
          (i32.store (i32.const 36) (memory.size))))
      (i32.store (i32.const 16) (i32.const 32))
      (i32.store (i32.const 20) (i32.const 8))
      (i32.const 16))
    SECOND_MEMORY
  )
  (core instance $i (instantiate $m))
  (func (export "handle") (param "input" (list u8)) (result (list u8))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
)
"""


def pair(output: bytes) -> tuple[int, int]:
    return struct.unpack("<ii", output)


def install_core(runtime, tmp_path, second_memory: bool = False, name: str = "tests.store"):
    code = CORE_WAT.replace("SECOND_MEMORY", SECOND_MEMORY if second_memory else "")
    entries = ("table_hog", "memory_hog") + (("second_hog",) if second_memory else ())
    capsule = runtime.install(write_capsule(tmp_path / name, manifest(name, entries=entries, memory=LIMIT, fuel=FUEL), code))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    return capsule


def install_component(runtime, tmp_path, second_memory: bool = False, name: str = "tests.store-component"):
    code = COMPONENT_WAT.replace("SECOND_MEMORY", '(memory $second 1) (func (export "touch") (result i32) (memory.size $second))'
                                 if second_memory else "")
    doc = manifest(name, kind="component", entries=("handle",), memory=LIMIT, fuel=FUEL)
    capsule = runtime.install(write_capsule(tmp_path / name, doc, code))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    return capsule


def core(runtime, tmp_path) -> str:
    capsule = install_core(runtime, tmp_path)
    runtime.activate(capsule.cid)
    return capsule.name


def component(runtime, tmp_path) -> str:
    capsule = install_component(runtime, tmp_path)
    runtime.activate(capsule.cid)
    return capsule.name


def test_core_table_grow_of_16m_elements_is_refused(runtime, tmp_path):
    name = core(runtime, tmp_path)
    assert pair(runtime.call(name, "table_hog", b"").output) == (-1, 1)


def test_core_memory_grows_to_the_limit_only(runtime, tmp_path):
    name = core(runtime, tmp_path)
    assert pair(runtime.call(name, "memory_hog", b"").output) == (-1, LIMIT // 65536)


def test_component_memory_grow_stops_at_the_limit(runtime, tmp_path):
    name = component(runtime, tmp_path)
    assert pair(runtime.call(name, "handle", b"m").output) == (-1, LIMIT // 65536)


def test_component_table_grow_of_16m_elements_is_refused(runtime, tmp_path):
    name = component(runtime, tmp_path)
    assert pair(runtime.call(name, "handle", b"t").output) == (-1, 1)


@pytest.mark.parametrize("install", [install_core, install_component], ids=["core", "component"])
def test_code_with_a_second_memory_is_refused_at_load(runtime, tmp_path, install):
    capsule = install(runtime, tmp_path, second_memory=True)
    with pytest.raises(LinkError, match="creates more than one linear memory or 4 tables; a capsule has one linear memory"):
        runtime.activate(capsule.cid)
    assert capsule.state == State.QUARANTINED and capsule.diagnostics[0].code == "link_error"


def test_core_module_whose_initial_table_exceeds_the_limit_cannot_run(runtime, tmp_path):
    capsule = runtime.install(write_capsule(tmp_path / "big", manifest("tests.big-table", entries=("memory_hog",), memory=LIMIT, fuel=FUEL),
                                            CORE_WAT.replace("(table $t 1 funcref)", "(table $t 1000000 funcref)").replace("SECOND_MEMORY", "")))
    runtime.activate(capsule.cid)
    with pytest.raises(CallError) as failure:
        runtime.call("tests.big-table", "memory_hog", b"")
    assert failure.value.kind == "memory" and "needs a table larger than its 2048 elements" in str(failure.value)
