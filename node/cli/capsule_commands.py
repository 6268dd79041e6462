"""``hypermesh capsule …`` on the node: the commands that need the mesh (publish,
fetch) or a running node (swap, rollback), and ``run | ls | inspect | trust``
routed to the running node of ``--data-dir`` when there is one (the rest of
``hypermesh capsule …`` lives in :mod:`hypermesh.capsules.cli`, which also
serves those four with a short-lived runtime when no node runs)."""

from __future__ import annotations

import base64
from pathlib import Path

import trio

from hypermesh.capsules import cli as capsule_cli
from hypermesh.capsules.cid import is_cid
from hypermesh.capsules.errors import CapsuleError

from .. import control
from .common import CommandError, add_bootstrap_option, add_command, key_value_lines, node_command, on_node, show


def _in_caller_directory(text: str) -> str:
    """A path made absolute here, in the caller's directory: the node runs elsewhere."""
    return str(Path(text).expanduser().resolve())


def _capsule_target(target: str) -> str:
    return target if is_cid(target) else _in_caller_directory(target)


# --input travels in the control request (base64, bounded by the socket's request limit).
MAX_INLINE_INPUT_BYTES = control.MAX_REQUEST_BYTES * 3 // 4 - 4096


def _input_params(args) -> dict:
    text = (args.input or "").encode("utf-8")
    if len(text) > MAX_INLINE_INPUT_BYTES:
        raise CommandError(f"--input of {len(text)} bytes is over {MAX_INLINE_INPUT_BYTES} for a running node: "
                           "give it with --input-file")
    return {"input_base64": base64.b64encode(text).decode("ascii"),
            "input_file": None if args.input_file is None else _in_caller_directory(args.input_file),
            "hex_input": args.hex_input}


def _run_params(args) -> dict:
    return {"target": _capsule_target(args.target), "function": args.function, **_input_params(args)}


def _run_on(args) -> int:
    """``capsule run --on MADDR CID FUNC``: the peer runs it (asked by the running node, or a short-lived host)."""
    if not is_cid(args.target):
        raise CommandError(f"--on runs an installed or published capsule by CID, not {args.target!r}")

    async def ask():
        verify = {"verify": True} if args.verify else {}
        return await on_node(args, "capsule.run_on", addr=args.on, cid=args.target, function=args.function,
                             **verify, **_input_params(args))

    try:
        document = trio.run(ask)
    except (CapsuleError, ValueError) as exc:  # a refusal, a bad receipt or answer, with no node in between
        raise CommandError(str(exc)) from None
    capsule_cli.emit_call(args, document)
    return 0


# command: (control verb, its parameters from args, how the CLI prints the result)
_ROUTED = {
    "run": ("capsule.run", _run_params, capsule_cli.emit_call),
    "ls": ("capsule.ls", lambda args: {}, capsule_cli.emit_ls),
    "inspect": ("capsule.inspect", lambda args: {"target": _capsule_target(args.target)}, capsule_cli.emit_inspect),
    "trust": ("capsule.trust", lambda args: {"peer_id": args.peer_id, "zones": args.zones}, capsule_cli.emit_trust),
}


async def _call_running_node(args, verb: str, params_of):
    """The running node's answer to ``verb`` with ``params_of(args)``, or None when no node runs in ``--data-dir``."""
    if not control.node_is_running(args.data_dir):
        return None
    try:
        return await control.call(args.data_dir, verb, **params_of(args))
    except control.ControlError as exc:
        if "no node is running" in str(exc):  # a socket left behind by a killed node
            return None
        raise CommandError(str(exc)) from None


def _routed(verb: str, params_of, emit):
    def handler(args) -> int:
        if getattr(args, "on", None) is not None:
            return _run_on(args)
        result = trio.run(_call_running_node, args, verb, params_of)
        if result is None:
            return args.func(args)  # no node: a short-lived runtime does it
        emit(args, result)
        return 0

    return handler


def _swap_lines(report):
    old = report["old_cid"] or "nothing"
    yield f"{report['name']}: {report['outcome']} ({old} -> {report['new_cid']}): {report['reason']}"


def _node_only(verb: str, **fixed):
    def handler(args) -> int:
        def params_of(args) -> dict:
            return {name: getattr(args, attribute) for name, attribute in fixed.items()}

        result = trio.run(_call_running_node, args, verb, params_of)
        if result is None:
            raise CommandError(f"no node is running in {args.data_dir}: only a running node serves capsules; "
                               "start one with `hypermesh run`")
        show(args, result, _swap_lines)
        return 1 if result["outcome"] == "rolled_back" else 0

    return handler


def register(commands) -> None:
    capsule_commands = capsule_cli.register(commands).commands
    for name, (verb, params_of, emit) in _ROUTED.items():
        capsule_commands.choices[name].set_defaults(handler=_routed(verb, params_of, emit))
    capsule_commands.choices["run"].add_argument(
        "--on", metavar="MADDR", action="append",
        help="ask the node at MADDR (ending in /p2p/<peer id>) to run the capsule CID, over /hm/capsule-run/1.0.0; "
             "it fetches the capsule if it may. Repeatable: a running node picks the one it trusts most "
             "(never a shunned one)")
    capsule_commands.choices["run"].add_argument(
        "--verify", action="store_true",
        help="with --on, on a running node: run the capsule here too and, if the peer's output differs, "
             "shun the peer (its signed receipt is the proof)")
    publish = add_command(capsule_commands, "publish", node_command(
        "capsule.publish", lambda result: [result["cid"]], short_lived=False,
        why="it serves the chunks and keeps the provider record published", directory="dir"),
        "announce a signed capsule to the mesh from the running node; prints its CID "
        "(--json: {\"cid\", \"provider\"})")
    publish.add_argument("dir", type=_in_caller_directory, help="the signed capsule's directory")
    fetch = add_bootstrap_option(add_command(capsule_commands, "fetch", node_command(
        "capsule.fetch", key_value_lines, progress_bar=True, cid="cid"),
        "fetch a capsule by CID from its providers, verify and install it"))
    fetch.add_argument("cid", help="the capsule's CID, as `capsule publish` printed it")
    swap = add_command(capsule_commands, "swap", _node_only("capsule.swap", name="name", cid="cid"),
                       "hot-swap the running node's version of NAME for the installed capsule CID "
                       "(exit 1 when the new version failed and was rolled back)")
    swap.add_argument("name", help="capsule name, e.g. examples.echo")
    swap.add_argument("cid", help="CID of the installed version to serve")
    rollback = add_command(capsule_commands, "rollback", _node_only("capsule.rollback", name="name"),
                           "hot-swap NAME back to the version its last swap replaced")
    rollback.add_argument("name", help="capsule name, e.g. examples.echo")
