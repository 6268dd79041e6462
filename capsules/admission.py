"""Admission: decide whether a capsule directory may run on this node.

Checks, in order, each failure becoming a :class:`Diagnostic`:

1. the layout is safe (no symlinks, traversal, special or oversized files);
2. receipt.json and manifest.json parse and match their JSON Schemas;
3. the receipt lists exactly the files present, and every hash matches;
4. the root hash and the CID follow from those hashes;
5. the signer's public key matches its peer ID and the signature verifies;
6. the trust policy lets that signer sign for the manifest's trust zone, and
   the zone grants every capability the manifest requires;
7. the code file named by the manifest is WebAssembly of the declared kind.

All hash mismatches are reported, not just the first, so that an operator
inspecting a quarantined capsule sees the whole damage at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from hypermesh.transport.identity import IdentityError, PeerId, verify_signature

from .cid import cid_from_digest
from .errors import FormatError
from .layout import MANIFEST_FILE, MAX_FILE_BYTES, MAX_JSON_BYTES, RECEIPT_FILE, list_capsule_files, read_bounded
from .manifest import KIND_COMPONENT, Manifest, parse_manifest
from .receipt import Receipt, parse_receipt, root_hash, signed_message
from .trust import TrustPolicy

WASM_MAGIC = b"\x00asm"
# The version field tells a core module (1) from a component (0x0d, layer 1).
WASM_CORE_VERSION = b"\x01\x00\x00\x00"
WASM_COMPONENT_VERSION = b"\x0d\x00\x01\x00"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One failed check: a stable code, the file concerned, expected vs found."""

    code: str
    message: str
    path: str | None = None
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected}, found {self.found})"
        return text

    def to_document(self) -> dict:
        return {key: value for key, value in (("code", self.code), ("message", self.message), ("path", self.path),
                                              ("expected", self.expected), ("found", self.found)) if value is not None}


@dataclass(frozen=True, slots=True)
class Verified:
    directory: Path
    cid: str
    manifest: Manifest
    receipt: Receipt
    code: bytes = field(repr=False)

    verified = True

    @property
    def signer(self) -> PeerId:
        return self.receipt.signer


@dataclass(frozen=True, slots=True)
class Quarantined:
    directory: Path
    diagnostics: tuple[Diagnostic, ...]
    # The CID of the content actually hashed (None when a file could not be
    # read): quarantine is keyed by it, never by what the receipt claims.
    cid: str | None = None
    manifest: Manifest | None = None
    claimed_cid: str | None = None

    verified = False

    @property
    def reason(self) -> str:
        return "; ".join(str(d) for d in self.diagnostics)


AdmissionResult = Verified | Quarantined


def _hex(digest: bytes) -> str:
    return digest.hex()


def admit(directory: Path, policy: TrustPolicy) -> AdmissionResult:
    """Run every admission check on ``directory``; never raises for a bad capsule."""
    directory = Path(directory)

    claimed: str | None = None

    def quarantine(*diagnostics: Diagnostic, cid: str | None = None, manifest: Manifest | None = None) -> Quarantined:
        return Quarantined(directory, tuple(diagnostics), cid, manifest, claimed)

    try:
        listed = list_capsule_files(directory)
    except FormatError as exc:
        return quarantine(Diagnostic("malformed", str(exc)))
    try:
        receipt = parse_receipt(read_bounded(directory / RECEIPT_FILE, RECEIPT_FILE, MAX_JSON_BYTES))
    except FormatError as exc:
        return quarantine(Diagnostic("malformed", str(exc), RECEIPT_FILE))
    claimed = receipt.cid

    present = {item.path for item in listed}
    problems: list[Diagnostic] = []
    for path in sorted(present - receipt.files.keys()):
        problems.append(Diagnostic("unlisted_file", f"{path} is not covered by receipt.json", path, "absent", "present"))
    for path in sorted(receipt.files.keys() - present):
        problems.append(Diagnostic("missing_file", f"receipt.json lists {path}, which is missing", path, "present", "absent"))
    contents: dict[str, bytes] = {}
    found_hashes: dict[str, bytes] = {}
    for path in sorted(present):
        try:
            data = read_bounded(directory / path, path, MAX_FILE_BYTES)
        except FormatError as exc:
            problems.append(Diagnostic("malformed", str(exc), path))
            continue
        found_hashes[path] = found = hashlib.sha256(data).digest()
        if path not in receipt.files:
            continue
        if found != receipt.files[path]:
            problems.append(Diagnostic("hash_mismatch", f"{path} does not match its hash in receipt.json", path,
                                       _hex(receipt.files[path]), _hex(found)))
        contents[path] = data
    # What these files are, whatever the receipt says.
    content_cid = cid_from_digest(root_hash(found_hashes)) if len(found_hashes) == len(present) else None
    if problems:
        return quarantine(*problems, cid=content_cid)

    root = root_hash(receipt.files)
    if root != receipt.root:
        return quarantine(Diagnostic("root_mismatch", "receipt.json root is not the hash of its file list",
                                     RECEIPT_FILE, _hex(root), _hex(receipt.root)), cid=content_cid)
    cid = cid_from_digest(root)
    if cid != receipt.cid:
        return quarantine(Diagnostic("cid_mismatch", "receipt.json cid does not follow from its root", RECEIPT_FILE, cid, receipt.cid),
                          cid=content_cid)

    try:
        key_matches = receipt.signer.matches_public_key(receipt.signer_key)
        signature_ok = key_matches and verify_signature(receipt.signer_key, signed_message(root), receipt.signature)
    except IdentityError as exc:
        return quarantine(Diagnostic("bad_signer_key", f"receipt.json signer public_key: {exc}", RECEIPT_FILE), cid=cid)
    if not key_matches:
        return quarantine(Diagnostic("signer_mismatch", "receipt.json signer peer_id does not match its public_key",
                                     RECEIPT_FILE, str(PeerId.from_public_key(receipt.signer_key)), str(receipt.signer)), cid=cid)
    if not signature_ok:
        return quarantine(Diagnostic("bad_signature", f"signature by {receipt.signer} does not verify over root {_hex(root)}",
                                     RECEIPT_FILE, "a valid Ed25519 signature", receipt.signature.hex()[:16] + "…"), cid=cid)

    try:
        manifest = parse_manifest(contents[MANIFEST_FILE])
    except FormatError as exc:
        return quarantine(Diagnostic("malformed", str(exc), MANIFEST_FILE), cid=cid)

    if not policy.allows(receipt.signer, manifest.trust_zone):
        zones = sorted(policy.zones_for(receipt.signer))
        return quarantine(Diagnostic("untrusted_signer", f"signer {receipt.signer} may not sign for trust zone {manifest.trust_zone!r}",
                                     RECEIPT_FILE, f"a signer trusted for {manifest.trust_zone}",
                                     f"{receipt.signer} trusted for {zones or 'no zone'}"), cid=cid, manifest=manifest)
    granted = policy.zone_limits[manifest.trust_zone].capabilities
    refused = sorted(manifest.requires - granted)
    if refused:
        return quarantine(Diagnostic("capability_refused", f"trust zone {manifest.trust_zone!r} does not grant {refused}",
                                     MANIFEST_FILE, f"a subset of {sorted(granted)}", str(sorted(manifest.requires))),
                          cid=cid, manifest=manifest)

    problem = code_problem(manifest, contents.get(manifest.impl))
    if problem is not None:
        return quarantine(problem, cid=cid, manifest=manifest)
    return Verified(directory, cid, manifest, receipt, contents[manifest.impl])


def code_problem(manifest: Manifest, code: bytes | None) -> Diagnostic | None:
    """Why ``code`` cannot be the manifest's ``impl`` (absent, or WebAssembly of the wrong kind), or None."""
    if code is None:
        return Diagnostic("missing_file", f"manifest impl {manifest.impl} is not in the capsule", manifest.impl, "present", "absent")
    expected_version = WASM_COMPONENT_VERSION if manifest.kind == KIND_COMPONENT else WASM_CORE_VERSION
    if code[:4] != WASM_MAGIC or code[4:8] != expected_version:
        return Diagnostic("wrong_code_kind", f"{manifest.impl} is not a WebAssembly {manifest.kind}", manifest.impl,
                          (WASM_MAGIC + expected_version).hex(), code[:8].hex())
    return None
