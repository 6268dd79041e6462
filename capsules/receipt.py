"""Build receipts: the signed list of a capsule's file hashes.

The root hash commits to every covered file (path and content)::

    root = sha256("hypermesh-capsule-root/1\\n" ||
                  for each path in byte order: path || 0x00 || sha256(file) || "\\n")

The capsule's CID is the CID of ``root`` and the builder signs
``"hypermesh-capsule-receipt/1" || 0x00 || root`` with its node key. The
signature covers the manifest (through its hash), so the trust zone, the
capabilities and the limits are all signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hypermesh.transport.identity import Identity, IdentityError, PeerId

from . import schema
from .cid import cid_from_digest
from .errors import FormatError
from .storage import atomic_write
from .layout import MAX_FILE_BYTES, MAX_JSON_BYTES, RECEIPT_FILE, list_capsule_files, read_bounded

RECEIPT_FORMAT = "hypermesh-capsule-receipt/1"
_ROOT_DOMAIN = b"hypermesh-capsule-root/1\n"
_SIGNATURE_DOMAIN = b"hypermesh-capsule-receipt/1\x00"


def root_hash(file_hashes: dict[str, bytes]) -> bytes:
    digest = hashlib.sha256(_ROOT_DOMAIN)
    for path in sorted(file_hashes, key=lambda p: p.encode("utf-8")):
        digest.update(path.encode("utf-8") + b"\x00" + file_hashes[path] + b"\n")
    return digest.digest()


def signed_message(root: bytes) -> bytes:
    return _SIGNATURE_DOMAIN + root


def hash_capsule_files(directory: Path) -> dict[str, bytes]:
    """sha2-256 of every covered file, read safely (see :mod:`layout`)."""
    return {
        item.path: hashlib.sha256(read_bounded(Path(directory) / item.path, item.path, MAX_FILE_BYTES)).digest()
        for item in list_capsule_files(directory)
    }


@dataclass(frozen=True, slots=True)
class Receipt:
    files: dict[str, bytes]
    root: bytes
    cid: str
    signer_key: bytes
    signer: PeerId
    signature: bytes

    def to_document(self) -> dict:
        return {
            "format": RECEIPT_FORMAT,
            "files": {path: digest.hex() for path, digest in sorted(self.files.items())},
            "root": self.root.hex(),
            "cid": self.cid,
            "signer": {"public_key": self.signer_key.hex(), "peer_id": self.signer.to_base58()},
            "signature": self.signature.hex(),
        }

    def to_bytes(self) -> bytes:
        # Canonical form: no insignificant whitespace, so that any flipped
        # byte changes something admission checks.
        return schema.canonical_json(self.to_document())


def parse_receipt(data: bytes) -> Receipt:
    """Decode receipt.json; the hashes and signature are checked by admission."""
    doc = schema.decode_document(data, schema.RECEIPT, RECEIPT_FILE, MAX_JSON_BYTES)
    try:
        signer = PeerId.from_base58(doc["signer"]["peer_id"])
    except IdentityError as exc:
        raise FormatError(f"receipt.json signer/peer_id: {exc}") from None
    return Receipt(
        files={path: bytes.fromhex(value) for path, value in doc["files"].items()},
        root=bytes.fromhex(doc["root"]),
        cid=doc["cid"],
        signer_key=bytes.fromhex(doc["signer"]["public_key"]),
        signer=signer,
        signature=bytes.fromhex(doc["signature"]),
    )


def sign_capsule(directory: Path, identity: Identity) -> Receipt:
    """Hash the capsule's files, sign the root and write receipt.json atomically."""
    directory = Path(directory)
    files = hash_capsule_files(directory)
    root = root_hash(files)
    receipt = Receipt(
        files=files,
        root=root,
        cid=cid_from_digest(root),
        signer_key=identity.public_key_proto,
        signer=identity.peer_id,
        signature=identity.sign(signed_message(root)),
    )
    atomic_write(directory / RECEIPT_FILE, receipt.to_bytes())
    return receipt
