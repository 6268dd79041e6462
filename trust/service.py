"""The trust layer's thin trio driver: ``/hm/trust/1.0.0``, persistence and the shun list.

:class:`TrustService` owns no policy: it feeds the sans-IO
:class:`TrustEngine` what the network brings (attestations pushed to us,
answers to our asks) with the wall-clock time, saves what changed, and makes
the transport and the DHT obey the shun list (refuse, do not dial,
disconnect, keep out of routing tables).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import trio

from hypermesh.dht.server import Misbehaviour
from hypermesh.transport.framing import BufferedReader, FramingError, write_frame
from hypermesh.transport.identity import Identity, PeerId

from .attestation import Attestation, AttestationError, decode_attestation, sign_attestation
from .engine import Observation, Proof, TrustEngine
from .score import Dimension
from .store import TrustStore
from .wire import (
    MAX_ATTESTATIONS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_ID,
    Answer,
    Ask,
    Push,
    TrustProtocolViolation,
    decode_message,
    encode_answer,
    encode_ask,
    encode_push,
)

log = logging.getLogger(__name__)

# A peer has this long to send its one message, and we to answer.
EXCHANGE_TIMEOUT = 10.0
# Reports from other layers are saved at most this often (seconds); see TrustService.report.
REPORT_SAVE_INTERVAL = 1.0
# What each kind of DHT misbehaviour counts as.
_DHT_EVIDENCE = {
    Misbehaviour.MALFORMED: Observation.PROTOCOL_VIOLATION,
    Misbehaviour.RATE_LIMITED: Observation.RATE_LIMITED,
}
# A DHT liveness check of a routing-table peer: answered or not.
_PROBE_EVIDENCE = {True: Observation.PROBE_UP, False: Observation.PROBE_DOWN}


class TrustService:
    def __init__(
        self,
        host,
        identity: Identity,
        engine: TrustEngine,
        store: TrustStore | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.host = host
        self.identity = identity
        self.engine = engine
        self.store = store
        self.clock = clock
        self.dht = None
        self.counters: Counter[str] = Counter()
        self._last_report_save = float("-inf")

    # -- wiring ------------------------------------------------------------
    def install(self, dht=None) -> None:
        """Serve the protocol, make the transport obey the shun list and count the protocol violations
        it reports (security); given the node's running DHT service, make it obey too and count what it
        reports against peers: malformed messages and rate-limit hits (security), and the outcome of its
        liveness checks (uptime probes)."""
        if dht is not None and dht.core is None:
            raise RuntimeError("the DHT service must be running before trust is installed on it")
        self.host.set_stream_handler(PROTOCOL_ID, self._serve)
        self.host.set_peer_filter(self._refusal_reason)
        self.host.on_misbehaviour(lambda peer, reason: self.report(peer, Observation.PROTOCOL_VIOLATION))
        if dht is None:
            return
        self.dht = dht.core
        self.dht.peer_filter = lambda peer: self.engine.is_shunned(peer, self.clock())
        dht.on_misbehaviour(lambda peer, kind: self.report(peer, _DHT_EVIDENCE[kind]))
        dht.on_probe(lambda peer, answered: self.report(peer, _PROBE_EVIDENCE[answered]))

    def _refusal_reason(self, peer: PeerId) -> str | None:
        entry = self.engine.shunned(self.clock()).get(peer)
        return None if entry is None else f"shunned: {entry.reason}"

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.engine.take_changes())

    # -- what this node sees ----------------------------------------------
    def observe(self, peer: PeerId, observation: Observation, amount: float = 1.0) -> None:
        self.engine.observe(peer, observation, self.clock(), amount)
        self._save()

    def report(self, peer: PeerId, observation: Observation) -> None:
        """Evidence another layer reports (DHT, chain): counted at once, saved at most every REPORT_SAVE_INTERVAL.

        Such reports come in floods (a peer far over its rate limit), and one
        SQLite write each would let a peer make us write as fast as it sends;
        what is not yet saved goes with the next save.
        """
        now = self.clock()
        self.engine.observe(peer, observation, now)
        self.counters["reports"] += 1
        if now - self._last_report_save >= REPORT_SAVE_INTERVAL:
            self._last_report_save = now
            self._save()

    def prove(self, peer: PeerId, proof: Proof, detail: str = "") -> None:
        self.engine.prove(peer, proof, self.clock(), detail)
        self._enforce(peer)
        self._save()

    def shun(self, peer: PeerId, reason: str, seconds: float | None = None) -> None:
        self.engine.shun(peer, reason, self.clock(), seconds)
        self._enforce(peer)
        self._save()

    def unshun(self, peer: PeerId) -> bool:
        lifted = self.engine.unshun(peer)
        self._save()
        return lifted

    def _enforce(self, peer: PeerId) -> None:
        closed = self.host.disconnect(peer, "shunned")
        if self.dht is not None:
            self.dht.exclude_peer(peer)
        log.info("shunned %s: closed %d connection(s)", peer.short(), closed)

    def attest(self, subject: PeerId) -> Attestation:
        """This node's signed review of ``subject``, from its own performance evidence."""
        now = self.clock()
        good, bad = self.engine.counts(subject, Dimension.PERFORMANCE, now)
        # Milliseconds since the epoch: strictly increasing across restarts as a sequence.
        stamp = int(now * 1000)
        return sign_attestation(self.identity, subject, round(good), round(bad), stamp, stamp)

    # -- the protocol -----------------------------------------------------
    async def _serve(self, stream) -> None:
        sender = stream.remote_peer
        reader = BufferedReader(stream)
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT):
                data = await reader.read_frame(MAX_MESSAGE_BYTES)
                if data is None:
                    await stream.aclose()
                    return
                message = decode_message(data)
                if isinstance(message, Push):
                    reply = encode_answer(*self._accept(message, sender))
                elif isinstance(message, Ask):
                    reply = encode_push(self._reviews_of(message.subject))
                else:
                    raise TrustProtocolViolation("an answer is not a request")
                await write_frame(stream, reply)
                await stream.aclose()
        except (FramingError, TrustProtocolViolation) as exc:
            self.counters["violations"] += 1
            log.info("resetting %s stream from %s: %s", PROTOCOL_ID, sender.short(), exc)
            self.engine.observe(sender, Observation.PROTOCOL_VIOLATION, self.clock())
            self._save()
            await stream.reset()
        except trio.TooSlowError:
            await stream.reset()

    def _accept(self, push: Push, sender: PeerId) -> tuple[int, int]:
        accepted = refused = 0
        now = self.clock()
        for encoded in push.attestations:
            try:
                self.engine.accept_attestation(decode_attestation(encoded), sender, now)
                accepted += 1
            except AttestationError as exc:
                refused += 1
                self.counters["attestations_refused"] += 1
                log.debug("refused an attestation from %s: %s", sender.short(), exc)
        self.counters["attestations_accepted"] += accepted
        self._save()
        return accepted, refused

    def _reviews_of(self, subject: PeerId) -> list[bytes]:
        reviews = [a.encode() for a in self.engine.attestations() if a.subject == subject]
        return reviews[-MAX_ATTESTATIONS:]

    async def _exchange(self, peer: PeerId, request: bytes) -> Push | Ask | Answer:
        with trio.fail_after(EXCHANGE_TIMEOUT):
            stream = await self.host.new_stream(peer, [PROTOCOL_ID])
            try:
                await write_frame(stream, request)
                await stream.send_eof()
                data = await BufferedReader(stream).read_frame(MAX_MESSAGE_BYTES)
            finally:
                await stream.aclose()
        if data is None:
            raise TrustProtocolViolation("peer closed without answering")
        return decode_message(data)

    async def push(self, peer: PeerId, attestations: list[Attestation]) -> Answer:
        """Hand ``peer`` our attestations; returns how many it accepted and refused."""
        answer = await self._exchange(peer, encode_push([a.encode() for a in attestations]))
        if not isinstance(answer, Answer):
            raise TrustProtocolViolation("a push must be answered with an answer")
        return answer

    async def ask(self, peer: PeerId, subject: PeerId) -> int:
        """Ask ``peer`` for the reviews it holds of ``subject``; returns how many we admitted."""
        reply = await self._exchange(peer, encode_ask(subject))
        if not isinstance(reply, Push):
            raise TrustProtocolViolation("an ask must be answered with reviews")
        accepted, _ = self._accept(reply, peer)
        return accepted
