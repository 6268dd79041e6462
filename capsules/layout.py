"""The on-disk layout of a capsule and a walker that refuses anything unsafe.

A capsule directory holds ``manifest.json``, ``receipt.json``, ``spec/`` and
``impl/``. Only those are ever read: other top-level entries (a ``src/``
folder, build outputs) are ignored, never hashed and never copied. Within
``spec/`` and ``impl/`` the walker refuses symlinks, special files, names
that could escape the directory or confuse another file system, too many
files, too deep a tree and files over the size limits, before reading a byte.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError

MANIFEST_FILE = "manifest.json"
RECEIPT_FILE = "receipt.json"
SPEC_DIR = "spec"
IMPL_DIR = "impl"

# A componentize-py guest is about 18 MB; leave room for larger runtimes.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_FILES = 1024
MAX_DEPTH = 8
MAX_JSON_BYTES = 1024 * 1024
# Portable names only: no separators, no leading dot (so no "." or ".."), no
# control or shell characters, nothing that case-folds or normalises differently.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class CapsuleFile:
    """A regular file of the capsule: its relative POSIX path and size."""

    path: str
    size: int


def check_relative_path(path: str) -> str:
    """Validate a capsule-relative POSIX path (as found in a receipt or chunk list)."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise FormatError(f"invalid capsule path {path!r}")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH + 1:
        raise FormatError(f"path {path!r} is nested deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not _SAFE_NAME.match(part):
            raise FormatError(f"path {path!r} has an unsafe component {part!r} (traversal, hidden or odd name)")
    if path != MANIFEST_FILE and parts[0] not in (SPEC_DIR, IMPL_DIR):
        raise FormatError(f"path {path!r} is outside manifest.json, spec/ and impl/")
    if parts[0] in (SPEC_DIR, IMPL_DIR) and len(parts) < 2:
        raise FormatError(f"path {path!r} names a directory, not a file")
    return path


def _lstat_regular(path: Path, shown: str) -> os.stat_result:
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise FormatError(f"{shown} is missing") from None
    if stat.S_ISLNK(info.st_mode):
        raise FormatError(f"{shown} is a symlink; capsules may not contain symlinks")
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{shown} is not a regular file")
    return info


def read_bounded(path: Path, shown: str, limit: int) -> bytes:
    """Read a regular file (never through a symlink) of at most ``limit`` bytes."""
    info = _lstat_regular(path, shown)
    if info.st_size > limit:
        raise FormatError(f"{shown} is {info.st_size} bytes, over the {limit}-byte limit")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FormatError(f"{shown} grew past the {limit}-byte limit while being read")
    return data


def list_capsule_files(root: Path) -> list[CapsuleFile]:
    """Every file the receipt must cover: manifest.json, then spec/** and impl/*, sorted.

    ``impl/`` is flat (code files only); ``spec/`` may nest up to ``MAX_DEPTH``.
    """
    root = Path(root)
    root_info = root.lstat() if root.exists() or root.is_symlink() else None
    if root_info is None:
        raise FormatError(f"capsule directory {root} does not exist")
    if stat.S_ISLNK(root_info.st_mode) or not stat.S_ISDIR(root_info.st_mode):
        raise FormatError(f"capsule path {root} is not a directory (symlinks are refused)")
    manifest_info = _lstat_regular(root / MANIFEST_FILE, MANIFEST_FILE)
    found = [CapsuleFile(MANIFEST_FILE, manifest_info.st_size)]
    total = manifest_info.st_size
    for top in (SPEC_DIR, IMPL_DIR):
        base = root / top
        if not base.exists() and not base.is_symlink():
            if top == IMPL_DIR:
                raise FormatError("impl/ is missing: a capsule needs its code")
            continue
        pending: list[tuple[Path, str, int]] = [(base, top, 1)]
        while pending:
            directory, shown, depth = pending.pop()
            info = directory.lstat()
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                raise FormatError(f"{shown} is not a plain directory (symlinks are refused)")
            for entry in sorted(os.listdir(directory)):
                relative = f"{shown}/{entry}"
                check_relative_path(relative)
                child = directory / entry
                child_info = child.lstat()
                if stat.S_ISDIR(child_info.st_mode):
                    if top == IMPL_DIR:
                        raise FormatError(f"{relative} is a directory; impl/ must be flat")
                    if depth >= MAX_DEPTH:
                        raise FormatError(f"{relative} is nested deeper than {MAX_DEPTH} levels")
                    pending.append((child, relative, depth + 1))
                    continue
                _lstat_regular(child, relative)
                if child_info.st_size > MAX_FILE_BYTES:
                    raise FormatError(f"{relative} is {child_info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit")
                found.append(CapsuleFile(relative, child_info.st_size))
                total += child_info.st_size
                if len(found) > MAX_FILES:
                    raise FormatError(f"capsule has more than {MAX_FILES} files")
                if total > MAX_TOTAL_BYTES:
                    raise FormatError(f"capsule is over the {MAX_TOTAL_BYTES}-byte total size limit")
    found.sort(key=lambda item: item.path.encode("utf-8"))
    return found
