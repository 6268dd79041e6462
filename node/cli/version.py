"""``hypermesh --version``: what this build is and which protocols it speaks."""

from __future__ import annotations

import platform
from importlib import metadata

from hypermesh.capsules.chunk_wire import PROTOCOL_ID as CAPSULE_CHUNKS_PROTOCOL
from hypermesh.capsules.run_wire import PROTOCOL_ID as CAPSULE_RUN_PROTOCOL
from hypermesh.dht.messages import PROTOCOL_ID as KAD_PROTOCOL
from hypermesh.trust.wire import PROTOCOL_ID as TRUST_PROTOCOL
from hypermesh.transport import identify, perf, ping
from hypermesh.transport.host import AGENT_VERSION

from .common import print_json

# The libraries whose versions decide what we can talk to and what we run.
LIBRARIES = ("aioquic", "wasmtime", "trio", "cryptography")


def version_info() -> dict:
    return {
        "hypermesh": _installed("hypermesh"),
        "agent_version": AGENT_VERSION,
        "python": platform.python_version(),
        **{name: _installed(name) for name in LIBRARIES},
        "protocols": [ping.PROTOCOL, identify.PROTOCOL, perf.PROTOCOL, KAD_PROTOCOL, CAPSULE_CHUNKS_PROTOCOL,
                      CAPSULE_RUN_PROTOCOL, TRUST_PROTOCOL],
    }


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def print_version(as_json: bool) -> None:
    info = version_info()
    if as_json:
        print_json(info)
        return
    libraries = ", ".join(f"{name} {info[name]}" for name in LIBRARIES)
    print(f"hypermesh {info['hypermesh']} (Python {info['python']}, {libraries})")
    print(f"protocols: {' '.join(info['protocols'])}")
