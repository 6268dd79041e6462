"""The trio driver: the consensus core on a transport host, over ``/hm/consensus/1.0.0``.

Validators are named by their host's Ed25519 key, so a validator's peer ID is
derived from its key. Each node keeps one outbound stream to every other
validator of the core's *current* set (followed as it changes at epoch
boundaries) and writes varint-framed messages (:mod:`wire` encodings) on it;
what arrives on inbound streams is decoded and fed to the core. Connections
to the current validators are protected in the connection manager.

A node outside the set (a follower, a validator-to-be) sends only
``Status``; a validator answers with commits on a queue opened for that
follower (at most ``MAX_FOLLOWERS``), so followers keep up with the chain.

Sending never blocks the core: each peer has a bounded queue, and a message
that does not fit, or is written to a broken stream, is dropped; the core
re-sends what matters (its current round, its valid value's polka) every
``rebroadcast_interval``, and answers peers that are behind.

A stream that carries a malformed or oversized message is reset (the peer
keeps its connection; the node carries on); a well-formed message that the
core refuses is dropped, and if it blames the sender, ``on_misbehaviour``
listeners hear of it (the trust engine will).
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

import trio

from hypermesh.dht.streams import close_quietly, reset_quietly
from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader, FramingError, frame
from hypermesh.transport.identity import KEY_TYPE_ED25519, IdentityError, PeerId, decode_public_key, encode_public_key

from .tendermint import Broadcast, Committed, EquivocationDetected, TendermintCore
from .wire import MAX_MESSAGE_SIZE, PROTOCOL_ID, RejectedMessage, Status, WireError, decode_message, encode_message

log = logging.getLogger(__name__)

PROTECTION_TAG = "consensus"
# Nodes outside the validator set sent commits at once; beyond this, new ones are not answered.
MAX_FOLLOWERS = 64
# Messages queued per peer; beyond this the newest are dropped (re-sends recover).
SEND_QUEUE_SIZE = 1024
# Queued messages written together at most.
SEND_BATCH = 64
# Decisions kept in memory for wait_for_height and callers.
KEPT_DECISIONS = 1024
# After a failed dial or write, wait this long before trying that peer again.
RECONNECT_DELAY = 0.5


def peer_id_of(validator_key: bytes) -> PeerId:
    """The peer ID of the host whose Ed25519 key is ``validator_key``."""
    return PeerId.from_public_key(encode_public_key(KEY_TYPE_ED25519, validator_key))


def _ed25519_key_of(peer: PeerId) -> bytes | None:
    """The raw Ed25519 key a peer ID inlines (how the core names every node), or None."""
    encoded = peer.inlined_public_key()
    if encoded is None:
        return None
    try:
        key_type, key = decode_public_key(encoded)
    except IdentityError:
        return None
    return key if key_type == KEY_TYPE_ED25519 else None


class ConsensusService:
    """One node's consensus on a host. Start with ``await nursery.start(service.run)``."""

    def __init__(self, host, core: TendermintCore):
        self.host = host
        self.core = core
        # The current validators other than us (what the core's broadcasts reach; protected).
        self._validators: dict[PeerId, bytes] = {}
        self._validator_set = None  # the core's set that _validators was built from
        # Send queues by public key: the validators', and those of followers that asked for commits.
        self._queues: dict[bytes, trio.MemorySendChannel] = {}
        self._nursery: trio.Nursery | None = None
        # The timer loop's sleep: its deadline follows the core's timer (_pump), without waking the loop.
        self._timer_scope: trio.CancelScope | None = None
        self._progress = trio.Event()
        # The latest decisions (older ones are in the store).
        self.committed: collections.deque[Committed] = collections.deque(maxlen=KEPT_DECISIONS)
        self.on_commit: list[Callable[[Committed], None]] = []
        self.on_evidence: list[Callable[[EquivocationDetected], None]] = []
        self.on_misbehaviour: list[Callable[[PeerId, Exception], None]] = []
        self._running = False
        # Inbound streams being read: the host runs their handlers, not our
        # nursery, so they are reset when we stop (the peers then open new
        # ones, which reach whoever serves the protocol next).
        self._inbound: set = set()

    # --------------------------------------------------------------- run

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # Started before the handler is registered: no message meets a core that has not resumed yet.
        self.core.start(trio.current_time())
        self.host.set_stream_handler(PROTOCOL_ID, self._handle_stream)
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._pump()
                task_status.started()
                await self._timer_loop()
        finally:
            self._running = False
            self._nursery = None
            self.host.remove_stream_handler(PROTOCOL_ID)
            for stream in list(self._inbound):
                await reset_quietly(stream)
            for peer in self._validators:
                self.host.connection_manager.unprotect(peer, PROTECTION_TAG)

    def txs_available(self) -> None:
        """The application has something to propose (new transactions): an idle proposer proposes now."""
        if self._running:
            self.core.txs_available(trio.current_time())
            self._pump()

    async def wait_for_height(self, height: int) -> Committed:
        """Until this node has committed ``height`` (one of the latest KEPT_DECISIONS); returns that decision."""
        while True:
            for decision in self.committed:
                if decision.height == height:
                    return decision
            await self._progress.wait()

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.core.get_timer()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            self.core.handle_timer(trio.current_time())
            self._pump()

    def _pump(self) -> None:
        """Queue what the core wants sent, hand out its events, re-arm the timer loop."""
        if not self._running:
            return
        # First: what the core sends next (a new height's votes) goes to the set it now has.
        self._follow_validator_set()
        for out in self.core.take_outbound():
            data = encode_message(out.message)
            if isinstance(out, Broadcast):
                targets = [key for key in self._validators.values() if key not in out.exclude]
            else:
                targets = [out.peer]
            for key in targets:
                queue = self._queues.get(key)
                if queue is None:
                    continue
                try:
                    queue.send_nowait(data)
                except trio.WouldBlock:
                    log.debug("consensus send queue full: a message is dropped")
        decided = False
        for event in self.core.take_events():
            if isinstance(event, Committed):
                self.committed.append(event)
                decided = True
                for listener in self.on_commit:
                    listener(event)
            elif isinstance(event, EquivocationDetected):
                for listener in self.on_evidence:
                    listener(event)
        if decided:
            self._progress.set()
            self._progress = trio.Event()
        scope = self._timer_scope
        if scope is not None:
            # Moving the deadline re-arms the sleeping loop: waking it to do so cost a task switch and a
            # handle_timer with nothing due, about once a height (each new timeout nearer than the last).
            deadline = self.core.get_timer()
            if scope.deadline != deadline:
                scope.deadline = deadline

    # ------------------------------------------------------------ peers

    def _follow_validator_set(self) -> None:
        """Connect to and protect validators that joined the core's set; let go of those that left."""
        if self.core.validators is self._validator_set:
            return
        self._validator_set = self.core.validators
        current = {peer_id_of(v.public_key): v.public_key for v in self._validator_set.validators}
        current.pop(self.host.peer_id, None)
        for peer, key in self._validators.items():
            if peer not in current:
                self.host.connection_manager.unprotect(peer, PROTECTION_TAG)
                queue = self._queues.pop(key, None)
                if queue is not None:
                    queue.close()  # its sender ends; if it follows on, it asks again
        for peer, key in current.items():
            if peer not in self._validators:
                self.host.connection_manager.protect(peer, PROTECTION_TAG)
                self._open_queue(peer, key)
        self._validators = current

    def _open_queue(self, peer: PeerId, key: bytes) -> None:
        if key in self._queues or self._nursery is None:
            return
        send, receive = trio.open_memory_channel(SEND_QUEUE_SIZE)
        self._queues[key] = send
        self._nursery.start_soon(self._sender, peer, key, send, receive)

    def _add_follower(self, peer: PeerId, key: bytes) -> None:
        """A node outside the set asked for commits: give it a queue, if a follower slot is free."""
        if key not in self._queues and len(self._queues) - len(self._validators) < MAX_FOLLOWERS:
            self._open_queue(peer, key)

    # ------------------------------------------------------------ sending

    async def _sender(self, peer: PeerId, key: bytes, send: trio.MemorySendChannel,
                      queue: trio.MemoryReceiveChannel) -> None:
        """Write this peer's queue on one long-lived stream, reopened after failures.

        What queued meanwhile goes out in one write: a round's votes and
        relays then share QUIC packets instead of taking one each. A follower
        that cannot be reached loses its queue (and slot): it asks again.
        """
        stream = None
        async for data in queue:
            frames = [frame(data)]
            while len(frames) < SEND_BATCH:
                try:
                    frames.append(frame(queue.receive_nowait()))
                except (trio.WouldBlock, trio.EndOfChannel):
                    break  # closed (the peer left the set): what is taken still goes out
            try:
                if stream is None:
                    stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                await stream.send_all(b"".join(frames))
            except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("consensus stream to %s failed: %s", peer.short(), exc)
                if stream is not None:
                    await reset_quietly(stream)
                    stream = None
                if peer not in self._validators and self._queues.get(key) is send:
                    del self._queues[key]
                    send.close()
                    return
                await trio.sleep(RECONNECT_DELAY)
        if stream is not None:
            await close_quietly(stream)

    # ------------------------------------------------------------ inbound

    async def _handle_stream(self, stream) -> None:
        peer = stream.remote_peer
        sender = _ed25519_key_of(peer)
        if sender is None:
            log.debug("consensus stream from %s, no Ed25519 key: reset", peer.short())
            await reset_quietly(stream)
            return
        reader = BufferedReader(stream)
        self._inbound.add(stream)
        try:
            while self._running:
                data = await reader.read_frame(MAX_MESSAGE_SIZE)
                if data is None:
                    break
                message = decode_message(data)
                if peer not in self._validators:
                    # Checked per message: the set changes while a stream is open.
                    if not isinstance(message, Status):
                        log.debug("consensus message from %s, not a validator: reset", peer.short())
                        await reset_quietly(stream)
                        return
                    self._add_follower(peer, sender)
                try:
                    self.core.handle_message(sender, message, trio.current_time())
                except RejectedMessage as exc:
                    if exc.misbehaviour:
                        for listener in self.on_misbehaviour:
                            listener(stream.remote_peer, exc)
                self._pump()
        except (WireError, FramingError) as exc:
            log.debug("malformed consensus message from %s: %s", stream.remote_peer.short(), exc)
            for listener in self.on_misbehaviour:
                listener(stream.remote_peer, exc)
            await reset_quietly(stream)
            return
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self._inbound.discard(stream)
        await close_quietly(stream)
