"""``hypermesh trust show | top | shun | unshun``: the running node's view of its peers."""

from __future__ import annotations

from ..trust_operations import MAX_TOP
from .common import add_command, node_command, positive, seconds

NEEDS_NODE = "the trust engine lives in the running node"


def _peer_lines(document):
    shun = document["shunned"]
    yield f"peer:         {document['peer_id']}"
    yield f"score:        {document['score']:.1f} / 100 (local {document['local_score']:.1f}, " \
          f"confidence {document['confidence']:.2f}, vouched +{document['vouch_boost']:.1f})"
    yield f"global trust: {document['global_trust']:.6f}"
    for name, value in document["components"].items():
        yield f"  {name:<12} {value:.2f}"
    yield "shunned:      " + ("no" if shun is None else f"{shun['reason']} (until {shun['until']:.0f})")


def _top_lines(result):
    if not result["peers"]:
        yield "no peers observed yet"
    for document in result["peers"]:
        mark = "  shunned" if document["shunned"] else ""
        yield f"{document['score']:6.1f}  {document['confidence']:.2f}  {document['peer_id']}{mark}"


def _unshun_lines(result):
    yield f"{result['peer_id']}: " + ("shun lifted" if result["lifted"] else "was not shunned")


def register(commands) -> None:
    about = "see and steer the running node's trust in its peers"
    group = commands.add_parser("trust", help=about, description=about).add_subparsers(
        dest="trust_command", required=True, metavar="COMMAND")

    show = add_command(group, "show", node_command("trust.show", _peer_lines, short_lived=False, why=NEEDS_NODE,
                                                   peer="peer"),
                       "a peer's score (0-100), its parts, confidence, global trust and shun state")
    show.add_argument("peer", help="the peer's ID (base58)")

    top = add_command(group, "top", node_command("trust.top", _top_lines, short_lived=False, why=NEEDS_NODE,
                                                 limit="limit"),
                      "the peers this node knows, best score first")
    top.add_argument("--limit", type=positive, default=20, metavar="N",
                     help=f"how many peers to list (default 20, at most {MAX_TOP})")

    shun = add_command(group, "shun", node_command("trust.shun", _peer_lines, short_lived=False, why=NEEDS_NODE,
                                                   peer="peer", reason="reason", seconds="seconds"),
                       "refuse a peer's connections, stop dialling it and keep it out of the DHT routing table")
    shun.add_argument("peer", help="the peer's ID (base58)")
    shun.add_argument("--reason", default="shunned by the operator", help="why, kept with the shun (default: "
                                                                          "'shunned by the operator')")
    shun.add_argument("--for", dest="seconds", type=seconds(1.0), default=None, metavar="SECONDS",
                      help="how long the shun lasts (default 30 days)")

    unshun = add_command(group, "unshun", node_command("trust.unshun", _unshun_lines, short_lived=False,
                                                       why=NEEDS_NODE, peer="peer"),
                         "lift a shun")
    unshun.add_argument("peer", help="the peer's ID (base58)")
