"""Host functions: the only way a capsule reaches outside its sandbox.

Each capability in ``capabilities.requires`` maps to a fixed set of host
functions. :class:`HostServices` implements them once; the core-module and
component linkers expose thin adapters over it, and define only the
functions of the capabilities a capsule requires, so that anything else it
imports fails at link time.

Core modules import from the module ``hypermesh`` (see docs/CAPSULES.md for
the ABI); components import ``hypermesh:capsule/<capability>@0.1.0``.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from wasmtime import FuncType, ValType

from .errors import CallError
from .kvstore import KeyValueStore

CORE_IMPORT_MODULE = "hypermesh"
WIT_PACKAGE = "hypermesh:capsule"
WIT_VERSION = "0.1.0"
MAX_LOG_BYTES = 4096
MAX_RANDOM_BYTES = 64 * 1024
MAX_INVOKE_DEPTH = 4

_i32, _i64 = ValType.i32(), ValType.i64()

# capability -> {core import name: (params, results)}
CORE_IMPORTS: dict[str, dict[str, tuple[list[ValType], list[ValType]]]] = {
    "log": {"log": ([_i32, _i32], [])},
    "kv": {
        "kv_get": ([_i32, _i32, _i32, _i32], [_i32]),
        "kv_set": ([_i32, _i32, _i32, _i32], [_i32]),
        "kv_delete": ([_i32, _i32], [_i32]),
    },
    "clock": {"clock_now_ms": ([], [_i64])},
    "random": {"random_fill": ([_i32, _i32], [])},
    "invoke": {"invoke": ([_i32] * 8, [_i32])},
}
CORE_IMPORT_CAPABILITY = {name: cap for cap, funcs in CORE_IMPORTS.items() for name in funcs}

InvokeFn = Callable[[str, str, bytes], bytes]


def wit_interface(capability: str) -> str:
    return f"{WIT_PACKAGE}/{capability}@{WIT_VERSION}"


@dataclass
class HostServices:
    """What one capsule's host functions act on: its kv namespace, label, store, invoker, logger."""

    kv_namespace: str
    label: str
    kv: KeyValueStore | None
    invoke_fn: InvokeFn | None
    logger: logging.Logger

    def log(self, level: str, message: bytes | str) -> None:
        if isinstance(message, bytes):
            message = message[:MAX_LOG_BYTES].decode("utf-8", "replace")
        levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
        self.logger.log(levels.get(level, logging.INFO), "[%s] %s", self.label, message[:MAX_LOG_BYTES])

    def kv_get(self, key: bytes) -> bytes | None:
        return self._kv().get(self.kv_namespace, key)

    def kv_set(self, key: bytes, value: bytes) -> None:
        self._kv().set(self.kv_namespace, key, value)

    def kv_delete(self, key: bytes) -> bool:
        return self._kv().delete(self.kv_namespace, key)

    def _kv(self) -> KeyValueStore:
        if self.kv is None:
            raise CallError("host", "this runtime has no key-value store")
        return self.kv

    @staticmethod
    def clock_now_ms() -> int:
        return time.time_ns() // 1_000_000

    @staticmethod
    def random_bytes(length: int) -> bytes:
        if length < 0 or length > MAX_RANDOM_BYTES:
            raise CallError("host", f"random of {length} bytes is over the {MAX_RANDOM_BYTES}-byte limit")
        return secrets.token_bytes(length)

    def invoke(self, capsule: str, function: str, data: bytes) -> bytes:
        if self.invoke_fn is None:
            raise CallError("host", "this runtime cannot call other capsules")
        return self.invoke_fn(capsule, function, data)


def core_func_type(name: str, cache: dict[str, FuncType]) -> FuncType:
    """The wasm type of a host function, built once per engine.

    ``cache`` must belong to one engine: wasmtime registers a type with the
    first engine that uses it and refuses (panics on) it in another.
    """
    if name not in cache:
        params, results = CORE_IMPORTS[CORE_IMPORT_CAPABILITY[name]][name]
        cache[name] = FuncType(params, results)
    return cache[name]
