"""``hypermesh capsule publish | fetch``: the capsule commands that need the mesh
(the rest of ``hypermesh capsule …`` lives in :mod:`hypermesh.capsules.cli`)."""

from __future__ import annotations

from hypermesh.capsules import cli as capsule_cli

from .common import add_bootstrap_option, add_command, key_value_lines, node_command


def register(commands) -> None:
    capsule_commands = capsule_cli.register(commands).commands
    publish = add_command(capsule_commands, "publish", node_command(
        "capsule.publish", lambda result: [result["cid"]], short_lived=False,
        why="it serves the chunks and keeps the provider record published", directory="dir"),
        "announce a signed capsule to the mesh from the running node; prints its CID "
        "(--json: {\"cid\", \"provider\"})")
    publish.add_argument("dir", help="the signed capsule's directory")
    fetch = add_bootstrap_option(add_command(capsule_commands, "fetch", node_command(
        "capsule.fetch", key_value_lines, progress_bar=True, cid="cid"),
        "fetch a capsule by CID from its providers, verify and install it"))
    fetch.add_argument("cid", help="the capsule's CID, as `capsule publish` printed it")
