"""The hot path of a core-module call, on wasmtime's C API directly.

wasmtime-py's ``Func.__call__`` looks up the function type and boxes every
value on each call (about 15-20 µs); ``Instance.exports`` builds a map of
every export. A capsule call needs three exports and two calls per call, so
those costs would dominate. The sandbox checks the export types once at link
time, which is what makes ``wasmtime_func_call_unchecked`` safe here.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import _func as wasmtime_func

_FUNC_KIND = ffi.WASMTIME_EXTERN_FUNC.value
_MEMORY_KIND = ffi.WASMTIME_EXTERN_MEMORY.value


def instantiate(pre: wasmtime.InstancePre, store: wasmtime.Store) -> ffi.wasmtime_instance_t:
    instance = ffi.wasmtime_instance_t()
    trap = POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_instance_pre_instantiate(pre.ptr(), store._context(), byref(instance), byref(trap))
    _raise_failure(error, trap)
    return instance


def export(store: wasmtime.Store, instance: ffi.wasmtime_instance_t, name: bytes, kind: int) -> ffi.wasmtime_extern_t:
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(store._context(), byref(instance), ctypes.c_char_p(name), len(name), byref(item))
    if not found or item.kind != kind:
        raise wasmtime.WasmtimeError(f"export {name.decode()} is missing")
    return item


def func(store, instance, name: bytes) -> ffi.wasmtime_func_t:
    return export(store, instance, name, _FUNC_KIND).of.func


def memory(store, instance, name: bytes) -> ffi.wasmtime_memory_t:
    return export(store, instance, name, _MEMORY_KIND).of.memory


def call_i32(store: wasmtime.Store, function: ffi.wasmtime_func_t, *args: int) -> int:
    """Call a function whose parameters are i32 and whose single result is i32 or i64."""
    slots = (ffi.wasmtime_val_raw_t * max(len(args), 1))()
    for index, value in enumerate(args):
        slots[index].i32 = value
    trap = POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call_unchecked(store._context(), byref(function), slots, len(slots), byref(trap))
    _raise_failure(error, trap)
    return slots[0].i64


def memory_size(store: wasmtime.Store, mem: ffi.wasmtime_memory_t) -> int:
    return ffi.wasmtime_memory_data_size(store._context(), byref(mem))


def memory_base(store: wasmtime.Store, mem: ffi.wasmtime_memory_t) -> int:
    """Address of a linear memory's first byte; valid until the guest runs again (it may grow and move)."""
    return ctypes.addressof(ffi.wasmtime_memory_data(store._context(), byref(mem)).contents)


def _raise_failure(error, trap) -> None:
    if not error and not trap:
        return
    # A host function that raised parked its exception in wasmtime-py's
    # module global; clear it so it never surfaces in an unrelated call.
    wasmtime_func.LAST_EXCEPTION = None
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    raise wasmtime.Trap._from_ptr(trap)
