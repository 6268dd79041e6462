"""Export signatures of core modules: every export the host calls is checked before any unchecked call.

The calls run in a worker process: a signature the host gets wrong kills the
process (SIGILL), which must show up as a failed assertion, not a dead pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

WORKER = Path(__file__).parent / "abi_fuzz_worker.py"
VALUE_TYPES = ("i32", "i64", "f32", "f64")
ALLOC_SIGNATURE = (("i32",), ("i32",))
ENTRY_SIGNATURE = (("i32", "i32"), ("i64",))


class Worker:
    """The worker process; restarted after it died, so one death fails one example only."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def ask(self, wat: str, entries: list[str]) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True)
        self.process.stdin.write(json.dumps({"wat": wat, "entries": entries}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            return {"outcome": "died", "detail": f"exit status {self.process.wait(timeout=30)}"}
        return json.loads(line)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    worker = Worker()
    yield worker
    worker.close()


def func(name: str, signature) -> str:
    params, results = signature
    param_text = f"(param {' '.join(params)})" if params else ""
    result_text = f"(result {' '.join(results)})" if results else ""
    body = " ".join(f"({kind}.const 0)" for kind in results)
    return f'(func (export "{name}") {param_text} {result_text} {body})'


def module(alloc, entries: dict, memory: bool = True) -> str:
    """A module exporting ``hm_alloc`` with ``alloc`` (unless an entry point has that name) and each entry point."""
    parts = ['(memory (export "memory") 1)'] if memory else []
    if "hm_alloc" not in entries and alloc is not None:
        parts.append(func("hm_alloc", alloc))
    parts.extend(func(name, signature) for name, signature in entries.items())
    return "(module " + " ".join(parts) + ")"


def test_entry_point_named_hm_alloc_is_refused_and_the_process_survives(worker):
    # The reproduction: an entry point named hm_alloc with the entry point signature.
    answer = worker.ask(module(None, {"hm_alloc": ENTRY_SIGNATURE}), ["hm_alloc"])
    assert answer["outcome"] == "refused", answer
    assert "hm_alloc" in answer["detail"] and "reserved" in answer["detail"], answer


def test_entry_point_named_memory_is_refused(worker):
    answer = worker.ask(module(ALLOC_SIGNATURE, {"run": ENTRY_SIGNATURE}), ["run", "memory"])
    assert answer["outcome"] == "refused", answer
    assert "memory" in answer["detail"] and "reserved" in answer["detail"], answer


def test_correct_exports_run(worker):
    answer = worker.ask(module(ALLOC_SIGNATURE, {"run": ENTRY_SIGNATURE}), ["run"])
    assert answer == {"outcome": "ok", "detail": [""]}


signatures = st.one_of(
    st.sampled_from([ALLOC_SIGNATURE, ENTRY_SIGNATURE]),
    st.tuples(st.lists(st.sampled_from(VALUE_TYPES), max_size=3).map(tuple),
              st.lists(st.sampled_from(VALUE_TYPES), max_size=2).map(tuple)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(alloc=st.one_of(st.none(), signatures), run=signatures, entry_names=st.sampled_from([("run",), ("run", "hm_alloc"), ("hm_alloc",)]),
       alloc_as_entry=signatures, memory=st.booleans())
@example(alloc=None, run=ENTRY_SIGNATURE, entry_names=("hm_alloc",), alloc_as_entry=ENTRY_SIGNATURE, memory=True)
@example(alloc=ALLOC_SIGNATURE, run=ENTRY_SIGNATURE, entry_names=("run", "hm_alloc"), alloc_as_entry=ENTRY_SIGNATURE, memory=True)
def test_export_signatures_never_kill_the_process(worker, alloc, run, entry_names, alloc_as_entry, memory):
    entries = {name: (run if name == "run" else alloc_as_entry) for name in entry_names}
    answer = worker.ask(module(alloc, entries, memory), list(entry_names))
    assert answer["outcome"] != "died", answer
    exact = memory and alloc == ALLOC_SIGNATURE and entry_names == ("run",) and run == ENTRY_SIGNATURE
    # Only exactly the ABI's signatures run; everything else is refused before any call.
    assert answer["outcome"] == ("ok" if exact else "refused"), answer
