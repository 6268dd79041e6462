"""`invoke` respects trust zones: a capsule calls only capsules of its own zone or a less trusted one."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from capsule_testkit import LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.errors import CallError

# Forwards its input to examples.echo/reverse; returns "denied" when invoke fails.
INVOKER_WAT = """
(module
  (import "hypermesh" "invoke" (func $invoke (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "examples.echo")
  (data (i32.const 16) "reverse")
  (data (i32.const 32) "denied")
  (func (export "hm_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "forward") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (local.set $n (call $invoke (i32.const 0) (i32.const 13) (i32.const 16) (i32.const 7)
                                (local.get $ptr) (local.get $len) (i32.const 1024) (i32.const 1024)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (return (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 6)))))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
"""
CALLEE_WAT = LIMITS_WAT.replace('(export "echo")', '(export "reverse")')


def deploy(runtime, tmp_path, caller_zone: str, callee_zone: str, callee_requires=()):
    callee = runtime.install(write_capsule(tmp_path / "callee", manifest("examples.echo", entries=("reverse",), zone=callee_zone,
                                                                          requires=callee_requires), CALLEE_WAT))
    runtime.activate(callee.cid)
    caller = runtime.install(write_capsule(tmp_path / "caller", manifest("tests.invoker", entries=("forward",), zone=caller_zone,
                                                                          requires=["invoke"]), INVOKER_WAT))
    runtime.activate(caller.cid)


def test_tenant_capsule_cannot_call_a_system_capsule(runtime, tmp_path, caplog):
    deploy(runtime, tmp_path, "tenant", "system")
    with caplog.at_level(logging.WARNING, logger="hypermesh.capsules"):
        assert runtime.call("tests.invoker", "forward", b"hello").output == b"denied"
    assert any("may not call" in r.getMessage() and "more trusted zone system" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("caller_zone, callee_zone", [("tenant", "tenant"), ("tenant", "session"), ("system", "ephemeral")])
def test_calls_within_or_down_the_zones_work(runtime, tmp_path, caller_zone, callee_zone):
    deploy(runtime, tmp_path, caller_zone, callee_zone)
    assert runtime.call("tests.invoker", "forward", b"hello").output == b"hello"


def test_session_capsule_cannot_call_a_tenant_capsule(runtime, tmp_path):
    deploy(runtime, tmp_path, "session", "tenant")
    assert runtime.call("tests.invoker", "forward", b"hello").output == b"denied"


def test_callee_capability_the_callers_zone_lacks_is_refused(runtime, policy, tmp_path):
    # Here the tenant zone grants no kv, the session zone does: a tenant capsule must
    # not reach kv through a session capsule.
    policy.zone_limits["tenant"] = dataclasses.replace(policy.zone_limits["tenant"], capabilities=frozenset({"log", "invoke"}))
    deploy(runtime, tmp_path, "tenant", "session", callee_requires=["kv"])
    assert runtime.call("tests.invoker", "forward", b"hello").output == b"denied"


def test_direct_calls_are_not_restricted_by_zone(runtime, tmp_path):
    deploy(runtime, tmp_path, "tenant", "system")
    assert runtime.call("examples.echo", "reverse", b"hello").output == b"hello"
    with pytest.raises(CallError):
        runtime.call("examples.echo", "absent", b"")
