"""What a running node tells and does about trust (control socket verbs ``trust.*``).

``hypermesh trust show | top | shun | unshun`` need a running node: the
trust engine lives in it, and a shun must reach its transport and DHT.
"""

from __future__ import annotations

import hashlib
import random

import trio

from hypermesh.capsules.errors import CapsuleError
from hypermesh.capsules.remote import ReceiptMismatch, run_remote
from hypermesh.capsules.run_wire import RunOutcome, RunProtocolViolation
from hypermesh.transport.identity import IdentityError, PeerId
from hypermesh.trust.engine import Observation, Proof
from hypermesh.trust.score import Dimension

# Longest list ``trust top`` returns.
MAX_TOP = 1000


def _peer(text: str) -> PeerId:
    try:
        return PeerId.from_base58(text)
    except IdentityError as exc:
        raise ValueError(f"not a peer ID: {text!r} ({exc})") from None


def _document(node, peer: PeerId) -> dict:
    trust = node.trust
    now = trust.clock()
    reputation = trust.engine.reputation(peer, now)
    shun = trust.engine.shunned(now).get(peer)
    return {
        "peer_id": str(peer),
        "score": round(trust.engine.score(peer, now), 2),
        "local_score": round(reputation.score, 2),
        "confidence": round(reputation.confidence, 3),
        "vouch_boost": round(trust.engine.vouch_boost(peer, now), 2),
        "global_trust": trust.engine.global_trust.trust(peer),
        "components": {d.value: round(reputation.components[d], 3) for d in Dimension},
        "shunned": None if shun is None else {"reason": shun.reason, "until": shun.until},
    }


async def show(node, peer: str) -> dict:
    return _document(node, _peer(peer))


async def top(node, limit: int = 20) -> dict:
    if not 1 <= limit <= MAX_TOP:
        raise ValueError(f"limit must be 1..{MAX_TOP}")
    engine = node.trust.engine
    now = node.trust.clock()
    peers = sorted(engine.known_peers(), key=lambda p: -engine.score(p, now))[:limit]
    return {"peers": [_document(node, peer) for peer in peers]}


async def shun(node, peer: str, reason: str = "shunned by the operator", seconds: float | None = None) -> dict:
    if seconds is not None and not seconds > 0:
        raise ValueError("seconds must be positive")
    target = _peer(peer)
    node.trust.shun(target, reason, seconds)
    return _document(node, target)


async def unshun(node, peer: str) -> dict:
    target = _peer(peer)
    return {"peer_id": str(target), "lifted": node.trust.unshun(target)}


def pick_address(node, addresses: list):
    """Of several peers' addresses, the one whose peer the trust engine chooses (never a shunned one)."""
    by_peer = {address.peer_id: address for address in addresses}
    now = node.trust.clock()
    choice = node.trust.engine.choose(list(by_peer), now, random.Random())
    if choice is None:
        names = ", ".join(str(peer) for peer in by_peer)
        raise ValueError(f"every peer asked for is shunned: {names} (see hypermesh trust show)")
    return by_peer[choice]


class WrongOutput(CapsuleError):
    """A peer's signed receipt attests an output that running the capsule here does not give."""


async def run_remote_judged(node, peer: PeerId, cid: str, function: str, data: bytes,
                            verify: bool = False) -> RunOutcome:
    """Run ``function`` of ``cid`` on ``peer``, and let the trust engine learn from how it went.

    A receipt that does not attest the call is proof of forgery; a missed
    deadline or a malformed answer is evidence against the peer; a checked
    receipt is evidence for it. With ``verify`` the call is also run here:
    capsules are deterministic, so a different output under the peer's
    signed receipt is proof of a wrong output, which anyone holding the
    receipt can check by running the capsule again.
    """
    try:
        outcome = await run_remote(node.host, peer, cid, function, data)
    except ReceiptMismatch as exc:
        node.trust.prove(peer, Proof.FORGED_RECEIPT, str(exc))
        raise
    except trio.TooSlowError:
        node.trust.observe(peer, Observation.RUN_TIMEOUT)
        raise
    except RunProtocolViolation:
        node.trust.observe(peer, Observation.PROTOCOL_VIOLATION)
        raise
    if verify:
        expected = (await node.executor.run(cid, function, data)).output
        if expected != outcome.output:
            claimed = outcome.receipt["output_hash"]
            detail = (f"{cid} {function}: its receipt attests output {claimed[:16]}…, "
                      f"running it here gives {hashlib.sha256(expected).hexdigest()[:16]}…")
            node.trust.prove(peer, Proof.PROVEN_WRONG_OUTPUT, detail)
            raise WrongOutput(f"peer {peer} returned a wrong output and is now shunned: {detail}")
    node.trust.observe(peer, Observation.RECEIPT_VERIFIED)
    return outcome


OPERATIONS = {
    "trust.show": show,
    "trust.top": top,
    "trust.shun": shun,
    "trust.unshun": unshun,
}
