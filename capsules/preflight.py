"""Checks before a capsule leaves its author: sign, verify and publish only what a node would run.

Admission checks files, hashes, signature and manifest; a node then compiles
and links the code when it loads it. These functions run both parts without
installing anything, so a broken capsule is refused by the command that
would have spread it rather than by every node that fetches it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .admission import AdmissionResult, Diagnostic, Quarantined, Verified, admit, code_problem
from .engine import CapsuleEngine
from .errors import FormatError, LinkError
from .host import HostServices
from .layout import MANIFEST_FILE, MAX_FILE_BYTES, MAX_JSON_BYTES, read_bounded
from .manifest import Manifest, parse_manifest
from .sandbox import build_sandbox
from .trust import TrustPolicy

logger = logging.getLogger("hypermesh.capsules.preflight")


def check_code(engine: CapsuleEngine, manifest: Manifest, code: bytes) -> None:
    """Compile and link ``code`` as loading would; raises :class:`LinkError` saying why not."""
    host = HostServices("preflight", manifest.label, None, None, logger)
    build_sandbox(engine, code, manifest, manifest.resources, host)


def check_unsigned(directory: Path, engine: CapsuleEngine) -> Manifest:
    """Before signing: the manifest is valid and its code compiles and links. Raises a CapsuleError."""
    directory = Path(directory)
    manifest = parse_manifest(read_bounded(directory / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES))
    path = directory / manifest.impl
    problem = code_problem(manifest, read_bounded(path, manifest.impl, MAX_FILE_BYTES) if path.is_file() else None)
    if problem is not None:
        raise FormatError(str(problem))
    check_code(engine, manifest, read_bounded(path, manifest.impl, MAX_FILE_BYTES))
    return manifest


def verify(directory: Path, policy: TrustPolicy, engine: CapsuleEngine) -> AdmissionResult:
    """Admission, then compiling and linking: what a node would do, as one result."""
    result = admit(directory, policy)
    if isinstance(result, Verified):
        try:
            check_code(engine, result.manifest, result.code)
        except LinkError as exc:
            return Quarantined(result.directory, (Diagnostic("link_error", str(exc), result.manifest.impl),), result.cid,
                               result.manifest)
    return result
