"""The quarantine: rejected capsules kept for inspection with their diagnostics.

``<data_dir>/capsules/quarantine/<cid>/`` holds what could safely be copied
of the capsule (or the store's own copy, moved) and ``diagnostics.json``: the
CID of the content actually hashed, the CID its receipt claimed, why it was
rejected and what was not copied. A node restores these at start, so a
quarantined capsule stays quarantined across restarts.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import time
from pathlib import Path

from .admission import Diagnostic, Quarantined
from .cid import is_cid
from .errors import CapsuleError
from .layout import MANIFEST_FILE, MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, MAX_JSON_BYTES, RECEIPT_FILE, read_bounded
from .lifecycle import EventBus, Lifecycle, State
from .manifest import parse_manifest
from .registry import Capsule, CapsuleRegistry
from .storage import atomic_write, ensure_private_dir

logger = logging.getLogger("hypermesh.capsules")
DIAGNOSTICS_FILE = "diagnostics.json"


class Quarantine:
    def __init__(self, directory: Path, registry: CapsuleRegistry, bus: EventBus):
        self.directory = ensure_private_dir(directory)
        self._registry = registry
        self._bus = bus

    def add(self, result: Quarantined, move: bool = False) -> Capsule:
        """Keep the rejected capsule (a copy, or the store's own directory moved) and its diagnostics.

        Its folder is named after the CID of the content admission actually
        hashed: the receipt's CID is only a claim, and a corrupted copy of a
        good capsule must not take that capsule's name.
        """
        label = result.cid or f"unidentified-{time.time_ns()}"
        name = result.manifest.name if result.manifest else None
        target = self._keep(result.directory, label, move, result.diagnostics, result.claimed_cid)
        capsule = Capsule(label, target, Lifecycle(result.cid, name, self._bus), result.manifest, diagnostics=result.diagnostics)
        with self._registry.lock:
            capsule.lifecycle.transition(State.QUARANTINED, result.reason)
            if result.cid is not None and self._registry.lookup(result.cid) is None:
                self._registry.add(capsule, result.cid)
        logger.warning("capsule from %s quarantined: %s", result.directory, result.reason)
        return capsule

    def take(self, capsule: Capsule, diagnostic: Diagnostic) -> None:
        """Quarantine an admitted capsule that failed later (it does not link): out of the store, described."""
        target = self._keep(capsule.directory, capsule.cid, True, (diagnostic,), capsule.cid)
        with self._registry.lock:
            capsule.diagnostics, capsule.directory = (diagnostic,), target
            capsule.lifecycle.transition(State.QUARANTINED, diagnostic.message)
        logger.warning("capsule %s quarantined: %s", capsule.cid, diagnostic)

    def restore(self) -> list[Capsule]:
        """Know again, after a restart, the capsules quarantined before it, with their diagnostics."""
        restored = []
        for folder in sorted(self.directory.iterdir()):
            if not is_cid(folder.name) or self._registry.lookup(folder.name) is not None:
                continue
            try:
                report = json.loads(read_bounded(folder / DIAGNOSTICS_FILE, DIAGNOSTICS_FILE, MAX_JSON_BYTES))
                diagnostics = tuple(Diagnostic(str(d["code"]), str(d["message"]), d.get("path"), d.get("expected"), d.get("found"))
                                    for d in report["diagnostics"])
            except (CapsuleError, ValueError, KeyError, TypeError) as exc:
                logger.warning("quarantined capsule %s has no readable %s: %s", folder.name, DIAGNOSTICS_FILE, exc)
                continue
            try:
                manifest = parse_manifest(read_bounded(folder / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES))
            except CapsuleError:
                manifest = None
            capsule = Capsule(folder.name, folder, Lifecycle(folder.name, manifest.name if manifest else None, self._bus),
                              manifest, diagnostics=diagnostics)
            with self._registry.lock:
                capsule.lifecycle.transition(State.QUARANTINED, "; ".join(str(d) for d in diagnostics))
                if self._registry.lookup(folder.name) is None:
                    self._registry.add(capsule, folder.name)
                    restored.append(capsule)
        return restored

    def _keep(self, source: Path, label: str, move: bool, diagnostics: tuple[Diagnostic, ...], claimed_cid: str | None) -> Path:
        """Move or copy ``source`` to ``<quarantine>/<label>`` and write its diagnostics.json there."""
        target = self.directory / label
        skipped: list[str] = []
        if target.exists():
            if move:
                shutil.rmtree(source, ignore_errors=True)
        elif move:
            source.rename(target)
        else:
            skipped = copy_for_inspection(source, target)
        report = {"cid": label if is_cid(label) else None, "claimed_cid": claimed_cid, "source": str(source),
                  "diagnostics": [d.to_document() for d in diagnostics], "not_copied": skipped}
        atomic_write(target / DIAGNOSTICS_FILE, json.dumps(report, indent=2).encode())
        return target


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
