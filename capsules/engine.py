"""The node's view of the process's wasmtime engine, and the compiled-artifact cache.

Every store this node creates comes from one engine (epoch.py: one per
process): fuel metering and epoch interruption are on for all of them, so
every call has an instruction budget and a deadline on the monotonic clock,
enforced through the epoch (the sandbox sets each store's deadline with
:meth:`CapsuleEngine.set_deadline` and brackets each run of guest code with
:meth:`CapsuleEngine.enter_guest` / :meth:`leave_guest`).

Compiled code is cached by content hash: in memory (bounded LRU) and on disk
under ``<artifact_root>/<engine fingerprint>/<sha256>.cwasm``. Only
files this node wrote are ever deserialized (deserializing is equivalent to
running native code), which is why the directory is created mode 0700 and
files enter it by atomic rename only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Union

import wasmtime
from wasmtime import component as wasm_component

from . import epoch
from .epoch import deadline_ticks
from .errors import LinkError
from .storage import atomic_write, ensure_private_dir

MAX_CACHED_MODULES = 256
# A componentize-py guest is ~40 MB of machine code once loaded.
MAX_CACHED_COMPONENTS = 8


class StoredCode:
    """Code admitted earlier, known by its sha2-256: a load from the artifact cache never reads it.

    A cold start (after ``unload`` or a restart) needs only the digest to
    find the compiled artifact; the file is read, and checked against the
    digest, only when the code must be compiled again.
    """

    __slots__ = ("digest", "path")

    def __init__(self, digest: str, path: Path):
        self.digest = digest
        self.path = Path(path)

    def read(self) -> bytes:
        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.digest:
            raise LinkError(f"{self.path} is not the code that was admitted (its sha2-256 changed)")
        return data


Code = Union[bytes, StoredCode]


def code_digest(code: Code) -> str:
    """sha2-256 (hex) of the code: what the artifact cache is keyed by."""
    return code.digest if isinstance(code, StoredCode) else hashlib.sha256(code).hexdigest()


class _LRU:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str) -> object | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: str, value: object) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


class CapsuleEngine:
    """The node's artifact cache over the process's wasmtime engine and its epoch ticks."""

    def __init__(self, artifact_root: Path | None = None):
        """``artifact_root`` holds compiled code (``<data_dir>/artifacts``); None keeps it in memory only."""
        self._ticks = epoch.shared()
        self.engine = self._ticks.engine
        # Artifacts only load into an engine with the same settings and version.
        self.fingerprint = hashlib.sha256(
            f"wasmtime-py {version('wasmtime')}|fuel|epoch".encode()
        ).hexdigest()[:16]
        self.artifact_dir = None if artifact_root is None else ensure_private_dir(Path(artifact_root) / self.fingerprint)
        self._lock = threading.Lock()
        self._modules = _LRU(MAX_CACHED_MODULES)
        self._components = _LRU(MAX_CACHED_COMPONENTS)
        self._checked: set[str] = set()
        # Host function types, which wasmtime ties to the engine that first used them.
        self.host_func_types: dict = {}
        self.stats = {"compiled": 0, "deserialized": 0, "memory_hits": 0}
        # Bound once: every store's deadline, and around every run of guest code (see epoch.py).
        self.set_deadline = self._ticks.set_deadline
        self.enter_guest = self._ticks.enter
        self.leave_guest = self._ticks.leave

    @staticmethod
    def deadline_ticks(timeout_ms: int) -> int:
        """Epoch ticks for ``timeout_ms``, for a store made outside a sandbox (the bench's baselines)."""
        return deadline_ticks(timeout_ms)

    def close(self) -> None:
        """Drop the compiled code this node holds (the engine and its ticks serve the whole process)."""
        self.forget_loaded()

    def link_checked(self, key: str) -> bool:
        """Whether a link check with this key passed before (in this process or, via a marker file, earlier)."""
        if key in self._checked:
            return True
        if self.artifact_dir is not None and (self.artifact_dir / f"{key}.linked").exists():
            self._checked.add(key)
            return True
        return False

    def mark_link_checked(self, key: str) -> None:
        """Record a passed link check; it is a pure function of the key (code hash, entry points, capabilities)."""
        self._checked.add(key)
        if self.artifact_dir is not None:
            atomic_write(self.artifact_dir / f"{key}.linked", b"", mode=0o600)

    def forget_loaded(self) -> None:
        """Drop the in-memory cache (the disk cache stays): the next load is a cold start."""
        with self._lock:
            self._modules.items.clear()
            self._components.items.clear()
            self._checked.clear()

    def artifact_path(self, digest: str) -> Path | None:
        return None if self.artifact_dir is None else self.artifact_dir / f"{digest}.cwasm"

    def _load(self, code: Code, lru: _LRU, compile_: Callable, deserialize_file: Callable, what: str, digest: str | None):
        digest = digest or code_digest(code)
        with self._lock:
            cached = lru.get(digest)
        if cached is not None:
            self.stats["memory_hits"] += 1
            return cached
        path = self.artifact_path(digest)
        loaded = None
        if path is not None:
            try:
                loaded = deserialize_file(self.engine, str(path))
                self.stats["deserialized"] += 1
            except wasmtime.WasmtimeError:
                # None yet, or left by another wasmtime build: compile (and replace it).
                loaded = None
        if loaded is None:
            source = code.read() if isinstance(code, StoredCode) else code
            try:
                loaded = compile_(self.engine, source)
            except wasmtime.WasmtimeError as exc:
                raise LinkError(f"{what} does not compile: {str(exc).splitlines()[0]}") from None
            self.stats["compiled"] += 1
            if path is not None:
                atomic_write(path, bytes(loaded.serialize()), mode=0o600)
        with self._lock:
            lru.put(digest, loaded)
        return loaded

    def module(self, code: Code, digest: str | None = None) -> wasmtime.Module:
        """A compiled core module, from memory, the disk cache or the compiler (``digest``: ``code_digest(code)`` if known)."""
        return self._load(code, self._modules, wasmtime.Module, wasmtime.Module.deserialize_file, "core module", digest)

    def component(self, code: Code, digest: str | None = None) -> wasm_component.Component:
        return self._load(code, self._components, wasm_component.Component,
                          wasm_component.Component.deserialize_file, "component", digest)
