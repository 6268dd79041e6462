"""Guest-side helpers for Python capsule components; `capsule build` puts this module on the guest's path.

`handle_stdio` implements the `handle-stdio` export of the bulk-handler
world (capsules/wit/capsule.wit) on top of a capsule's `handle`:

    def handle_stdio(self, input_length: int) -> None:
        hypermesh_guest.handle_stdio(self.handle, input_length)
"""

import contextlib
import os
import sys

STDIN = 0
STDOUT = 1


def read_input(length: int) -> bytes:
    """The call's input: exactly ``length`` bytes of stdin (fewer only if the host gave fewer)."""
    parts = []
    remaining = length
    while remaining:
        part = os.read(STDIN, remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def write_output(data: bytes) -> None:
    """All of ``data`` to stdout, however little each write takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(STDOUT, view):]


def handle_stdio(handle, input_length: int) -> None:
    data = read_input(input_length)
    # stdout carries the output: what `handle` prints goes to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        output = handle(data)
    write_output(output)
