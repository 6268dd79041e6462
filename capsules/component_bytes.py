"""Passing ``list<u8>`` to and from a component without a Python loop per byte.

wasmtime-py converts ``list<u8>`` one element at a time in Python (about
1.6 s per MB). The C API represents the list as an array of
``wasmtime_component_val_t`` (32 bytes each: a kind byte, padding, a union),
so we build that array with two bulk operations (repeat a template element,
then scatter the payload into every element's value byte with an extended
slice) and read results back the same way. This is about 5x faster; even so
the C API's per-element values cost ~0.1 µs per byte, which is why a
component exporting ``handle-stdio`` gets its payloads through WASI stdio
instead (``component_stdio.py``, docs/CAPSULES.md).
"""

from __future__ import annotations

import ctypes
from ctypes import byref

from wasmtime import _ffi as ffi
from wasmtime.component import Func
from wasmtime.component._enter import enter_wasm

_VAL = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_VALUE_OFFSET = _VAL.of.offset
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST.value
_TEMPLATE = bytes([_U8_KIND]) + bytes(_VAL_SIZE - 1)


def _lower(data: bytes, slot: _VAL) -> None:
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(data))
    if data:
        elements = bytearray(_TEMPLATE * len(data))
        elements[_VALUE_OFFSET::_VAL_SIZE] = data
        ctypes.memmove(raw.data, (ctypes.c_char * len(elements)).from_buffer(elements), len(elements))
    slot.kind = ffi.WASMTIME_COMPONENT_LIST
    slot.of.list = raw


def _lift(value: _VAL, limit: int) -> bytes:
    if value.kind != _LIST_KIND:
        raise TypeError(f"component returned value kind {value.kind}, expected list<u8>")
    size = value.of.list.size
    if size > limit:
        raise OverflowError(f"component returned {size} bytes, over the {limit}-byte output limit")
    if not size:
        return b""
    elements = ctypes.string_at(value.of.list.data, size * _VAL_SIZE)
    kinds = elements[0::_VAL_SIZE]
    if kinds.count(_U8_KIND) != size:
        raise TypeError("component returned a list whose elements are not u8")
    return elements[_VALUE_OFFSET::_VAL_SIZE]


def call_bytes_func(func: Func, store, data: bytes, output_limit: int) -> bytes:
    """Call a component function typed ``func(list<u8>) -> list<u8>``."""
    params = (_VAL * 1)()
    _lower(data, params[0])
    result = _VAL()
    try:
        enter_wasm(lambda: ffi.wasmtime_component_func_call(byref(func._func), store._context(), params, 1, byref(result), 1))
    finally:
        ffi.wasmtime_component_val_delete(byref(params[0]))
    try:
        return _lift(result, output_limit)
    finally:
        ffi.wasmtime_component_val_delete(byref(result))
