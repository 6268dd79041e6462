"""The node's data directory: one running node at a time.

``hypermesh run`` takes an exclusive lock on the directory itself (flock on
its file descriptor, released by the kernel when the process ends, even by
SIGKILL), before it listens or opens anything in it, so a second node on the
same directory refuses at once and changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


class DataDirBusy(Exception):
    """Another node holds the data directory."""


@contextlib.contextmanager
def locked_data_dir(data_dir: Path) -> Iterator[Path]:
    """Hold ``data_dir`` (created with mode 0700 if missing) for the block."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(
                f"another node is already running in {data_dir}; stop it first, or give this one another --data-dir"
            ) from None
        yield data_dir
    finally:
        os.close(fd)  # releases the lock
