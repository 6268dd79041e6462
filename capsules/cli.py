"""``hypermesh capsule …``: scaffold, build, sign, verify, run and inspect capsules.

The node's main CLI calls :func:`register` with its argparse subparsers and
then ``sys.exit(args.func(args))``; every handler returns an exit status.
Standalone: ``python -m hypermesh.capsules.cli capsule …``.

Errors print one line, ``error: …``, on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import trio

from hypermesh.transport.identity import IdentityError, init_identity, key_path, load_identity

from . import preflight
from .admission import Verified
from .build import LANGUAGES, build_capsule, scaffold
from .chunks import ChunkStore
from .engine import CapsuleEngine
from .errors import CapsuleError
from .executor import CapsuleExecutor, call_input
from .execution import verify_execution_receipt
from .layout import MAX_JSON_BYTES, read_bounded
from .receipt import RECEIPT_FORMAT as SIGNING_RECEIPT_FORMAT
from .receipt import sign_capsule
from .reports import admission_document, call_document, call_output, capsule_rows, inspect_document, resolve_target
from .schema import parse_json
from .trust import POLICY_FILE, TrustPolicy, trust_signer

DEFAULT_DATA_DIR = Path("~/.hypermesh")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser()


def _policy(data_dir: Path) -> TrustPolicy:
    """The node's trust policy, plus its own key when it has one (verify never creates a key)."""
    policy = TrustPolicy.load(data_dir / POLICY_FILE)
    if key_path(data_dir).exists():
        policy.trust(load_identity(data_dir).peer_id)
    return policy


def _emit(args: argparse.Namespace, document: dict, text: str) -> None:
    """``--json``: the document as one JSON object on one line; else the text, newline-terminated."""
    print(json.dumps(document, sort_keys=True) if args.json else text)


def cmd_new(args: argparse.Namespace) -> int:
    directory = scaffold(Path(args.dir), args.name, args.lang)
    _emit(args, {"directory": str(directory), "lang": args.lang},
          f"created {directory} ({args.lang}); next: capsule build {directory} && capsule sign {directory}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    output = build_capsule(Path(args.dir))
    _emit(args, {"impl": str(output), "bytes": output.stat().st_size}, f"built {output} ({output.stat().st_size} bytes)")
    return 0


def _engine(data_dir: Path) -> CapsuleEngine:
    return CapsuleEngine(data_dir / "artifacts")


def cmd_sign(args: argparse.Namespace) -> int:
    engine = _engine(_data_dir(args))
    try:
        preflight.check_unsigned(Path(args.dir), engine)  # sign only what a node would run
    finally:
        engine.close()
    identity, created = init_identity(_data_dir(args))
    if created:
        # Signing with a key nobody has seen before is rarely what was meant: say so.
        print(f"created a new identity {identity.peer_id} in {_data_dir(args)}", file=sys.stderr)
    receipt = sign_capsule(Path(args.dir), identity)
    _emit(args, {"cid": receipt.cid, "signer": str(identity.peer_id), "files": len(receipt.files), "new_identity": created},
          f"signed {args.dir}: {receipt.cid} by {identity.peer_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    engine = _engine(_data_dir(args))
    try:
        result = preflight.verify(Path(args.dir), _policy(_data_dir(args)), engine)
    finally:
        engine.close()
    document = admission_document(result)
    if isinstance(result, Verified):
        _emit(args, document, f"verified {result.cid} {result.manifest.label} signed by {result.signer}")
        return 0
    _emit(args, document, "quarantined: " + result.reason)
    return 1


def _read_input(args: argparse.Namespace) -> bytes:
    return call_input((args.input or "").encode("utf-8"), args.input_file, args.hex_input)


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import CapsuleRuntime

    data = _read_input(args)
    runtime = CapsuleRuntime(_data_dir(args))
    try:
        result = trio.run(CapsuleExecutor(runtime).run, args.target, args.function, data)
        emit_call(args, call_document(result))
    finally:
        runtime.close()
    return 0


def emit_call(args: argparse.Namespace, document: dict) -> None:
    """A call's :func:`call_document` as JSON, or its raw output and a newline;
    ``--receipt FILE`` also writes its execution receipt to FILE."""
    if args.receipt is not None:
        Path(args.receipt).write_bytes(json.dumps(document["receipt"], sort_keys=True).encode() + b"\n")
    if args.json:
        _emit(args, document, "")
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(call_output(document) + b"\n")
        sys.stdout.flush()


def cmd_ls(args: argparse.Namespace) -> int:
    emit_ls(args, {"capsules": capsule_rows(_data_dir(args) / "capsules")})
    return 0


def emit_ls(args: argparse.Namespace, document: dict) -> None:
    rows = document["capsules"]
    _emit(args, document, "\n".join(map(_ls_line, rows)) if rows else "no capsules")


def _ls_line(row: dict) -> str:
    # A running node adds each capsule's lifecycle state.
    status = row["status"] if "state" not in row else f"{row['status']}/{row['state']}"
    if "malformed" in row:
        return f"{row['cid']}  {status:<11}  malformed: {row['malformed']}"
    return f"{row['cid']}  {status:<11}  {row['name']}@{row['version']}  {row['kind']}  {row['trust_zone']}"


def cmd_inspect(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    directory = resolve_target(data_dir / "capsules" / "store", args.target)
    emit_inspect(args, inspect_document(directory, _policy(data_dir)))
    return 0


def emit_inspect(args: argparse.Namespace, document: dict) -> None:
    _emit(args, document, "\n".join(_inspect_lines(document)))


def _inspect_lines(document: dict):
    admission, manifest, receipt = document["admission"], document["manifest"], document["receipt"]
    rows = [("directory", document["directory"]), ("cid", admission["cid"]), ("admission", admission["status"])]
    rows += [("", f"{d['code']}: {d['message']}") for d in admission.get("diagnostics", [])]
    if isinstance(manifest, dict):
        rows += [(key, manifest.get(key)) for key in ("name", "version", "kind", "trust_zone")]
        entry_points = manifest.get("entry_points")
        if isinstance(entry_points, dict):
            rows.append(("entry points", ", ".join(map(str, entry_points))))
        capabilities = manifest.get("capabilities")
        if isinstance(capabilities, dict):
            rows.append(("requires", ", ".join(map(str, capabilities.get("requires") or [])) or "nothing"))
    signer = receipt.get("signer") if isinstance(receipt, dict) else None
    rows.append(("signed by", (signer.get("peer_id") if isinstance(signer, dict) else None) or "unsigned"))
    for label, value in rows:
        yield f"{label + ':' if label else '':<14}{value}"


def cmd_pack(args: argparse.Namespace) -> int:
    store = ChunkStore(_data_dir(args) / "capsules" / "chunks")
    cid, chunk_list = store.pack(Path(args.dir))
    _emit(args, chunk_list.to_document(), f"packed {cid}: {len(chunk_list.unique_chunks)} chunks")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    emit_trust(args, trust_signer(_data_dir(args) / POLICY_FILE, args.peer_id, args.zones))
    return 0


def emit_trust(args: argparse.Namespace, document: dict) -> None:
    zones = next(entry["zones"] for entry in document["signers"] if entry["peer_id"] == args.peer_id)
    _emit(args, document, f"{args.peer_id} may sign for {', '.join(zones)}")


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read(MAX_JSON_BYTES + 1)
    else:
        data = read_bounded(Path(args.file), args.file, MAX_JSON_BYTES)
    document = parse_json(data, args.file, MAX_JSON_BYTES)
    receipt = document.get("receipt", document) if isinstance(document, dict) else document
    if isinstance(receipt, dict) and receipt.get("format") == SIGNING_RECEIPT_FORMAT:
        raise CapsuleError(f"{args.file} is a capsule's signing receipt (its receipt.json), not an execution receipt: "
                           "`capsule verify DIR` checks a capsule's signature; `capsule run … --receipt FILE` "
                           "writes an execution receipt")
    valid = verify_execution_receipt(receipt)
    _emit(args, {"valid": valid, "node": receipt.get("node"), "capsule": receipt.get("capsule")},
          f"{'valid' if valid else 'INVALID'} receipt of {receipt.get('capsule')} by {receipt.get('node')}")
    return 0 if valid else 1


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CapsuleError, IdentityError, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``capsule`` command tree to a parent CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), metavar="DIR",
                        help="the node's directory: identity, settings, records, control socket "
                        "(default $HYPERMESH_DATA_DIR, else ~/.hypermesh)")
    common.add_argument("--json", action="store_true", help="print one JSON object on one line on stdout")
    capsule_help = "build, sign, verify and run WebAssembly capsules"
    capsule = subparsers.add_parser("capsule", help=capsule_help, description=capsule_help)
    commands = capsule.add_subparsers(dest="capsule_command", required=True, metavar="COMMAND")

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(func=_guarded(handler))
        return parser

    new = add("new", cmd_new, "scaffold a capsule source directory")
    new.add_argument("name", help="dotted capsule name, e.g. acme.resize")
    new.add_argument("--lang", choices=LANGUAGES, default="wat", help="source language of the scaffold (default wat)")
    new.add_argument("--dir", default=".", help="parent directory (default: current)")
    capsule_dir_help = "the capsule's directory (manifest.json, src/, impl/)"
    add("build", cmd_build, "compile src/ into impl/").add_argument("dir", help=capsule_dir_help)
    add("sign", cmd_sign, "write receipt.json signed with the node key").add_argument("dir", help=capsule_dir_help)
    add("verify", cmd_verify, "run admission; exit 1 when quarantined").add_argument("dir", help=capsule_dir_help)
    run = add("run", cmd_run, "install a capsule and call one entry point")
    run.add_argument("target", metavar="CID|DIR", help="an installed capsule's CID, or a capsule directory")
    run.add_argument("function", metavar="FUNC", help="the entry point to call")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--input", help="input as a UTF-8 string")
    source.add_argument("--input-file", help="read the input from a file")
    run.add_argument("--hex", dest="hex_input", action="store_true", help="the input is hexadecimal")
    run.add_argument("--receipt", metavar="FILE",
                     help="write the call's execution receipt to FILE (check it with `capsule verify-receipt FILE`)")
    add("ls", cmd_ls, "list installed and quarantined capsules")
    add("inspect", cmd_inspect, "show a capsule's manifest, receipt and admission result").add_argument(
        "target", metavar="CID|DIR", help="an installed capsule's CID, or a capsule directory")
    add("pack", cmd_pack, "cut a signed capsule into chunks in the local chunk store").add_argument(
        "dir", help=capsule_dir_help)
    trust = add("trust", cmd_trust, "let a signer publish capsules into trust zones")
    trust.add_argument("peer_id", help="the signer's peer ID (12D3KooW…)")
    trust.add_argument("--zones", nargs="+", default=["tenant", "session", "ephemeral"],
                       choices=["system", "tenant", "session", "ephemeral"],
                       help="trust zones the signer may publish into (default tenant session ephemeral)")
    verify_receipt = add("verify-receipt", cmd_verify_receipt,
                         "check an execution receipt's signature against the node that signed it")
    verify_receipt.add_argument("file", help="an execution receipt (`capsule run --receipt FILE`), or `capsule run "
                                             "--json` output, as JSON ('-' for stdin)")
    # The node adds its mesh commands (publish, fetch) to the same group.
    capsule.commands = commands
    return capsule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypermesh")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
