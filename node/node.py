"""The composition root: one process, one identity, every layer wired together."""

from __future__ import annotations

import json
import logging
import signal
import sys

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import init_identity
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

from . import operations
from .config import DEFAULT_LISTEN
from .control import ControlServer

log = logging.getLogger("hypermesh.node")

BOOTSTRAP_RETRY_SECONDS = (1, 2, 5, 10, 30)


def start_metrics_server(addr: str) -> None:
    """Serve Prometheus metrics on ``HOST:PORT`` (``[::1]:9100`` for IPv6)."""
    from prometheus_client import start_http_server

    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "::"
    try:
        start_http_server(int(port), addr=host)
    except (ValueError, OSError) as exc:
        raise TransportError(f"cannot serve metrics on {addr}: {exc}") from None


async def _bootstrap(host, addr: str) -> None:
    """Connect to a bootstrap peer, retrying with back-off until it answers."""
    for delay in (*BOOTSTRAP_RETRY_SECONDS, None):
        try:
            await host.connect(addr)
            log.info("connected to bootstrap peer %s", addr)
            return
        except TransportError as exc:
            if delay is None:
                log.warning("giving up on bootstrap peer %s: %s", addr, exc)
                return
            log.info("bootstrap peer %s not reachable (%s); retrying in %ss", addr, exc, delay)
            await trio.sleep(delay)


async def run_node(args) -> int:
    identity, created = init_identity(args.data_dir)
    if created:
        log.warning("created a new identity %s in %s", identity.peer_id, args.data_dir)
    listen = args.listen or DEFAULT_LISTEN
    for addr in args.bootstrap:
        parsed = parse_quic_address(addr)
        if parsed.peer_id is None:
            raise MultiaddrError(f"bootstrap address {addr} lacks /p2p/<peer id>")
    if args.metrics:
        start_metrics_server(args.metrics)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_host(identity, listen) as host:
            control_server = ControlServer(args.data_dir)
            operations.register_all(control_server, host)
            await host._nursery.start(control_server.serve)
            addrs = host.listen_addrs()
            if args.json:
                sys.stdout.write(json.dumps({"peer_id": str(identity.peer_id), "addrs": addrs}) + "\n")
                sys.stdout.flush()
            else:
                print(f"HyperMesh node {identity.peer_id}", flush=True)
                for addr in addrs:
                    print(f"  listening on {addr}", flush=True)
            for addr in args.bootstrap:
                host._nursery.start_soon(_bootstrap, host, addr)
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
    return 0
