"""The JSON documents that describe capsules and calls to a user.

Shared by ``hypermesh capsule …`` with a short-lived runtime and by the
running node's control socket, so that both print the same shapes.
"""

from __future__ import annotations

import base64
from pathlib import Path

from .admission import Verified, admit
from .cid import is_cid
from .errors import CapsuleError
from .execution import CallResult
from .layout import MANIFEST_FILE, MAX_JSON_BYTES, RECEIPT_FILE, read_bounded
from .manifest import parse_manifest
from .schema import parse_json
from .trust import TrustPolicy


def resolve_target(store_dir: Path, target: str) -> Path:
    """The directory of ``target``: an installed CID in ``store_dir``, or a capsule directory."""
    if is_cid(target):
        stored = Path(store_dir) / target
        if not stored.is_dir():
            kept = Path(store_dir).parent / "quarantine" / target
            if kept.is_dir():
                raise CapsuleError(f"capsule {target} is quarantined; why: {kept / 'diagnostics.json'}")
            raise CapsuleError(f"capsule {target} is not installed in {Path(store_dir).parent.parent}")
        return stored
    path = Path(target)
    if not path.is_dir():
        raise CapsuleError(f"{target} is neither an installed CID nor a capsule directory")
    return path


def call_document(result: CallResult) -> dict:
    """A call's output (text, or ``output_base64`` when not UTF-8) and its signed execution receipt."""
    return output_document(result.output, result.receipt)


def output_document(output: bytes, receipt: dict) -> dict:
    try:
        shown: dict = {"output": output.decode("utf-8")}
    except UnicodeDecodeError:
        shown = {"output_base64": base64.b64encode(output).decode("ascii")}
    return {**shown, "receipt": receipt}


def call_output(document: dict) -> bytes:
    """The output bytes of a :func:`call_document`."""
    if "output" in document:
        return document["output"].encode("utf-8")
    return base64.b64decode(document["output_base64"])


def admission_document(result) -> dict:
    if isinstance(result, Verified):
        return {"status": "verified", "cid": result.cid, "name": result.manifest.name, "version": result.manifest.version,
                "signer": str(result.signer), "trust_zone": result.manifest.trust_zone}
    return {"status": "quarantined", "cid": result.cid, "diagnostics": [d.to_document() for d in result.diagnostics]}


def _summary(directory: Path) -> dict:
    """Name, version, kind and zone from a schema-valid manifest; raises CapsuleError for any other."""
    manifest = parse_manifest(read_bounded(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES))
    return {"name": manifest.name, "version": manifest.version, "kind": manifest.kind, "trust_zone": manifest.trust_zone}


def capsule_rows(capsules_root: Path) -> list[dict]:
    """One row per installed and quarantined capsule under ``<data dir>/capsules``."""
    rows = []
    for status, folder in (("installed", capsules_root / "store"), ("quarantined", capsules_root / "quarantine")):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                summary = _summary(entry)
            except CapsuleError as exc:
                summary = {"malformed": str(exc)}
            rows.append({"cid": entry.name, "status": status, **summary})
    return rows


def inspect_document(directory: Path, policy: TrustPolicy) -> dict:
    """A capsule's admission result under ``policy``, its manifest and its signing receipt."""
    result = admit(directory, policy)
    manifest = parse_json(read_bounded(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES), MANIFEST_FILE, MAX_JSON_BYTES)
    receipt_path = directory / RECEIPT_FILE
    receipt = parse_json(read_bounded(receipt_path, RECEIPT_FILE, MAX_JSON_BYTES), RECEIPT_FILE, MAX_JSON_BYTES) if receipt_path.exists() else None
    return {"directory": str(directory), "admission": admission_document(result), "manifest": manifest, "receipt": receipt}
