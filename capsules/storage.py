"""Crash-safe file writes: a write either happened completely or not at all.

Used for everything the runtime persists outside SQLite (receipts, compiled
artifacts, chunks, installed capsules), so that a ``kill -9`` at any point
leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a unique temporary name, fsync, rename over ``path``, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def ensure_private_dir(path: Path) -> Path:
    """Create a directory only the node's user can write (artifacts in it are trusted)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
