"""The kv capability's data belongs to one signer's capsule name, never to the name alone."""

from __future__ import annotations

from capsule_testkit import BUILDER, STRANGER, manifest, write_capsule
from hypermesh.capsules.lifecycle import State

# Each call adds one to the ASCII digit stored under "n" (absent: "0") and returns it.
COUNTER_WAT = """
(module
  (import "hypermesh" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "hypermesh" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "n")
  (func (export "hm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "increment") (param i32 i32) (result i64)
    (if (i32.lt_s (call $get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1)) (i32.const 0))
      (then (i32.store8 (i32.const 16) (i32.const 48))))
    (i32.store8 (i32.const 16) (i32.add (i32.load8_u (i32.const 16)) (i32.const 1)))
    (drop (call $set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 1)))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
)
"""


def counter(runtime, directory, signer, zone, version):
    doc = manifest("tests.counter", version, entries=("increment",), requires=["kv"], zone=zone)
    capsule = runtime.install(write_capsule(directory, doc, COUNTER_WAT, signer=signer))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    return capsule


def increments(runtime, capsule, count):
    runtime.activate(capsule.cid)
    try:
        return [runtime.call("tests.counter", "increment", b"").output for _ in range(count)]
    finally:
        runtime.suspend(capsule.cid)


def test_same_named_capsule_of_another_signer_does_not_see_the_data(runtime, policy, tmp_path):
    policy.trust(STRANGER.peer_id, ["session"])
    tenant = counter(runtime, tmp_path / "tenant", BUILDER, "tenant", "1.0.0")
    intruder = counter(runtime, tmp_path / "intruder", STRANGER, "session", "1.0.1")
    assert increments(runtime, tenant, 3) == [b"1", b"2", b"3"]
    # The stranger's capsule starts from nothing, and its writes do not reach the tenant's data.
    assert increments(runtime, intruder, 2) == [b"1", b"2"]
    assert increments(runtime, tenant, 1) == [b"4"]


def test_next_version_by_the_same_signer_keeps_the_data(runtime, tmp_path):
    first = counter(runtime, tmp_path / "v1", BUILDER, "tenant", "1.0.0")
    second = counter(runtime, tmp_path / "v2", BUILDER, "tenant", "1.1.0")
    assert increments(runtime, first, 2) == [b"1", b"2"]
    assert increments(runtime, second, 1) == [b"3"]
