"""Running capsule code: one fresh wasmtime store per call, with the capsule's limits.

A sandbox is built once per loaded capsule (linking is checked then, so an
undeclared import fails at load, never mid-call) and then creates a new
store for every call: fuel, a memory ceiling and an epoch deadline are set
on the store before any guest code runs, and nothing survives from one call
to the next except what the guest wrote through the ``kv`` capability.

Core-module ABI (see docs/CAPSULES.md): the module exports ``memory``,
``hm_alloc(len: i32) -> i32`` and, per entry point, ``name(ptr: i32, len: i32)
-> i64`` returning ``(out_ptr << 32) | out_len``.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import threading
from dataclasses import dataclass, field
from typing import Callable

import wasmtime
from wasmtime import component as wasm_component

from . import corecall
from .component_bytes import call_bytes_func
from .component_stdio import HelperThreads, StdioChannel
from .engine import CapsuleEngine, Code, code_digest
from .errors import CallError, LinkError
from .host import (CORE_IMPORT_CAPABILITY, CORE_IMPORT_MODULE, CORE_IMPORTS, MAX_LOG_BYTES, WIT_PACKAGE, HostServices,
                   core_func_type, wit_interface)
from .manifest import ALLOC_EXPORT, COMPONENT_ENTRY, MEMORY_EXPORT, RESERVED_MODULE_EXPORTS, Manifest, Resources

# Part of the link-check cache key: a marker written by an older, weaker
# check must not vouch for a module under this one.
LINK_CHECK_VERSION = 3
_ALLOC_SIGNATURE = ([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
_ENTRY_SIGNATURE = ([wasmtime.ValType.i32()] * 2, [wasmtime.ValType.i64()])
# A component exporting this gets every call's input on stdin and returns
# its output on stdout (component_stdio.py): wasmtime copies the bytes
# natively, where the C API's list<u8> takes one 32-byte value per byte.
STDIO_ENTRY = "handle-stdio"
MAX_INPUT_BYTES = 64 * 1024 * 1024
# wasmtime limits each linear memory and each table on its own; counting them
# makes the per-memory and per-table limits a limit on the whole store.
MAX_MEMORIES = 1
# componentize-py guests use two tables (5,676 elements in the main one).
MAX_TABLES = 4
TABLE_ELEMENT_BYTES = 8
# All tables together get at most this fraction of the memory budget.
TABLE_SHARE = 4
_U32 = 0xFFFFFFFF


@dataclass(slots=True)
class CallOutcome:
    output: bytes
    fuel_used: int


@dataclass(frozen=True, slots=True)
class CallBudget:
    """A tighter fuel and deadline for a first attempt that must stay short (calls.py runs it on the event loop)."""

    fuel: int
    timeout_ms: int


class OverBudget(Exception):
    """The call needed more than its :class:`CallBudget` (not more than its own limits): run it again without one.

    ``kind`` is the budget's limit it hit: ``fuel``, ``timeout`` or ``host``
    (too many log lines held), or ``ineligible`` when it was not tried.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# Log lines a budgeted attempt may hold back (each cut to MAX_LOG_BYTES);
# one more makes the attempt over budget.
MAX_HELD_LOGS = 64


@dataclass(slots=True)
class _Attempt:
    """A budgeted call's log lines, held until it completes."""

    held: list[bytes] = field(default_factory=list)
    overflowed: bool = False


def table_element_limit(memory_bytes: int) -> int:
    """Elements per table: all ``MAX_TABLES`` tables together hold at most ``memory_bytes / TABLE_SHARE`` bytes."""
    return memory_bytes // TABLE_SHARE // TABLE_ELEMENT_BYTES // MAX_TABLES


def _first_line(error: BaseException) -> str:
    """The cause of a wasmtime error, without its backtrace.

    wasmtime prints "error while executing at wasm backtrace: <frames>
    Caused by: <cause>"; the cause is the useful part.
    """
    text = str(error).strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def classify_failure(error: Exception, resources: Resources, label: str, fault: list[str]) -> CallError:
    """Turn a wasmtime trap or error into a :class:`CallError` that says which limit was hit."""
    if fault:
        return CallError("host", f"{label}: host function failed: {fault[0]}")
    code = getattr(error, "trap_code", None)
    text = str(error)
    if code == wasmtime.TrapCode.OUT_OF_FUEL or "all fuel consumed" in text:
        return CallError("fuel", f"{label} ran out of fuel ({resources.fuel} units)")
    if code == wasmtime.TrapCode.INTERRUPT or "interrupt" in text:
        return CallError("timeout", f"{label} exceeded its {resources.timeout_ms} ms deadline")
    if "table" in text and ("limit" in text or "minimum" in text or "exceeds" in text):
        return CallError("memory", f"{label} needs a table larger than its {table_element_limit(resources.memory_bytes)} elements "
                                   f"(a quarter of its {resources.memory_bytes}-byte memory limit): {_first_line(error)}")
    if "memory" in text and ("limit" in text or "minimum" in text or "exceeds" in text):
        return CallError("memory", f"{label} needs more than its {resources.memory_bytes}-byte memory limit: {_first_line(error)}")
    return CallError("trap", f"{label} trapped: {_first_line(error)}")


class _Sandbox:
    """What both kinds of sandbox share: the capsule's limits and a store factory applying them."""

    def __init__(self, engine: CapsuleEngine, manifest: Manifest, resources: Resources, host: HostServices):
        self.engine = engine
        self.manifest = manifest
        self.resources = resources
        self.host = host
        self.label = manifest.label
        self._local = threading.local()

    def new_store(self, budget: CallBudget | None = None) -> tuple[wasmtime.Store, int]:
        """A store with the capsule's limits (or the tighter ``budget``), set before any guest code runs, and its deadline."""
        store = wasmtime.Store(self.engine.engine)
        self._prepare_store(store)
        store.set_limits(memory_size=self.resources.memory_bytes, memories=MAX_MEMORIES, tables=MAX_TABLES,
                         table_elements=table_element_limit(self.resources.memory_bytes))
        return store, self._start_budget(store, budget)

    def _start_budget(self, store: wasmtime.Store, budget: CallBudget | None) -> int:
        """Fill ``store``'s fuel and start its deadline from now (returned, in monotonic ns): the capsule's
        limits, or the tighter ``budget``."""
        fuel, timeout_ms = self.resources.fuel, self.resources.timeout_ms
        if budget is not None:
            fuel, timeout_ms = min(fuel, budget.fuel), min(timeout_ms, budget.timeout_ms)
        store.set_fuel(fuel)
        return self.engine.set_deadline(store, timeout_ms)

    def _store_for_call(self, budget: CallBudget | None) -> tuple[wasmtime.Store, int]:
        """The store a call runs in and its deadline (a hook: a component may have one made ahead)."""
        return self.new_store(budget)

    def _cut_short(self, failure: CallError, budget: CallBudget | None, attempt: _Attempt | None) -> bool:
        """Whether ``failure`` is the budget's doing: a limit the budget set tighter than the capsule's own."""
        if budget is None:
            return False
        if failure.kind == "host":
            return attempt is not None and attempt.overflowed
        if failure.kind == "fuel":
            return budget.fuel < self.resources.fuel
        return failure.kind == "timeout" and budget.timeout_ms < self.resources.timeout_ms

    def _prepare_store(self, store: wasmtime.Store) -> None:
        """Hook for what a kind of sandbox needs in every store."""

    def _check_instantiates(self, instantiate: Callable[[wasmtime.Store], object]) -> None:
        """Instantiate once, at load, in a store with the capsule's limits: refuse what no call could run.

        This matches every import function by function, and counts the
        memories and tables the code creates. Other failures (a limit that
        depends on the zone, a trap in a start function) are left to the
        calls, which report them.
        """
        store, deadline = self.new_store()
        self.engine.enter_guest(deadline)  # a start function is guest code: its deadline is enforced
        try:
            instantiate(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if "count too high" in str(exc):
                raise LinkError(f"{self.label} creates more than one linear memory or {MAX_TABLES} tables; a capsule has "
                                f"one linear memory and at most {MAX_TABLES} tables") from None
            if "matching implementation was not found" in str(exc):
                raise LinkError(f"{self.label} does not link: {_whole_error(exc)}") from None
        finally:
            self.engine.leave_guest(deadline)

    def call(self, function: str, data: bytes, budget: CallBudget | None = None) -> CallOutcome:
        """Run one call in a fresh store; raises :class:`CallError` saying which limit or fault stopped it.

        With a ``budget``, a call that needs more fuel or time than it allows
        raises :class:`OverBudget` instead, and the lines it logged are
        dropped: the call is to be run again in full, and logs them then.
        """
        if function not in self.manifest.entry_points:
            raise CallError("input", f"{self.label} has no entry point {function!r} (has {sorted(self.manifest.entry_points)})")
        if len(data) > MAX_INPUT_BYTES:
            raise CallError("input", f"input of {len(data)} bytes is over the {MAX_INPUT_BYTES}-byte limit")
        store, deadline = self._store_for_call(budget)
        # Host functions record here why they failed (the trap's own text is
        # generic). Calls run concurrently on several threads and nest through
        # `invoke`, hence one list per call, in thread-local storage.
        faults: list[str] = []
        attempt = None if budget is None else _Attempt()
        local = self._local
        previous = getattr(local, "faults", None), getattr(local, "attempt", None)
        local.faults, local.attempt = faults, attempt
        self.engine.enter_guest(deadline)
        try:
            outcome = self._run(store, function, data, faults)
        except CallError as failure:
            if self._cut_short(failure, budget, attempt):
                raise OverBudget(failure.kind, str(failure)) from None
            self._release_logs(attempt)
            raise
        finally:
            self.engine.leave_guest(deadline)
            local.faults, local.attempt = previous
        self._release_logs(attempt)
        return outcome

    def _hold_log(self, message: bytes) -> bool:
        """Hold a budgeted attempt's log line; False outside one (log it now)."""
        attempt = getattr(self._local, "attempt", None)
        if attempt is None:
            return False
        if len(attempt.held) >= MAX_HELD_LOGS:
            attempt.overflowed = True
            raise OverflowError(f"more than {MAX_HELD_LOGS} log lines in a budgeted attempt")
        attempt.held.append(message[:MAX_LOG_BYTES])
        return True

    def _release_logs(self, attempt: _Attempt | None) -> None:
        for message in attempt.held if attempt is not None else ():
            self.host.log("info", message)

    def _run(self, store: wasmtime.Store, function: str, data: bytes, faults: list[str]) -> CallOutcome:
        raise NotImplementedError

    def _record_fault(self, message: str) -> None:
        faults = getattr(self._local, "faults", None)
        if faults is not None:
            faults.append(message)


class CoreSandbox(_Sandbox):
    """A linked core module, ready to run calls."""

    def __init__(self, engine: CapsuleEngine, code: Code, manifest: Manifest, resources: Resources, host: HostServices,
                 digest: str | None = None):
        super().__init__(engine, manifest, resources, host)
        digest = digest or code_digest(code)
        module = engine.module(code, digest)
        # Inspecting a module's types through wasmtime-py costs more than the
        # rest of a cold start, and the result only depends on these inputs.
        check_key = hashlib.sha256(repr((LINK_CHECK_VERSION, digest, sorted(manifest.entry_points),
                                         sorted(manifest.requires))).encode()).hexdigest()
        checked = engine.link_checked(check_key)
        if not checked:
            self._check_imports(module)
            self._check_exports(module)
        linker = wasmtime.Linker(engine.engine)
        for capability in sorted(manifest.requires):
            for name in CORE_IMPORTS[capability]:
                linker.define_func(CORE_IMPORT_MODULE, name, core_func_type(name, engine.host_func_types), self._host_function(name), access_caller=True)
        try:
            self.pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise LinkError(f"{self.label} does not link: {_first_line(exc)}") from None
        if not checked:
            self._check_instantiates(lambda store: corecall.instantiate(self.pre, store))
            engine.mark_link_checked(check_key)

    def _check_imports(self, module: wasmtime.Module) -> None:
        for imported in module.imports:
            where = f"{imported.module}.{imported.name}"
            if imported.module != CORE_IMPORT_MODULE:
                raise LinkError(f"{self.label} imports {where}; capsules may import only host functions from {CORE_IMPORT_MODULE!r}")
            capability = CORE_IMPORT_CAPABILITY.get(imported.name)
            if capability is None:
                raise LinkError(f"{self.label} imports {where}, which is not a host function (known: {sorted(CORE_IMPORT_CAPABILITY)})")
            if capability not in self.manifest.requires:
                raise LinkError(f"{self.label} imports {where}, which needs capability {capability!r} that its manifest does not require")

    def _check_exports(self, module: wasmtime.Module) -> None:
        """Every export the host calls, against its exact signature: the calls themselves are unchecked."""
        exports = {item.name: item.type for item in module.exports}
        if not isinstance(exports.get(MEMORY_EXPORT), wasmtime.MemoryType):
            raise LinkError(f"{self.label} does not export its linear memory as {MEMORY_EXPORT!r}")
        # The manifest refuses these names too; checked here again because a
        # shadowed allocator would be called with the wrong number of arguments.
        shadowing = set(self.manifest.entry_points) & set(RESERVED_MODULE_EXPORTS)
        if shadowing:
            raise LinkError(f"{self.label} names an entry point {sorted(shadowing)[0]!r}, reserved for the core-module ABI")
        wanted = [(ALLOC_EXPORT, _ALLOC_SIGNATURE)] + [(name, _ENTRY_SIGNATURE) for name in self.manifest.entry_points]
        for name, (params, results) in wanted:
            found = exports.get(name)
            if not isinstance(found, wasmtime.FuncType):
                raise LinkError(f"{self.label} does not export function {name!r}")
            if list(found.params) != params or list(found.results) != results:
                raise LinkError(f"{self.label} exports {name!r} as {found.params}->{found.results}, expected {params}->{results}")

    def _host_function(self, name: str) -> Callable:
        """The adapter from the core ABI (pointers into linear memory) to HostServices."""
        host = self.host

        def memory_of(caller: wasmtime.Caller) -> tuple[wasmtime.Memory, int]:
            memory = caller.get(MEMORY_EXPORT)
            if not isinstance(memory, wasmtime.Memory):
                raise CallError("abi", "guest has no exported memory")
            return memory, memory.data_len(caller)

        def read(caller: wasmtime.Caller, ptr: int, length: int, limit: int) -> bytes:
            memory, size = memory_of(caller)
            ptr &= _U32
            length &= _U32
            if length > limit or ptr + length > size:
                raise CallError("abi", f"{name}: range {ptr}+{length} is outside guest memory ({size} bytes) or over {limit}")
            return bytes(memory.read(caller, ptr, ptr + length))

        def write(caller: wasmtime.Caller, ptr: int, capacity: int, data: bytes) -> None:
            memory, size = memory_of(caller)
            ptr &= _U32
            count = min(len(data), capacity & _U32)
            if ptr + count > size:
                raise CallError("abi", f"{name}: buffer {ptr}+{count} is outside guest memory ({size} bytes)")
            if count:
                memory.write(caller, data[:count], ptr)

        def guarded(body: Callable) -> Callable:
            def run(caller, *args):
                try:
                    return body(caller, *args)
                except Exception as exc:
                    # Record why before trapping: the trap's own text is generic.
                    message = str(exc) or type(exc).__name__
                    self._record_fault(message)
                    raise wasmtime.Trap(f"host function {name} failed: {message}") from None
            return run

        def log(caller, ptr, length):
            message = read(caller, ptr, length, 1 << 20)
            if not self._hold_log(message):
                host.log("info", message)

        def kv_get(caller, kptr, klen, vptr, vcap):
            value = host.kv_get(read(caller, kptr, klen, 4096))
            if value is None:
                return -1
            write(caller, vptr, vcap, value)
            return len(value)

        def kv_set(caller, kptr, klen, vptr, vlen):
            host.kv_set(read(caller, kptr, klen, 4096), read(caller, vptr, vlen, 1 << 20))
            return 0

        def kv_delete(caller, kptr, klen):
            return 1 if host.kv_delete(read(caller, kptr, klen, 4096)) else 0

        def clock_now_ms(caller):
            return host.clock_now_ms()

        def random_fill(caller, ptr, length):
            write(caller, ptr, length, host.random_bytes(length & _U32))

        def invoke(caller, cptr, clen, fptr, flen, iptr, ilen, optr, ocap):
            capsule = read(caller, cptr, clen, 256).decode("utf-8", "replace")
            function = read(caller, fptr, flen, 64).decode("utf-8", "replace")
            try:
                output = host.invoke(capsule, function, read(caller, iptr, ilen, MAX_INPUT_BYTES))
            except CallError as exc:
                host.log("warn", f"invoke {capsule}.{function} failed: {exc}")
                return -1
            write(caller, optr, ocap, output)
            return len(output)

        bodies = {"log": log, "kv_get": kv_get, "kv_set": kv_set, "kv_delete": kv_delete,
                  "clock_now_ms": clock_now_ms, "random_fill": random_fill, "invoke": invoke}
        return guarded(bodies[name])

    def _run(self, store: wasmtime.Store, function: str, data: bytes, faults: list[str]) -> CallOutcome:
        try:
            instance = corecall.instantiate(self.pre, store)
            memory = corecall.memory(store, instance, MEMORY_EXPORT.encode())
            size = len(data)
            ptr = corecall.call_i32(store, corecall.func(store, instance, ALLOC_EXPORT.encode()), size) & _U32
            if ptr + size > corecall.memory_size(store, memory):
                raise CallError("abi", f"{self.label}: {ALLOC_EXPORT}({size}) returned {ptr}, outside its memory")
            if size:
                ctypes.memmove(corecall.memory_base(store, memory) + ptr, data, size)
            packed = corecall.call_i32(store, corecall.func(store, instance, function.encode()), ptr, size) & 0xFFFFFFFFFFFFFFFF
            out_ptr, out_len = packed >> 32, packed & _U32
            if out_len > self.resources.max_output_bytes:
                raise CallError("output", f"{self.label}.{function} returned {out_len} bytes, over its {self.resources.max_output_bytes}-byte limit")
            # The guest may have grown (moved) its memory: look again.
            if out_ptr + out_len > corecall.memory_size(store, memory):
                raise CallError("abi", f"{self.label}.{function} returned range {out_ptr}+{out_len}, outside its memory")
            output = ctypes.string_at(corecall.memory_base(store, memory) + out_ptr, out_len) if out_len else b""
        except CallError:
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise classify_failure(exc, self.resources, f"{self.label}.{function}", faults) from None
        return CallOutcome(output, self.resources.fuel - store.get_fuel())


_HYPERMESH_IMPORT = re.compile(rf"^{re.escape(WIT_PACKAGE)}/([a-z-]+)@")
_WASI_IMPORT = re.compile(r"^(wasi:[a-z-]+/[a-z-]+)@0\.2\.[0-9]+$")
# The WASI 0.2 interfaces the linker provides (add_wasip2 with an empty
# WasiConfig), and the capability each needs: the clocks and entropy only
# when the manifest declares them.
WASI_INTERFACES: dict[str, str | None] = {
    **{f"wasi:io/{name}": None for name in ("poll", "error", "streams")},
    **{f"wasi:clocks/{name}": "clock" for name in ("monotonic-clock", "wall-clock")},
    **{f"wasi:random/{name}": "random" for name in ("random", "insecure", "insecure-seed")},
    **{f"wasi:cli/{name}": None for name in ("stdout", "stderr", "stdin", "environment", "exit", "terminal-input",
                                              "terminal-output", "terminal-stdin", "terminal-stdout", "terminal-stderr")},
    **{f"wasi:filesystem/{name}": None for name in ("types", "preopens")},
    **{f"wasi:sockets/{name}": None for name in ("network", "instance-network", "udp", "udp-create-socket", "tcp",
                                                  "tcp-create-socket", "ip-name-lookup")},
}


def _whole_error(error: BaseException) -> str:
    """A wasmtime error and its causes on one line (a link error's cause names the function)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and line.strip() != "Caused by:"]
    return ": ".join(re.sub(r"^[0-9]+: ", "", line) for line in lines)


# Where components are instantiated ahead of their next call.
_AHEAD = HelperThreads("capsule-instantiate")


class ComponentSandbox(_Sandbox):
    """A compiled component and a linker holding WASI 0.2 plus the granted host interfaces.

    Instantiating a component (a Python guest: ~1.3 ms, most of it wasmtime
    setting up thousands of functions) took a third of a 1 MB round trip. So
    one instance is made ahead on a helper thread, in a fresh store of its
    own, and the next call takes it (its fuel and deadline start then, and
    its WASI context is replaced by the call's); taking it starts the next.
    Each instance still serves exactly one call. A call that finds none
    (back-to-back calls, or ``instantiate_ahead`` off) instantiates for itself.
    Either way the guest's fuel is full when the entry point is called, and
    ``fuel_used`` counts the call alone.
    """

    def __init__(self, engine: CapsuleEngine, code: Code, manifest: Manifest, resources: Resources, host: HostServices,
                 digest: str | None = None):
        super().__init__(engine, manifest, resources, host)
        self.component = engine.component(code, digest)
        component_type = self.component.type
        imports = component_type.imports(engine.engine)
        exports = component_type.exports(engine.engine)
        self._check_imports(imports)
        self._check_exports(exports)
        self.linker = wasm_component.Linker(engine.engine)
        # Capsules get WASI 0.2 with an empty WasiConfig: no preopened
        # directories, no environment, no arguments, no inherited stdio.
        self.linker.add_wasip2()
        with self.linker.root() as root:
            for capability in sorted(manifest.requires):
                with root.add_instance(wit_interface(capability)) as instance:
                    for name, func in self._host_functions(capability).items():
                        instance.add_func(name, func)
        self._check_instantiates(lambda store: self.linker.instantiate(store, self.component))
        self.handle_index = self.component.get_export_index(COMPONENT_ENTRY)
        self.stdio_index = self.component.get_export_index(STDIO_ENTRY) if STDIO_ENTRY in exports else None
        self.instantiate_ahead = True
        # Set while an instance made ahead waits for its call.
        self.ahead_ready = threading.Event()
        self._ahead_lock = threading.Lock()
        self._ahead: tuple[wasmtime.Store, wasm_component.Instance] | None = None
        self._ahead_running = False
        self._start_ahead()

    def _store_for_call(self, budget: CallBudget | None) -> tuple[wasmtime.Store, int]:
        ready = self._take_ahead()
        if ready is None:
            return self.new_store(budget)
        store, _ = ready
        deadline = self._start_budget(store, budget)
        self._local.ahead = ready  # for _call, with this store only
        return store, deadline

    def _take_ahead(self) -> tuple[wasmtime.Store, wasm_component.Instance] | None:
        """The instance made ahead, if one is ready (and ``instantiate_ahead`` is still on)."""
        with self._ahead_lock:
            ready, self._ahead = self._ahead, None
            self.ahead_ready.clear()
        return ready if self.instantiate_ahead else None

    def _start_ahead(self) -> None:
        """Make the next call's instance, unless one is ready or on the way.

        Started once a call is over, not when it starts: on a busy machine
        the two would compete for the CPU.
        """
        with self._ahead_lock:
            if not self.instantiate_ahead or self._ahead is not None or self._ahead_running:
                return
            self._ahead_running = True
        try:
            _AHEAD.start(self._instantiate_ahead)
        except RuntimeError:  # no thread to be had: calls instantiate for themselves
            with self._ahead_lock:
                self._ahead_running = False

    def _instantiate_ahead(self) -> None:
        ready = None
        try:
            store, deadline = self.new_store()
            self.engine.enter_guest(deadline)
            try:
                ready = store, self.linker.instantiate(store, self.component)
            finally:
                self.engine.leave_guest(deadline)
        except (wasmtime.Trap, wasmtime.WasmtimeError):
            pass  # the call that then instantiates for itself reports the failure
        finally:
            with self._ahead_lock:
                self._ahead, self._ahead_running = ready, False
                if ready is not None:
                    self.ahead_ready.set()

    def _check_exports(self, exports: dict) -> None:
        """The entry points the host calls, against their exact WIT types (a mismatch would fail every call)."""
        if COMPONENT_ENTRY not in exports:
            raise LinkError(f"{self.label} does not export {COMPONENT_ENTRY!r} (world hypermesh:capsule/handler)")
        expected = {COMPONENT_ENTRY: ("func(input: list<u8>) -> list<u8>", _is_bytes_handler),
                    STDIO_ENTRY: ("func(input-length: u64)", _is_stdio_handler)}
        for name, (signature, matches) in expected.items():
            if name in exports and not matches(exports[name].ty):
                raise LinkError(f"{self.label} exports {name!r} with another type than {signature}")

    def _check_imports(self, imports: dict) -> None:
        for name in imports:
            if name.startswith("wasi:"):
                self._check_wasi_import(name)
                continue
            match = _HYPERMESH_IMPORT.match(name)
            if match is None:
                raise LinkError(f"{self.label} imports {name}; components may import only WASI 0.2 and {WIT_PACKAGE} interfaces")
            capability = match.group(1)
            if capability not in CORE_IMPORTS:
                raise LinkError(f"{self.label} imports {name}, which is not a host interface")
            if capability not in self.manifest.requires:
                raise LinkError(f"{self.label} imports {name}, which needs capability {capability!r} that its manifest does not require")

    def _check_wasi_import(self, name: str) -> None:
        match = _WASI_IMPORT.match(name)
        if match is None or match.group(1) not in WASI_INTERFACES:
            raise LinkError(f"{self.label} imports {name}, which this runtime does not provide "
                            f"(it provides WASI 0.2: {', '.join(sorted({i.split('/')[0] for i in WASI_INTERFACES}))})")
        capability = WASI_INTERFACES[match.group(1)]
        if capability is not None and capability not in self.manifest.requires:
            raise LinkError(f"{self.label} imports {name}, which needs capability {capability!r} that its manifest does not require")

    def _host_functions(self, capability: str) -> dict[str, Callable]:
        host = self.host

        def guarded(body: Callable) -> Callable:
            def run(store, *args):
                try:
                    return body(*args)
                except Exception as exc:
                    message = str(exc) or type(exc).__name__
                    self._record_fault(message)
                    # A WasmtimeError (not any exception) keeps wasmtime-py from
                    # parking the exception in a process-wide global.
                    raise wasmtime.WasmtimeError(f"host function failed: {message}") from None
            return run

        def invoke(capsule: str, function: str, data: bytes):
            try:
                return wasm_component.Variant("ok", host.invoke(capsule, function, data))
            except CallError as exc:
                return wasm_component.Variant("err", str(exc))

        table = {
            "log": {"log": lambda level, message: host.log(level, message)},
            "kv": {
                "get": lambda key: host.kv_get(key.encode("utf-8")),
                "set": lambda key, value: host.kv_set(key.encode("utf-8"), bytes(value)),
                "delete": lambda key: host.kv_delete(key.encode("utf-8")),
            },
            "clock": {"now-ms": host.clock_now_ms},
            "random": {"bytes": host.random_bytes},
            "invoke": {"call": invoke},
        }
        return {name: guarded(body) for name, body in table[capability].items()}

    def _prepare_store(self, store: wasmtime.Store) -> None:
        # Every store gets a WASI context: instantiating a component linked
        # with add_wasip2() in a store without one aborts the whole process.
        store.set_wasi(wasmtime.WasiConfig())

    def _run(self, store: wasmtime.Store, function: str, data: bytes, faults: list[str]) -> CallOutcome:
        label = f"{self.label}.{function}"
        limit = self.resources.max_output_bytes
        channel = StdioChannel(data, limit) if self.stdio_index is not None else None
        failure = None
        try:
            output, fuel_used = self._call(store, channel, data, limit)
        except (wasmtime.Trap, wasmtime.WasmtimeError, TypeError, OverflowError, OSError) as exc:
            failure = exc
        finally:
            if channel is not None:
                # Closing the store closes wasmtime's end of the stdout pipe:
                # the drain then reads to its end.
                store.close()
                channel.close()
            self._start_ahead()
        if channel is not None and channel.failure is not None:
            raise CallError("host", f"{label}: reading its stdout failed: {channel.failure}")
        if channel is not None and channel.overflowed:
            # Whatever else failed, it failed after the guest wrote too much.
            raise CallError("output", f"{label}: {channel.overflow_message()}")
        if isinstance(failure, OverflowError):
            raise CallError("output", f"{label}: {failure}")
        if isinstance(failure, OSError):
            raise CallError("host", f"{label}: cannot set up its stdio: {failure}")
        if failure is not None:
            raise classify_failure(failure, self.resources, label, faults)
        return CallOutcome(output if channel is None else channel.output(), fuel_used)

    def _call(self, store: wasmtime.Store, channel: StdioChannel | None, data: bytes, limit: int) -> tuple[bytes | None, int]:
        """Instantiate and call: through ``handle-stdio`` with ``channel``, else ``handle`` (output None: it is in the channel)."""
        output = None
        ahead, self._local.ahead = getattr(self._local, "ahead", None), None
        instance = ahead[1] if ahead is not None and ahead[0] is store else None
        if channel is not None:
            store.set_wasi(channel.wasi_config())
        fuel = store.get_fuel()
        if instance is None:
            instance = self.linker.instantiate(store, self.component)
            store.set_fuel(fuel)  # as for an instance made ahead: the call's fuel is its own
        if channel is not None:
            func = instance.get_func(store, self.stdio_index)
            func(store, len(data))
        else:
            func = instance.get_func(store, self.handle_index)
            output = call_bytes_func(func, store, data, limit)
        func.post_return(store)
        return output, fuel - store.get_fuel()


def _is_u8_list(valtype) -> bool:
    return isinstance(valtype, wasm_component.ListType) and isinstance(valtype.element, wasm_component.U8)


def _is_bytes_handler(func_type) -> bool:
    params = getattr(func_type, "params", None)
    return params is not None and len(params) == 1 and _is_u8_list(params[0][1]) and _is_u8_list(func_type.result)


def _is_stdio_handler(func_type) -> bool:
    params = getattr(func_type, "params", None)
    return params is not None and len(params) == 1 and isinstance(params[0][1], wasm_component.U64) and func_type.result is None


def build_sandbox(engine: CapsuleEngine, code: Code, manifest: Manifest, resources: Resources, host: HostServices,
                  digest: str | None = None):
    """The sandbox for ``code`` (``digest``: its ``code_digest``, when known)."""
    cls = ComponentSandbox if manifest.kind == "component" else CoreSandbox
    return cls(engine, code, manifest, resources, host, digest)
