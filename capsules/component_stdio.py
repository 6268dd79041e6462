"""Large payloads through a component's WASI stdin and stdout instead of canonical-ABI values.

The C API hands a component ``list<u8>`` one 32-byte value per byte, and a
string must be valid UTF-8 (so bytes need an encoding the guest then decodes
in interpreted code: hex cost ~11 ms per MB). WASI streams are implemented
inside wasmtime: the input is given to the store's WASI context as stdin
bytes (one copy, owned by wasmtime), the guest reads it into its own memory
with native copies, and what it writes to stdout reaches a host callback in
chunks of up to 8 KiB. The ``handle-stdio`` export (world ``bulk-handler``,
docs/CAPSULES.md) uses this channel; every other call gets a WASI context
whose stdin is empty and whose stdout goes nowhere.

The output is bounded while it is written: past the capsule's output limit
the callback fails the write (the guest sees an I/O error and the call
fails with ``output``), so a guest cannot make the host buffer more.
"""

from __future__ import annotations

import ctypes
import errno

import wasmtime
from wasmtime import _ffi as ffi


class StdioChannel:
    """One call's input as the guest's stdin, and its stdout collected up to ``output_limit`` bytes."""

    def __init__(self, data: bytes, output_limit: int):
        self.data = bytes(data)  # the same object when it is bytes already
        self.output_limit = output_limit
        self.overflowed = False
        self._chunks: list[bytes] = []
        self._size = 0

    def wasi_config(self) -> wasmtime.WasiConfig:
        """A WASI context for the call: no files, environment or arguments; stdin is the input, stdout the output."""
        config = wasmtime.WasiConfig()
        vec = ffi.wasm_byte_vec_t()
        ffi.wasm_byte_vec_new(ctypes.byref(vec), len(self.data),
                              ctypes.cast(ctypes.c_char_p(self.data), ctypes.POINTER(ctypes.c_ubyte)))
        # wasmtime takes the vector's contents (no second copy, nothing to free here).
        ffi.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))
        config.stdout_custom = self._write
        return config

    def _write(self, chunk: bytes) -> int:
        if self._size + len(chunk) > self.output_limit:
            self.overflowed = True
            return -errno.EFBIG
        self._chunks.append(chunk)
        self._size += len(chunk)
        return len(chunk)

    def overflow_message(self) -> str:
        return f"wrote more than its {self.output_limit}-byte output limit to stdout"

    def output(self) -> bytes:
        """What the guest wrote; OverflowError if it tried to write more than the limit (even if it went on)."""
        if self.overflowed:
            raise OverflowError(self.overflow_message())
        return b"".join(self._chunks)
