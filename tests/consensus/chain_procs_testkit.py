"""Validators as separate processes (chain_validator_proc.py), watched through what they print.

A :class:`ProcessChain` starts the processes, keeps what each reported (its
decisions by height, its latest status) and waits, boundedly, for conditions
over all of them: every line a process prints is an event that wakes the
wait, so nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypermesh.consensus.genesis import genesis_to_json
from hypermesh.consensus.wire import Proposal, decode_message, signer_of
from ledger_testkit import VALIDATOR_IDS, key

PROC = Path(__file__).parent / "chain_validator_proc.py"
SIGNED_LOG = "signed.log"
# Bounds one wait for the chain (starting four Python processes on two loaded cores included); loopback and
# namespaced links commit in well under a second.
WAIT = 60.0


@dataclass
class Validator:
    index: int
    data_dir: Path
    listen: str
    process: subprocess.Popen | None = None
    addrs: list[str] = field(default_factory=list)
    # What it decided, by height: (block ID, state root); from every incarnation.
    decided: dict[int, tuple[str, str]] = field(default_factory=dict)
    decided_at: dict[int, float] = field(default_factory=dict)  # wall-clock time of each decision
    # Who signed each decision's certificate (indices in that height's validator set).
    signers: dict[int, list[int]] = field(default_factory=dict)
    status: dict = field(default_factory=dict)  # the latest
    statuses: int = 0  # how many it reported
    # Validators it saw equivocate (evidence it detected), and those the evidence in its decided blocks names.
    evidence: set[str] = field(default_factory=set)
    evidence_in: dict[int, list[str]] = field(default_factory=dict)
    double_signed: int = 0
    killed: bool = False  # by the test: its output ending is expected

    @property
    def key(self) -> str:
        return key(VALIDATOR_IDS[self.index]).hex()

    @property
    def height(self) -> int:
        """The latest height it decided (0: none yet)."""
        return max(self.decided, default=0)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ProcessChain:
    """Validators of ``genesis`` (indices into VALIDATOR_IDS), each a process; ``wrap`` prefixes a
    validator's command (``ip netns exec NAME``)."""

    def __init__(self, root: Path, genesis, listens: list[str], wrap=lambda index: []):
        self.root = root
        self.genesis_file = root / "genesis.json"
        self.genesis_file.write_text(genesis_to_json(genesis))
        self.validators = [Validator(i, root / f"v{i}", listen) for i, listen in enumerate(listens)]
        self._wrap = wrap
        self._events: queue.Queue = queue.Queue()

    # ------------------------------------------------------------ processes

    def start(self, indices, peers=lambda index: [], double_sign=()) -> None:
        """Start validators ``indices`` (at once: Python takes seconds to start on a loaded machine), each given
        ``peers(index)`` to dial; until each listens."""
        for index in indices:
            validator = self.validators[index]
            validator.data_dir.mkdir(exist_ok=True)
            validator.addrs = []
            validator.killed = False
            command = [*self._wrap(index), sys.executable, str(PROC), "--genesis", str(self.genesis_file),
                       "--validator", str(index), "--data-dir", str(validator.data_dir), "--listen", validator.listen]
            for peer in peers(index):
                command += ["--peer", peer]
            if index in double_sign:
                command.append("--double-sign")
            with open(validator.data_dir / "stderr.log", "a") as stderr:
                validator.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                     stderr=stderr, text=True)
            threading.Thread(target=self._read, args=(index, validator.process), daemon=True).start()
        self.wait_until(lambda: all(self.validators[i].addrs for i in indices), f"validators {list(indices)} listening")

    def start_on_loopback(self, indices=None, double_sign=()) -> None:
        """Start validators (all by default) and tell each where the others listen."""
        self.start(range(len(self.validators)) if indices is None else indices, double_sign=double_sign)
        self.introduce()

    def introduce(self) -> None:
        """Tell every running validator every other's addresses."""
        for validator in self.validators:
            for other in self.validators:
                if other is not validator and validator.running:
                    for addr in other.addrs:
                        self.send(validator.index, {"peer": addr})

    def send(self, index: int, command: dict) -> None:
        stdin = self.validators[index].process.stdin
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def kill(self, index: int) -> None:
        """SIGKILL: no clean-up, no flush beyond what was written."""
        self.validators[index].killed = True
        process = self.validators[index].process
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """Kill every process still running (a clean stop would only cost the test seconds)."""
        for validator in self.validators:
            if validator.running:
                self.kill(validator.index)

    def _read(self, index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._events.put((index, json.loads(line)))
        self._events.put((index, process))  # its output ended

    # ------------------------------------------------------------ watching

    def wait_until(self, condition, what: str, timeout: float = WAIT) -> None:
        """Take in events until ``condition()`` holds; fail after ``timeout`` seconds saying ``what``."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            try:
                index, event = self._events.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {self.describe()}") from None
            self._take(index, event)

    def _take(self, index: int, event: dict | subprocess.Popen) -> None:
        validator = self.validators[index]
        if isinstance(event, subprocess.Popen):
            if event is validator.process and not validator.killed:
                errors = (validator.data_dir / "stderr.log").read_text(errors="replace").strip().splitlines()
                raise AssertionError(f"validator {index} exited by itself: {errors[-5:]}")
            return
        kind = event["event"]
        if kind == "listening":
            validator.addrs = event["addrs"]
        elif kind == "commit":
            decided = (event["block"], event["root"])
            assert validator.decided.setdefault(event["height"], decided) == decided, \
                f"validator {index} decided height {event['height']} twice differently"
            validator.decided_at.setdefault(event["height"], event["time"])
            validator.signers.setdefault(event["height"], event["signers"])
            if event["evidence"]:
                validator.evidence_in[event["height"]] = event["evidence"]
        elif kind == "status":
            validator.status = event
            validator.statuses += 1
        elif kind == "evidence":
            validator.evidence.add(event["validator"])
        elif kind == "double-signed":
            validator.double_signed += 1

    def statuses_after(self, indices, count: int, what: str) -> None:
        """Wait until each of ``indices`` has reported ``count`` more statuses (its own clock's ticks)."""
        start = {i: self.validators[i].statuses for i in indices}
        self.wait_until(lambda: all(self.validators[i].statuses - start[i] >= count for i in indices), what)

    def all_reach(self, height: int, indices=None, what: str = "", timeout: float = WAIT) -> None:
        indices = range(len(self.validators)) if indices is None else indices
        self.wait_until(lambda: all(self.validators[i].height >= height for i in indices),
                        what or f"validators {list(indices)} at height {height}", timeout)

    def heights(self) -> list[int]:
        return [v.height for v in self.validators]

    def decided_by(self, moment: float) -> int:
        """The highest height any validator decided by ``moment`` (time.time()), of the events taken in."""
        return max((h for v in self.validators for h, at in v.decided_at.items() if at <= moment), default=0)

    def describe(self) -> str:
        return "; ".join(f"v{v.index}: decided {v.height}, at {v.status.get('height')}/{v.status.get('round')}"
                         f"{'' if v.running else ' (not running)'}" for v in self.validators)

    def assert_no_divergence(self) -> None:
        """No two validators decided different blocks (or reached different states) at any height."""
        heights = set().union(*(v.decided for v in self.validators))
        for height in heights:
            decided = {v.decided[height] for v in self.validators if height in v.decided}
            assert len(decided) == 1, f"validators decided different blocks at height {height}: {decided}"


def signed_messages(data_dir: Path) -> list:
    """Everything the validator of ``data_dir`` signed, in every incarnation (its signed.log)."""
    lines = (data_dir / SIGNED_LOG).read_text().split()
    return [decode_message(bytes.fromhex(line)) for line in lines]


def conflicting_signatures(messages) -> list[tuple]:
    """(height, round, type) positions at which two different messages were signed."""
    signed: dict[tuple, bytes | None] = {}
    conflicts = []
    for message in messages:
        kind = "proposal" if isinstance(message, Proposal) else message.kind
        position = (signer_of(message), message.height, message.round, kind)
        if signed.setdefault(position, message.block_id) != message.block_id:
            conflicts.append(position[1:])
    return conflicts
