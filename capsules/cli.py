"""``hypermesh capsule …``: scaffold, build, sign, verify, run and inspect capsules.

The node's main CLI calls :func:`register` with its argparse subparsers and
then ``sys.exit(args.func(args))``; every handler returns an exit status.
Standalone: ``python -m hypermesh.capsules.cli capsule …``.

Errors print one line, ``error: …``, on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any, Callable

from hypermesh.transport.identity import IdentityError, init_identity, key_path, load_identity

from .admission import Verified, admit
from .build import LANGUAGES, build_capsule, scaffold
from .chunks import ChunkStore
from .cid import is_cid
from .errors import CapsuleError
from .execution import verify_execution_receipt
from .layout import MANIFEST_FILE, MAX_JSON_BYTES, RECEIPT_FILE, read_bounded
from .receipt import sign_capsule
from .schema import parse_json
from .trust import POLICY_FILE, TrustPolicy

DEFAULT_DATA_DIR = Path("~/.hypermesh")
MAX_CLI_INPUT_BYTES = 64 * 1024 * 1024


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser()


def _policy(data_dir: Path) -> TrustPolicy:
    """The node's trust policy, plus its own key when it has one (verify never creates a key)."""
    policy = TrustPolicy.load(data_dir / POLICY_FILE)
    if key_path(data_dir).exists():
        policy.trust(load_identity(data_dir).peer_id)
    return policy


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, indent=2, sort_keys=True) if args.json else text)


def cmd_new(args: argparse.Namespace) -> int:
    directory = scaffold(Path(args.dir), args.name, args.lang)
    _emit(args, {"directory": str(directory), "lang": args.lang},
          f"created {directory} ({args.lang}); next: capsule build {directory} && capsule sign {directory}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    output = build_capsule(Path(args.dir))
    _emit(args, {"impl": str(output), "bytes": output.stat().st_size}, f"built {output} ({output.stat().st_size} bytes)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    identity, created = init_identity(_data_dir(args))
    receipt = sign_capsule(Path(args.dir), identity)
    _emit(args, {"cid": receipt.cid, "signer": str(identity.peer_id), "files": len(receipt.files), "new_identity": created},
          f"signed {args.dir}: {receipt.cid} by {identity.peer_id}")
    return 0


def _admission_document(result) -> dict:
    if isinstance(result, Verified):
        return {"status": "verified", "cid": result.cid, "name": result.manifest.name, "version": result.manifest.version,
                "signer": str(result.signer), "trust_zone": result.manifest.trust_zone}
    return {"status": "quarantined", "cid": result.cid, "diagnostics": [d.to_document() for d in result.diagnostics]}


def cmd_verify(args: argparse.Namespace) -> int:
    result = admit(Path(args.dir), _policy(_data_dir(args)))
    document = _admission_document(result)
    if isinstance(result, Verified):
        _emit(args, document, f"verified {result.cid} {result.manifest.label} signed by {result.signer}")
        return 0
    _emit(args, document, "quarantined: " + result.reason)
    return 1


def _read_input(args: argparse.Namespace) -> bytes:
    if args.input_file is not None:
        data = read_bounded(Path(args.input_file), args.input_file, MAX_CLI_INPUT_BYTES)
    else:
        data = (args.input or "").encode("utf-8")
    if args.hex_input:
        try:
            return bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CapsuleError("--hex input is not hexadecimal") from None
    return data


def _resolve(data_dir: Path, target: str) -> Path:
    if is_cid(target):
        stored = data_dir / "capsules" / "store" / target
        if not stored.is_dir():
            raise CapsuleError(f"capsule {target} is not installed in {data_dir}")
        return stored
    path = Path(target)
    if not path.is_dir():
        raise CapsuleError(f"{target} is neither an installed CID nor a capsule directory")
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import CapsuleRuntime

    data = _read_input(args)
    data_dir = _data_dir(args)
    runtime = CapsuleRuntime(data_dir)
    try:
        capsule = runtime.install(_resolve(data_dir, args.target))
        if capsule.diagnostics:
            raise CapsuleError("capsule is quarantined: " + "; ".join(str(d) for d in capsule.diagnostics))
        runtime.activate(capsule.cid)
        result = runtime.call(capsule.cid, args.function, data)
    finally:
        runtime.close()
    if args.json:
        try:
            shown: dict = {"output": result.output.decode("utf-8")}
        except UnicodeDecodeError:
            shown = {"output_base64": base64.b64encode(result.output).decode("ascii")}
        print(json.dumps({**shown, "receipt": result.receipt}, indent=2, sort_keys=True))
    else:
        sys.stdout.buffer.write(result.output + (b"\n" if sys.stdout.isatty() else b""))
    return 0


def _summary(directory: Path) -> dict:
    manifest = parse_json(read_bounded(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES), MANIFEST_FILE, MAX_JSON_BYTES)
    return {key: manifest.get(key) for key in ("name", "version", "kind", "trust_zone")}


def cmd_ls(args: argparse.Namespace) -> int:
    root = _data_dir(args) / "capsules"
    rows = []
    for status, folder in (("installed", root / "store"), ("quarantined", root / "quarantine")):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                summary = _summary(entry)
            except CapsuleError:
                summary = {}
            rows.append({"cid": entry.name, "status": status, **summary})
    lines = [f"{r['cid']}  {r['status']:<11}  {r.get('name')}@{r.get('version')}  {r.get('kind')}  {r.get('trust_zone')}" for r in rows]
    _emit(args, rows, "\n".join(lines) if lines else "no capsules")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    directory = _resolve(data_dir, args.target)
    result = admit(directory, _policy(data_dir))
    manifest = parse_json(read_bounded(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES), MANIFEST_FILE, MAX_JSON_BYTES)
    receipt_path = directory / RECEIPT_FILE
    receipt = parse_json(read_bounded(receipt_path, RECEIPT_FILE, MAX_JSON_BYTES), RECEIPT_FILE, MAX_JSON_BYTES) if receipt_path.exists() else None
    document = {"directory": str(directory), "admission": _admission_document(result), "manifest": manifest, "receipt": receipt}
    text = json.dumps(document, indent=2, sort_keys=True)
    _emit(args, document, text)
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    store = ChunkStore(_data_dir(args) / "capsules" / "chunks")
    cid, chunk_list = store.pack(Path(args.dir))
    _emit(args, chunk_list.to_document(), f"packed {cid}: {len(chunk_list.unique_chunks)} chunks")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    path = _data_dir(args) / POLICY_FILE
    policy = TrustPolicy.load(path)
    policy.trust(args.peer_id, args.zones)
    policy.save(path)
    _emit(args, policy.to_document(), f"{args.peer_id} may sign for {', '.join(sorted(policy.signers[args.peer_id]))}")
    return 0


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read(MAX_JSON_BYTES + 1)
    else:
        data = read_bounded(Path(args.file), args.file, MAX_JSON_BYTES)
    document = parse_json(data, args.file, MAX_JSON_BYTES)
    receipt = document.get("receipt", document) if isinstance(document, dict) else document
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
                        help="the node's directory: identity, records, control socket (default ~/.hypermesh)")
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
    verify_receipt.add_argument("file", help="a receipt, or `capsule run --json` output, as JSON ('-' for stdin)")
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
