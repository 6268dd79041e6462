"""Large payloads through a component's WASI stdin and stdout instead of canonical-ABI values.

The C API hands a component ``list<u8>`` one 32-byte value per byte, and a
string must be valid UTF-8 (so bytes need an encoding the guest then decodes
in interpreted code: hex cost ~11 ms per MB). WASI streams are implemented
inside wasmtime: the input is given to the store's WASI context as stdin
bytes (one copy, owned by wasmtime) and the guest reads it into its own
memory with native copies. The ``handle-stdio`` export (world
``bulk-handler``, docs/CAPSULES.md) uses this channel; every other call gets
a WASI context whose stdin is empty and whose stdout goes nowhere.

Stdout is the write end of a pipe, opened by wasmtime as a file
(``/proc/self/fd/N``): wasmtime writes files synchronously on the calling
thread, where a custom stdout callback goes through wasmtime's tokio worker
for every chunk the guest writes (up to 8 KiB; two thread switches and the GIL each:
a 1 MB round trip took 7.2 ms that way against 4.3 ms through the pipe). A drain thread of its own reads
each call's pipe while the guest writes, so a full pipe never blocks the
guest for long. Where ``/proc/self/fd`` cannot be opened, the callback is used.

The output is bounded while it is written: past the capsule's output limit
the drain drops what it reads (the callback fails the write) and the call
fails with ``output``, so a guest cannot make the host buffer more than the
limit plus one pipe's worth.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import threading
from typing import Callable

import wasmtime
from wasmtime import _ffi as ffi

# How long finishing a call may wait for the drain after the store (and with
# it wasmtime's end of the pipe) is closed: the end of file is then
# immediate, so this only bounds a bug.
DRAIN_JOIN_TIMEOUT_S = 10.0
# Where wasmtime opens the pipe's write end: a path naming our descriptor.
PIPE_PATH = "/proc/self/fd/{}"
# A pipe holds 64 KiB: a read never returns more.
READ_CHUNK = 1 << 16
# Helper threads (of each kind) kept waiting for the next job, and how long one waits before it ends.
MAX_IDLE_DRAINS = 8
DRAIN_IDLE_S = 30.0


class HelperThreads:
    """Threads for short jobs beside the calls (drain a stdout pipe, prepare an instance): a job takes an idle one or starts one.

    Starting a thread per job cost ~60 µs; handing a job to a waiting one ~13 µs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []

    def start(self, job: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=self.name, daemon=True).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        # Runs jobs until idle for DRAIN_IDLE_S, or until enough others wait.
        while True:
            try:
                job = inbox.get(timeout=DRAIN_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken from the idle list just now: its job is on the way
            job()
            with self._lock:
                if len(self._idle) >= MAX_IDLE_DRAINS:
                    return
                self._idle.append(inbox)


_DRAINS = HelperThreads("capsule-stdout")


class StdioChannel:
    """One call's input as the guest's stdin, and its stdout collected up to ``output_limit`` bytes.

    Use: ``wasi_config()`` before the call, ``close()`` once the store that
    received the config is closed (always, also on failure), then ``output()``.
    """

    def __init__(self, data: bytes, output_limit: int):
        self.data = bytes(data)  # the same object when it is bytes already
        self.output_limit = output_limit
        self.overflowed = False
        self.failure: OSError | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._drained: threading.Lock | None = None

    def wasi_config(self) -> wasmtime.WasiConfig:
        """A WASI context for the call: no files, environment or arguments; stdin is the input, stdout the output."""
        config = wasmtime.WasiConfig()
        vec = ffi.wasm_byte_vec_t()
        ffi.wasm_byte_vec_new(ctypes.byref(vec), len(self.data),
                              ctypes.cast(ctypes.c_char_p(self.data), ctypes.POINTER(ctypes.c_ubyte)))
        # wasmtime takes the vector's contents (no second copy, nothing to free here).
        ffi.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))
        if not self._pipe_stdout(config):
            config.stdout_custom = self._write
        return config

    def _pipe_stdout(self, config: wasmtime.WasiConfig) -> bool:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            # wasmtime opens its own descriptor of the pipe's write end.
            config.stdout_file = PIPE_PATH.format(write_end)
        except wasmtime.WasmtimeError:
            os.close(read_end)
            return False
        finally:
            os.close(write_end)
        drained = threading.Lock()
        drained.acquire()
        try:
            _DRAINS.start(lambda: self._read_pipe(read_end, drained))
        except RuntimeError as exc:  # no thread to be had: the config, and wasmtime's end, go with the failed call
            os.close(read_end)
            raise OSError(f"cannot start the stdout drain: {exc}") from None
        self._drained = drained
        return True

    def _read_pipe(self, read_end: int, drained: threading.Lock) -> None:
        # Ends at end of file: the store closed wasmtime's end. Past the limit
        # the rest is read and dropped (closing the pipe instead would make
        # the guest's next write raise SIGPIPE, fatal to a process that does
        # not ignore it); the call then fails with ``output``.
        try:
            while chunk := os.read(read_end, READ_CHUNK):
                self._keep(chunk)
        except OSError as exc:
            self.failure = exc
        finally:
            os.close(read_end)
            drained.release()

    def _keep(self, chunk: bytes) -> bool:
        if self.overflowed or self._size + len(chunk) > self.output_limit:
            self.overflowed = True
            return False
        self._chunks.append(chunk)
        self._size += len(chunk)
        return True

    def _write(self, chunk: bytes) -> int:
        return len(chunk) if self._keep(chunk) else -errno.EFBIG

    def close(self) -> None:
        """Wait for the drain to take the last bytes; call once the store holding the WASI context is closed.

        A drain that failed, or did not end, leaves its reason in ``failure``.
        """
        if self._drained is not None and not self._drained.acquire(timeout=DRAIN_JOIN_TIMEOUT_S):
            self.failure = OSError("the stdout pipe is still open after its store was closed")

    def overflow_message(self) -> str:
        return f"wrote more than its {self.output_limit}-byte output limit to stdout"

    def output(self) -> bytes:
        """What the guest wrote; OverflowError if it tried to write more than the limit (even if it went on)."""
        if self.overflowed:
            raise OverflowError(self.overflow_message())
        return b"".join(self._chunks)
