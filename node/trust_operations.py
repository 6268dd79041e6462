"""What a running node tells and does about trust (control socket verbs ``trust.*``).

``hypermesh trust show | top | shun | unshun`` need a running node: the
trust engine lives in it, and a shun must reach its transport and DHT.
"""

from __future__ import annotations

from hypermesh.transport.identity import IdentityError, PeerId
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


OPERATIONS = {
    "trust.show": show,
    "trust.top": top,
    "trust.shun": shun,
    "trust.unshun": unshun,
}
