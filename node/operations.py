"""Operations a node performs for its user, shared by the control socket and
by the short-lived node a CLI command starts when none is running.

Each takes a running node (anything with the attributes it uses: ``host``,
``discovery``, ``distribution``) and JSON-friendly arguments, and returns
the JSON object the CLI prints.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import trio

from hypermesh.dht.keys import Cid, CidError
from hypermesh.transport import identify as identify_protocol
from hypermesh.transport import perf as perf_protocol
from hypermesh.transport import ping as ping_protocol
from hypermesh.transport.errors import TransportError
from hypermesh.transport.multiaddrs import MultiaddrError, multiaddr_text, parse_quic_address

from . import capsule_operations, chain_operations, trust_operations

log = logging.getLogger("hypermesh.node")

# How long a command waits for a peer that does not answer a dial.
DIAL_TIMEOUT = 3.0

# Operations that need only the transport; the rest need the DHT.
TRANSPORT_ONLY = {"ping", "id", "perf", "capsule.run_on"}


def _target(maddr: str):
    address = parse_quic_address(maddr)
    if address.peer_id is None:
        raise MultiaddrError(f"{maddr} lacks /p2p/<peer id>: the peer must be named so that it can be authenticated")
    return address


def key_to_cid(key: str) -> Cid:
    """A CID as given, or CIDv1 (raw, sha2-256) of a plain string's UTF-8 bytes,
    so that other libp2p tools find the same records."""
    try:
        return Cid.parse(key)
    except (CidError, ValueError):
        return Cid.for_string(key)


def _addr_texts(addrs) -> list[str]:
    texts = []
    for raw in addrs:
        try:
            texts.append(multiaddr_text(raw))
        except MultiaddrError:
            continue
    return texts


# -- transport ------------------------------------------------------------------


async def _dial(node, addr: str, timeout: float):
    """The connection to the peer named by ``addr``, and whether it is new: a
    live connection is reused (maybe at another address), else ``addr`` is
    dialled, failing after ``timeout`` seconds."""
    address = _target(addr)
    reused = bool(node.host.connections_to(address.peer_id))
    log.debug("dialling %s", addr)
    with trio.move_on_after(timeout) as deadline:
        driver = await node.host.connect(address)
    if deadline.cancelled_caught:
        raise TransportError(f"no answer from {addr} within {timeout:g} s (--timeout to wait longer)")
    return address, driver, not reused


async def ping(node, addr: str, count: int = 3, timeout: float = DIAL_TIMEOUT) -> dict:
    """Ping the peer; the answer says which connection carried the pings (a
    live one is reused even when ``addr`` names another address)."""
    started = trio.current_time()
    address, driver, new_connection = await _dial(node, addr, timeout)
    connect_ms = (trio.current_time() - started) * 1000 if new_connection else 0.0
    rtts = await ping_protocol.ping(node.host, address.peer_id, count)
    return {
        "peer_id": str(address.peer_id),
        "addr": f"{driver.remote_multiaddr}/p2p/{address.peer_id}",
        "new_connection": new_connection,
        "connect_ms": round(connect_ms, 3),
        "rtts_ms": [round(rtt * 1000, 3) for rtt in rtts],
    }


async def identify(node, addr: str, timeout: float = DIAL_TIMEOUT) -> dict:
    _, driver, _ = await _dial(node, addr, timeout)
    record = await identify_protocol.identify(node.host, driver)
    return record.to_json()


async def perf(node, addr: str, upload: int = 0, download: int = 0, timeout: float = DIAL_TIMEOUT) -> dict:
    address, _, _ = await _dial(node, addr, timeout)
    stream = await node.host.new_stream(address.peer_id, [perf_protocol.PROTOCOL])
    try:
        result = await perf_protocol.run_perf(stream, upload, download)
    finally:
        await stream.aclose()
    return {"peer_id": str(address.peer_id), **result.to_json()}


async def peers(node) -> list[dict]:
    host = node.host
    return [
        {
            "peer_id": str(peer_id),
            "addrs": [driver.remote_multiaddr for driver in host.connections_to(peer_id)],
            "agent_version": host.peerstore.agent_version(peer_id),
            "protocols": sorted(host.peerstore.protocols(peer_id)),
        }
        for peer_id in host.connected_peers()
    ]


async def info(node) -> dict:
    return {"peer_id": str(node.host.peer_id), "addrs": node.host.listen_addrs()}


# -- DHT ------------------------------------------------------------------------


async def wait_for_dht(node, peers: int = 1, timeout: float = 10.0) -> dict:
    """Wait until the routing table holds ``peers`` peers (or fail after ``timeout``)."""
    service = node.discovery.service
    with trio.move_on_after(timeout):
        await service.wait_for_routing_peers(peers)
    size = service.routing_table_size()
    if size < peers:
        raise TimeoutError(f"the DHT routing table has {size} of {peers} peers after {timeout:g} s")
    return {"routing_table_peers": size}


async def provide(node, key: str) -> dict:
    cid = key_to_cid(key)
    node.discovery.provide(cid)
    return {"key": key, "cid": str(cid)}


async def find_providers(node, key: str, count: int = 20) -> dict:
    cid = key_to_cid(key)
    found = await node.discovery.find_providers(cid, count)
    return {
        "key": key,
        "cid": str(cid),
        "providers": [{"peer_id": str(info.peer_id), "addrs": _addr_texts(info.addrs)} for info in found],
    }


async def register_service(node, name: str, protocol: str, weight: int = 100) -> dict:
    stored = await node.discovery.register_service(name, protocol, weight=weight)
    return {"name": name, "protocol": protocol, "weight": weight, "stored_on_peers": stored}


async def resolve_service(node, name: str) -> dict:
    started = trio.current_time()
    records = await node.discovery.resolve_service(name)
    return {
        "name": name,
        "resolve_ms": round((trio.current_time() - started) * 1000, 3),
        "instances": [
            {
                "peer_id": str(record.peer_id),
                "addrs": _addr_texts(record.addrs),
                "protocol": record.protocol,
                "weight": record.weight,
                "seq": record.seq,
                "expires_at": record.expires_at,
            }
            for record in records
        ],
    }


# -- capsules -------------------------------------------------------------------


async def publish_capsule(node, directory: str) -> dict:
    cid = await node.distribution.publish(Path(directory))
    return {"cid": cid, "provider": str(node.host.peer_id)}


async def fetch_capsule(node, cid: str, progress=None) -> dict:
    """Fetch, verify and install; ``progress({"done": bytes, "total": bytes})``."""
    report = None if progress is None else (lambda done, total: progress({"done": done, "total": total}))
    capsule = await node.distribution.fetch(cid, progress=report)
    manifest = capsule.manifest
    return {
        "cid": cid,
        "name": capsule.name,
        "version": manifest.version if manifest else None,
        "state": capsule.state.value,
    }


OPERATIONS = {
    "ping": ping,
    "id": identify,
    "perf": perf,
    "peers": peers,
    "info": info,
    "dht.wait": wait_for_dht,
    "dht.provide": provide,
    "dht.find_providers": find_providers,
    "service.register": register_service,
    "service.resolve": resolve_service,
    "capsule.publish": publish_capsule,
    "capsule.fetch": fetch_capsule,
    **capsule_operations.OPERATIONS,
    **trust_operations.OPERATIONS,
    **chain_operations.OPERATIONS,
}


def register_all(control, node) -> None:
    """Expose every operation on the control socket: the request's fields
    (other than ``cmd``) are the operation's keyword arguments."""
    for name, operation in OPERATIONS.items():
        control.register(name, _bind(operation, node))


def _bind(operation, node):
    takes_progress = "progress" in inspect.signature(operation).parameters

    async def command(request: dict, progress):
        params = {key: value for key, value in request.items() if key not in ("cmd", "progress")}
        if takes_progress:
            params["progress"] = progress
        try:
            return await operation(node, **params)
        except TypeError as exc:
            raise ValueError(f"bad arguments: {exc}") from None

    return command
