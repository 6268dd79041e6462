"""The example Python capsule (see spec/README.md)."""

import hypermesh_guest
import wit_world
from wit_world.imports import clock, kv, log


class WitWorld(wit_world.WitWorld):
    def handle(self, input: bytes) -> bytes:
        if input == b"ping":
            return b"pong"
        if input == b"count":
            current = kv.get("count")
            count = (int(current) if current is not None else 0) + 1
            kv.set("count", str(count).encode())
            log.log("info", f"count is now {count}")
            return str(count).encode()
        if input == b"time":
            return str(clock.now_ms()).encode()
        if input == b"hoard":
            # Over the host's 64 KiB value limit: the host fails the call.
            kv.set("hoard", bytes(70_000))
            return b"stored"
        if input == b"print":
            # Printing must not mix into the output (handle-stdio sends it to stderr).
            print("a line on stdout")
            return b"printed"
        if input == b"spin":
            while True:
                pass
        return input

    def handle_stdio(self, input_length: int) -> None:
        # The host's fast path for any payload: input on stdin, output on stdout.
        hypermesh_guest.handle_stdio(self.handle, input_length)
