"""Hot swap under a steady stream of calls: zero failures while v1 is replaced, or v2 rolled back."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from capsule_testkit import LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.lifecycle import State

WORKERS = 4
MAX_CALLS_PER_WORKER = 20_000  # bounds every loop even if an event never fires


@dataclass
class Load:
    """Callers hammering one capsule name, counting what each version answered."""

    runtime: object
    name: str
    calls: int = 0
    failures: list = field(default_factory=list)
    served_by: dict = field(default_factory=dict)
    stop: trio.Event = field(default_factory=trio.Event)
    milestones: list = field(default_factory=list)

    def reached(self, count: int) -> trio.Event:
        event = trio.Event()
        self.milestones.append((self.calls + count, event))
        return event

    async def worker(self, index: int) -> None:
        for n in range(MAX_CALLS_PER_WORKER):
            if self.stop.is_set():
                return
            payload = f"{index}:{n}".encode()
            try:
                result = await self.runtime.call_async(self.name, "echo", payload)
                assert result.output == payload
                self.served_by[result.capsule] = self.served_by.get(result.capsule, 0) + 1
            except Exception as exc:  # every failure is recorded, none may happen
                self.failures.append(repr(exc))
            self.calls += 1
            for target, event in self.milestones:
                if self.calls >= target:
                    event.set()


def install(runtime, tmp_path, version, code=LIMITS_WAT, **extra):
    doc = manifest(version=version, **extra)
    capsule = runtime.install(write_capsule(tmp_path / version, doc, code))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    return capsule


async def run_swap(runtime, v2, **swap_options):
    load = Load(runtime, "tests.limits")
    report = None
    async with trio.open_nursery() as nursery:
        warmed = load.reached(200)
        for index in range(WORKERS):
            nursery.start_soon(load.worker, index)
        with trio.fail_after(60):
            await warmed.wait()
            report = await runtime.hot_swap(v2.cid, **swap_options)
            await load.reached(200).wait()
        load.stop.set()
    return load, report


CHECK = {"function": "echo", "input": "ping", "expect_output": "ping"}


async def test_swap_v1_to_v2_under_load_has_zero_failures(runtime, tmp_path):
    v1 = install(runtime, tmp_path, "1.0.0", health_check=CHECK)
    v2 = install(runtime, tmp_path, "2.0.0", health_check=CHECK)
    runtime.activate(v1.cid)
    events = []
    runtime.bus.subscribe(events.append)

    load, report = await run_swap(runtime, v2, probation_calls=50)

    assert load.failures == []
    assert report.outcome == "completed" and report.drained
    assert runtime.serving("tests.limits").cid == v2.cid
    assert v1.state == State.UNLOADED and v2.state == State.ACTIVE
    assert load.served_by.get(v1.cid, 0) > 0 and load.served_by.get(v2.cid, 0) > 0
    assert [e.topic for e in events if e.topic.startswith("swap.")] == ["swap.switched", "swap.completed"]


async def test_v2_failing_its_health_check_never_serves(runtime, tmp_path):
    v1 = install(runtime, tmp_path, "1.0.0", health_check=CHECK)
    broken = install(runtime, tmp_path, "2.0.0", health_check={**CHECK, "expect_output": "something else"})
    runtime.activate(v1.cid)

    load, report = await run_swap(runtime, broken)

    assert load.failures == []
    assert report.outcome == "rolled_back" and "health check echo returned" in report.reason
    assert runtime.serving("tests.limits").cid == v1.cid
    assert broken.state == State.UNLOADED
    assert load.served_by.get(broken.cid, 0) == 0


async def test_v2_failing_on_probation_rolls_back_without_failed_calls(runtime, tmp_path):
    v1 = install(runtime, tmp_path, "1.0.0", health_check=CHECK)
    # Passes its health check (on "health") but traps on every real call.
    trapping = LIMITS_WAT.replace(
        '(func (export "echo") (param $ptr i32) (param $len i32) (result i64)\n',
        '(func (export "echo") (param $ptr i32) (param $len i32) (result i64)\n    unreachable\n')
    broken = install(runtime, tmp_path, "2.0.0", trapping, health_check={"function": "health", "input": ""})
    runtime.activate(v1.cid)
    events = []
    runtime.bus.subscribe(events.append)

    load, report = await run_swap(runtime, broken, probation_calls=100)

    assert load.failures == []
    assert report.outcome == "rolled_back" and "failed on probation" in report.reason and "unreachable" in report.reason
    assert runtime.serving("tests.limits").cid == v1.cid
    assert v1.state == State.ACTIVE and broken.state == State.UNLOADED
    assert "swap.rolled_back" in [e.topic for e in events]


async def test_cancelled_swap_leaves_the_new_version_serving(runtime, tmp_path):
    v1 = install(runtime, tmp_path, "1.0.0")
    v2 = install(runtime, tmp_path, "2.0.0")
    runtime.activate(v1.cid)
    switched = trio.Event()
    runtime.bus.subscribe(lambda event: event.topic == "swap.switched" and switched.set())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.hot_swap, v2.cid)  # no calls arrive: probation would wait its full time
        await switched.wait()
        nursery.cancel_scope.cancel()
    assert runtime.serving("tests.limits").cid == v2.cid
    assert v1.state == State.SUSPENDED
    assert runtime.call("tests.limits", "echo", b"x").output == b"x"
    await runtime.hot_swap(v1.cid, probation_s=0.05)  # a later swap is not blocked by the cancelled one
    assert runtime.serving("tests.limits").cid == v1.cid
