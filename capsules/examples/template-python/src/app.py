"""A HyperMesh capsule in Python, built into a WebAssembly component by componentize-py.

`hypermesh capsule build DIR` generates the bindings (module `wit_world`)
from the hypermesh:capsule world; `wit_world.imports` holds one module per
capability listed in manifest.json `capabilities.requires`; the build also
ships `hypermesh_guest`, which implements `handle_stdio` on top of `handle`.
"""

import hypermesh_guest
import wit_world
from wit_world.imports import log


class WitWorld(wit_world.WitWorld):
    def handle(self, input: bytes) -> bytes:
        log.log("info", f"handling {len(input)} bytes")
        return input

    def handle_stdio(self, input_length: int) -> None:
        # The host's fast path for any payload: input on stdin, output on stdout.
        hypermesh_guest.handle_stdio(self.handle, input_length)
