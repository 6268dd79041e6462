"""The quarantine: rejected capsules kept for inspection with their diagnostics.

``<data_dir>/capsules/quarantine/<label>/`` holds what could safely be copied
of the capsule and ``diagnostics.json`` (why it was rejected, what was not
copied).
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import time
from pathlib import Path

from .admission import Quarantined
from .layout import MANIFEST_FILE, MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, RECEIPT_FILE, read_bounded
from .lifecycle import EventBus, Lifecycle, State
from .registry import Capsule, CapsuleRegistry
from .storage import atomic_write, ensure_private_dir

logger = logging.getLogger("hypermesh.capsules")


class Quarantine:
    def __init__(self, directory: Path, registry: CapsuleRegistry, bus: EventBus):
        self.directory = ensure_private_dir(directory)
        self._registry = registry
        self._bus = bus

    def add(self, result: Quarantined, move: bool = False) -> Capsule:
        """Keep the rejected capsule (a copy, or the store's own directory moved) and its diagnostics."""
        label = result.cid or f"unidentified-{time.time_ns()}"
        name = result.manifest.name if result.manifest else None
        target = self.directory / label
        if target.exists():
            skipped = []
            if move:
                shutil.rmtree(result.directory, ignore_errors=True)
        elif move:
            # A stored capsule failed re-admission (tampered at rest): take it out of the store.
            result.directory.rename(target)
            skipped = []
        else:
            skipped = copy_for_inspection(result.directory, target)
        report = {"cid": result.cid, "source": str(result.directory), "diagnostics": [d.to_document() for d in result.diagnostics],
                  "not_copied": skipped}
        atomic_write(target / "diagnostics.json", json.dumps(report, indent=2).encode())
        capsule = Capsule(label, target, Lifecycle(result.cid, name, self._bus), result.manifest, diagnostics=result.diagnostics)
        with self._registry.lock:
            capsule.lifecycle.transition(State.QUARANTINED, result.reason)
            if result.cid is not None and self._registry.lookup(result.cid) is None:
                self._registry.add(capsule, result.cid)
        logger.warning("capsule from %s quarantined: %s", result.directory, result.reason)
        return capsule


def copy_for_inspection(source: Path, target: Path) -> list[str]:
    """Copy what can safely be copied of a capsule directory; returns what was left out and why.

    Only regular files within the size limits are copied: a symlink is not
    followed, a FIFO would block the copy, a device must not be read.
    """
    skipped: list[str] = []
    copied = 0
    target.mkdir(parents=True, exist_ok=True)
    for top in (MANIFEST_FILE, RECEIPT_FILE, "spec", "impl"):
        pending = [source / top]
        while pending:
            path = pending.pop()
            relative = path.relative_to(source).as_posix()
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if len(relative.split("/")) <= MAX_DEPTH:
                    pending.extend(path.iterdir())
                continue
            if not stat.S_ISREG(info.st_mode):
                skipped.append(f"{relative}: not a regular file")
            elif info.st_size > MAX_FILE_BYTES or copied >= MAX_FILES:
                skipped.append(f"{relative}: over the size or count limit")
            else:
                atomic_write(target / relative, read_bounded(path, relative, MAX_FILE_BYTES))
                copied += 1
    return skipped
