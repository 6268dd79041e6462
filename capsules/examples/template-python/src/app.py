"""A HyperMesh capsule in Python, built into a WebAssembly component by componentize-py.

`hypermesh capsule build DIR` generates the bindings (module `wit_world`)
from the hypermesh:capsule world; `wit_world.imports` holds one module per
capability listed in manifest.json `capabilities.requires`.
"""

import wit_world
from wit_world.imports import log


class WitWorld(wit_world.WitWorld):
    def handle(self, input: bytes) -> bytes:
        log.log("info", f"handling {len(input)} bytes")
        return input

    def handle_hex(self, input: str) -> str:
        # The host's fast path for large payloads: same contract as handle.
        return self.handle(bytes.fromhex(input)).hex()
