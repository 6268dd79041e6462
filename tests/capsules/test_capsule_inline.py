"""Calls from trio: short calls of capsules that cannot change anything run on the event loop, others on a worker thread."""

from __future__ import annotations

import logging

import pytest
import trio

from capsule_testkit import ALLOC_WAT, LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules import calls
from hypermesh.capsules.errors import CallError
from hypermesh.capsules.sandbox import CallBudget, CoreSandbox

# Logs one line, burns ~12 M fuel (more than the inline budget of 1 M), then echoes.
BURN_WAT = """
(module
  (import "hypermesh" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "burning")""" + ALLOC_WAT + """
  (func (export "burn") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (call $log (i32.const 0) (i32.const 7))
    (local.set $i (i32.const 3000000))
    (loop $more
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $more (local.get $i)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    (call $log (i32.const 0) (i32.const 7))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
)
"""


@pytest.fixture
def handoffs(monkeypatch) -> list[str]:
    """The functions handed to a worker thread by ``trio.to_thread.run_sync``.

    The inline budget's deadline is lifted, so that whether a call stays
    inline depends on its fuel only, not on how busy the machine is.
    """
    monkeypatch.setattr(calls, "INLINE_BUDGET", CallBudget(fuel=calls.INLINE_BUDGET.fuel, timeout_ms=60_000))
    handed: list[str] = []
    run_sync = trio.to_thread.run_sync

    async def recording(fn, *args, **kwargs):
        handed.append(getattr(fn, "__name__", repr(fn)))
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", recording)
    return handed


def install(runtime, tmp_path, doc, code):
    capsule = runtime.install(write_capsule(tmp_path / doc["name"], doc, code))
    runtime.activate(capsule.cid)
    return capsule


def test_a_short_call_of_a_side_effect_free_module_runs_on_the_event_loop(runtime, tmp_path, handoffs, caplog):
    install(runtime, tmp_path, manifest("tests.burn", entries=("burn", "echo"), requires=("log",), fuel=100_000_000), BURN_WAT)
    with caplog.at_level(logging.INFO, logger="hypermesh.capsules"):
        result = trio.run(runtime.call_async, "tests.burn", "echo", b"short")
    assert result.output == b"short" and handoffs == []
    assert [r.getMessage().endswith("burning") for r in caplog.records] == [True]  # held, then logged once


def test_a_call_run_on_the_event_loop_still_lets_other_tasks_run(runtime, tmp_path, handoffs):
    # Every trio async call is a checkpoint: a caller looping over inline calls
    # must not starve the rest of the node (its network, a hot swap).
    install(runtime, tmp_path, manifest("tests.burn", entries=("burn", "echo"), requires=("log",), fuel=100_000_000), BURN_WAT)
    calls_before_other_task_ran = []

    async def main():
        calls_made = 0

        async def other_task():
            calls_before_other_task_ran.append(calls_made)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            for _ in range(50):
                await runtime.call_async("tests.burn", "echo", b"short")
                calls_made += 1

    trio.run(main)
    assert handoffs == []  # all inline
    assert calls_before_other_task_ran and calls_before_other_task_ran[0] < 50


def test_a_call_over_the_inline_budget_runs_again_in_full_and_logs_once(runtime, tmp_path, handoffs, caplog):
    install(runtime, tmp_path, manifest("tests.burn", entries=("burn", "echo"), requires=("log",), fuel=100_000_000), BURN_WAT)
    with caplog.at_level(logging.INFO, logger="hypermesh.capsules"):
        result = trio.run(runtime.call_async, "tests.burn", "burn", b"long")
    assert result.output == b"long" and handoffs == ["call"]
    assert result.fuel_used > 1_000_000  # the full run's fuel, not the cut attempt's
    assert [r.getMessage().endswith("burning") for r in caplog.records] == [True]


def test_a_spinning_call_from_trio_fails_on_its_own_limit(runtime, tmp_path, handoffs):
    install(runtime, tmp_path, manifest("tests.spin", fuel=10_000_000, timeout_ms=5000), LIMITS_WAT)
    with pytest.raises(CallError) as failure:
        trio.run(runtime.call_async, "tests.spin", "spin", b"")
    # The inline attempt was cut short by its budget; the worker's run hit the capsule's own fuel.
    assert failure.value.kind == "fuel" and "10000000 units" in str(failure.value) and handoffs == ["call"]


def test_capsules_with_side_effects_always_run_on_a_worker_thread(runtime, tmp_path, handoffs):
    install(runtime, tmp_path, manifest("tests.kv", requires=("kv",)), LIMITS_WAT)
    assert trio.run(runtime.call_async, "tests.kv", "echo", b"x").output == b"x"
    assert handoffs == ["call"]


@pytest.mark.parametrize("function, data", [("echo", b"short"), ("burn", b"long")])
def test_calls_from_trio_with_the_real_budget_give_the_same_results(runtime, tmp_path, caplog, function, data):
    # Whether the 2 ms deadline cuts the first attempt short depends on the machine: the outcome may not.
    install(runtime, tmp_path, manifest("tests.burn", entries=("burn", "echo"), requires=("log",), fuel=100_000_000), BURN_WAT)
    with caplog.at_level(logging.INFO, logger="hypermesh.capsules"):
        assert trio.run(runtime.call_async, "tests.burn", function, data).output == data
    assert [r.getMessage().endswith("burning") for r in caplog.records] == [True]


@pytest.fixture
def attempts(monkeypatch) -> list:
    """The budget of every sandbox call (None: a full run)."""
    seen: list = []
    call = CoreSandbox.call

    def recording(self, function, data, budget=None):
        seen.append(budget)
        return call(self, function, data, budget)

    monkeypatch.setattr(CoreSandbox, "call", recording)
    return seen


def test_a_function_that_ran_out_of_the_budgets_fuel_is_not_tried_inline_again(runtime, tmp_path, handoffs, attempts):
    install(runtime, tmp_path, manifest("tests.burn", entries=("burn", "echo"), requires=("log",), fuel=100_000_000), BURN_WAT)
    for _ in range(2):
        assert trio.run(runtime.call_async, "tests.burn", "burn", b"long").output == b"long"
    assert attempts == [calls.INLINE_BUDGET, None, None] and handoffs == ["call", "call"]
    assert trio.run(runtime.call_async, "tests.burn", "echo", b"short").output == b"short"  # other functions still are
    assert attempts[-1] == calls.INLINE_BUDGET


def test_capsules_with_more_memory_than_the_inline_limit_run_on_a_worker_thread(runtime, tmp_path, handoffs, attempts):
    install(runtime, tmp_path, manifest("tests.big", memory=calls.INLINE_MAX_MEMORY_BYTES * 2), LIMITS_WAT)
    assert trio.run(runtime.call_async, "tests.big", "echo", b"x").output == b"x"
    assert attempts == [None] and handoffs == ["call"]
