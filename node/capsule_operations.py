"""What a running node does with capsules for its user (control socket verbs ``capsule.*``).

``hypermesh capsule run | ls | inspect | trust`` come here when a node runs
in their ``--data-dir`` (else the CLI uses a short-lived runtime);
``capsule swap`` and ``capsule rollback`` exist only here, since only a
running node serves capsules; ``capsule run --on MADDR`` asks another node
(needing only the transport, so a short-lived host does it when no node runs). Paths arrive absolute: the CLI resolves them
in the caller's directory.
"""

from __future__ import annotations

import base64

import trio

from hypermesh.capsules.executor import call_input
from hypermesh.capsules.hotswap import SwapReport
from hypermesh.capsules.remote import run_remote
from hypermesh.capsules.reports import call_document, capsule_rows, inspect_document, output_document, resolve_target
from hypermesh.capsules.trust import POLICY_FILE, trust_signer
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

from . import trust_operations


async def run(node, target: str, function: str, input_base64: str = "", input_file: str | None = None,
              hex_input: bool = False) -> dict:
    data = call_input(base64.b64decode(input_base64, validate=True), input_file, hex_input)
    return call_document(await node.executor.run(target, function, data))


async def run_on(node, addr: str | list[str], cid: str, function: str, input_base64: str = "",
                 input_file: str | None = None, hex_input: bool = False, verify: bool = False) -> dict:
    """Ask the peer at ``addr`` (or the best of several) to run the call; its output and checked receipt.

    On a running node the choice among several addresses and the outcome
    go through its trust engine (``verify`` runs the call here too, shunning
    a peer whose output differs); a short-lived client has no trust engine
    and asks the first.
    """
    data = call_input(base64.b64decode(input_base64, validate=True), input_file, hex_input)
    texts = [addr] if isinstance(addr, str) else addr
    addresses = [parse_quic_address(text) for text in texts]
    for text, address in zip(texts, addresses):
        if address.peer_id is None:
            raise MultiaddrError(f"{text} lacks /p2p/<peer id>: the node must be named so that its receipt can be "
                                 f"checked")
    trust = getattr(node, "trust", None)
    if trust is None:
        if verify:
            raise ValueError("--verify needs a running node: it runs the capsule there and records the outcome")
        address = addresses[0]
        await node.host.connect(address)
        outcome = await run_remote(node.host, address.peer_id, cid, function, data)
    else:
        address = trust_operations.pick_address(node, addresses)
        await node.host.connect(address)
        outcome = await trust_operations.run_remote_judged(node, address.peer_id, cid, function, data, verify)
    return output_document(outcome.output, outcome.receipt)


async def list_capsules(node) -> dict:
    rows = await trio.to_thread.run_sync(capsule_rows, node.runtime.data_dir / "capsules")
    for row in rows:
        capsule = node.executor.known(row["cid"])
        if capsule is not None:
            row["state"] = capsule.state.value
    return {"capsules": rows}


async def inspect(node, target: str) -> dict:
    directory = resolve_target(node.runtime.store_dir, target)
    return await trio.to_thread.run_sync(inspect_document, directory, node.runtime.policy)


async def trust(node, peer_id: str, zones: list[str]) -> dict:
    # The runtime follows the policy file: the next admission sees the change.
    return trust_signer(node.runtime.data_dir / POLICY_FILE, peer_id, list(zones))


def _swap_document(report: SwapReport) -> dict:
    return {"outcome": report.outcome, "name": report.name, "old_cid": report.old_cid, "new_cid": report.new_cid,
            "reason": report.reason, "drained": report.drained}


async def swap(node, name: str, cid: str) -> dict:
    return _swap_document(await node.executor.swap(name, cid))


async def roll_back(node, name: str) -> dict:
    return _swap_document(await node.executor.roll_back(name))


OPERATIONS = {
    "capsule.run": run,
    "capsule.run_on": run_on,
    "capsule.ls": list_capsules,
    "capsule.inspect": inspect,
    "capsule.trust": trust,
    "capsule.swap": swap,
    "capsule.rollback": roll_back,
}
