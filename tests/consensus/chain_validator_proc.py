"""One chain node in its own process: ``run_ledger_node`` on a real host, reporting on stdout.

Usage: chain_validator_proc.py --genesis FILE --validator INDEX --data-dir DIR --listen MADDR
                               [--peer MADDR]... [--double-sign]

INDEX names one of ledger_testkit.VALIDATOR_IDS (its key is the host's and the
validator's). Stdout carries one JSON object per line, flushed:

- ``{"event": "listening", "addrs": [...]}`` once, when the host listens;
- ``{"event": "commit", "height", "round", "block", "root", "evidence": [validator keys], "signers": [indices],
  "time"}`` per decision (signers: indices in the set that signed its certificate; time: the wall clock's,
  which every namespace shares);
- ``{"event": "evidence", "validator", "height"}`` when the core detects equivocation;
- ``{"event": "status", "height", "round", "validators", "jailed", "tombstoned", "burned"}``
  every STATUS_INTERVAL (the node's own clock: the tests' window of observation);
- ``{"event": "double-signed", "height", "round", "kind"}`` (``--double-sign`` only).

Stdin takes one JSON object per line: ``{"peer": MADDR}`` (an address to
dial that peer at) or ``{"tx": HEX}`` (a transaction for this node's mempool,
relayed to the validators). End of input stops the node cleanly.

Every message the node signs is appended to ``signed.log`` in DATA_DIR (hex,
one per line) before it can leave: the store saves the signer state before
the core hands a signed message out, and the log is written in that save.
So the file holds everything the validator ever sent, across ``kill -9``.

``--double-sign`` makes a Byzantine validator out of an honest core: for
every vote the core signs, the harness signs, with the same key but outside
the core's guard, a vote for another block at the same height, round and
type, and sends it to the other validators on ``/hm/consensus/1.0.0``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))

from ledger_testkit import CONFIG, VALIDATOR_IDS  # noqa: E402
from hypermesh.consensus.driver import peer_id_of  # noqa: E402
from hypermesh.consensus.genesis import parse_genesis  # noqa: E402
from hypermesh.consensus.ledger import decode_block  # noqa: E402
from hypermesh.consensus.ledger_node import run_ledger_node  # noqa: E402
from hypermesh.consensus.sqlite_store import SqliteConsensusStore  # noqa: E402
from hypermesh.consensus.wire import PROTOCOL_ID, Vote, block_id_of, decode_message, encode_message, sign_vote  # noqa: E402
from hypermesh.dht.streams import close_quietly  # noqa: E402
from hypermesh.transport.errors import TransportError  # noqa: E402
from hypermesh.transport.framing import frame  # noqa: E402
from hypermesh.transport.host import open_host  # noqa: E402
from hypermesh.transport.multiaddrs import parse_quic_address  # noqa: E402

STATUS_INTERVAL = 0.25
SIGNED_LOG = "signed.log"


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class SigningLogStore(SqliteConsensusStore):
    """The SQLite store, also appending every newly signed message to ``signed.log`` as it is saved."""

    def __init__(self, data_dir, on_signed=None):
        super().__init__(data_dir, on_saved=self._log_signed)
        self._log = os.open(Path(data_dir) / SIGNED_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._logged: set[bytes] = set()
        self._on_signed = on_signed

    def _log_signed(self, state) -> None:
        for encoded in state.own_messages:
            if encoded not in self._logged:
                self._logged.add(encoded)
                os.write(self._log, encoded.hex().encode() + b"\n")  # in the kernel once written: survives kill -9
                if self._on_signed is not None:
                    self._on_signed(decode_message(encoded))

    def close(self) -> None:
        super().close()
        os.close(self._log)


class DoubleSigner:
    """Signs, for each vote the core signs, a conflicting one, and sends it to the other validators."""

    def __init__(self, host, identity, ledger):
        self.host = host
        self.identity = identity
        self.ledger = ledger
        self._send, self._receive = trio.open_memory_channel(256)

    def on_signed(self, message) -> None:
        if isinstance(message, Vote):
            try:
                self._send.send_nowait(message)
            except trio.WouldBlock:
                pass

    async def run(self) -> None:
        async for vote in self._receive:
            other = block_id_of(b"conflicting %d/%d" % (vote.height, vote.round))
            evil = sign_vote(self.identity, self.ledger.chain_id, vote.kind, vote.height, vote.round, other)
            emit("double-signed", height=vote.height, round=vote.round, kind=int(vote.kind))
            data = frame(encode_message(evil))
            for validator in self.ledger.validators.validators:
                peer = peer_id_of(validator.public_key)
                if peer == self.host.peer_id:
                    continue
                try:
                    stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                    await stream.send_all(data)
                    await close_quietly(stream)
                except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass


def add_peer(host, maddr: str) -> None:
    address = parse_quic_address(maddr)
    host.peerstore.add_addrs(address.peer_id, [maddr.rsplit("/p2p/", 1)[0]])


async def read_commands(host, node) -> None:
    """Stdin lines until end of input."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            command = json.loads(line)
            if "peer" in command:
                add_peer(host, command["peer"])
            if "tx" in command:
                node.transactions.accept(bytes.fromhex(command["tx"]))


async def report_status(node) -> None:
    while True:
        state, core = node.ledger.state, node.consensus.core
        emit("status", height=core.height, round=core.round,
             validators=[v.public_key.hex() for v in node.ledger.validators.validators],
             jailed=sorted(k.hex() for k in state.jailed), tombstoned=sorted(k.hex() for k in state.tombstoned),
             burned=state.burned)
        await trio.sleep(STATUS_INTERVAL)


def report_commit(node, decision) -> None:
    evidence = decode_block(decision.value).evidence
    emit("commit", height=decision.height, round=decision.round, block=decision.certificate.block_id.hex(),
         root=node.ledger.roots[decision.height].hex(), evidence=[e.first.validator.hex() for e in evidence],
         signers=[index for index, _ in decision.certificate.signatures], time=time.time())


async def main(args) -> None:
    genesis = parse_genesis(Path(args.genesis).read_text())
    identity = VALIDATOR_IDS[args.validator]
    async with open_host(identity, [args.listen]) as host:
        for maddr in args.peer:
            add_peer(host, maddr)
        cheat = None

        def on_signed(message):
            if cheat is not None:
                cheat.on_signed(message)

        def open_store(data_dir):
            return SigningLogStore(data_dir, on_signed)

        async with run_ledger_node(host, genesis, identity, args.data_dir, config=CONFIG,
                                   open_store=open_store) as node:
            node.consensus.on_commit.append(lambda decision: report_commit(node, decision))
            node.consensus.on_evidence.append(
                lambda found: emit("evidence", validator=found.evidence.first.validator.hex(),
                                   height=found.evidence.first.height))
            emit("listening", addrs=host.listen_addrs())
            async with trio.open_nursery() as nursery:
                if args.double_sign:
                    cheat = DoubleSigner(host, identity, node.ledger)
                    nursery.start_soon(cheat.run)
                nursery.start_soon(report_status, node)
                await read_commands(host, node)
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if os.environ.get("CHAIN_PROC_DEBUG"):
        import logging
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("--genesis", required=True)
    parser.add_argument("--validator", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--double-sign", action="store_true")
    trio.run(main, parser.parse_args())
