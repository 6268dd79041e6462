"""Remote execution over ``/hm/capsule-run/1.0.0``: a node runs capsules for its peers.

The serving side (:class:`RemoteRunService`) admits a capsule under the
node's own trust policy (fetching it through the DHT when it is allowed and
absent), runs it within its trust zone's limits through the node's
:class:`~hypermesh.capsules.executor.CapsuleExecutor`, and answers with the
output and the signed execution receipt. Each peer gets at most
``per_peer_running`` calls at once and ``per_peer_queued`` more waiting;
beyond that it is told ``busy`` at once, so a flooding peer holds a bounded
share of the node while others are served. The client side is
:func:`run_remote`, which checks that the receipt is signed by the node it
asked and describes the call it asked for. Wire format: :mod:`run_wire`.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from dataclasses import dataclass, field

import trio

from hypermesh.transport.errors import StreamReset, TransportError
from hypermesh.transport.framing import BufferedReader, FramingError, write_frame
from hypermesh.transport.identity import PeerId

from .distribution import CapsuleQuarantinedError, DistributionError
from .errors import CallError, CapsuleError, FormatError, LifecycleError
from .execution import peer_name, signature_is_valid
from .executor import CapsuleExecutor, CapsuleQuarantined
from .lifecycle import State
from .remote_limits import RemoteRunLimits
from .run_wire import (
    MAX_FUNCTION_BYTES,
    MAX_RESPONSE_BYTES,
    PROTOCOL_ID,
    RemoteRunRefused,
    RunOutcome,
    RunProtocolViolation,
    RunRequest,
    decode_request,
    decode_response,
    encode_ran,
    encode_refusal,
)

__all__ = ["RemoteRunLimits", "RemoteRunService", "RemoteRunRefused", "ReceiptMismatch", "run_remote", "check_receipt"]

logger = logging.getLogger("hypermesh.capsules.remote")

DEFAULT_TIMEOUT = 30.0


class RemoteRunRefusal(Exception):
    """Raised inside the service to answer with a typed refusal."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class _PeerShare:
    """One peer's calls: admitted (running or waiting) and the slots it may run in."""

    slots: trio.Semaphore
    admitted: int = 0
    running: int = 0


@dataclass
class RemoteRunService:
    """Serves ``/hm/capsule-run/1.0.0`` for one node.

    ``counters``: ``ran``, ``refused_<code>`` per refusal, ``streams_reset``
    (malformed or too slow requests); ``peak_running_per_peer`` and
    ``peak_admitted_per_peer`` the most calls one peer ever had running, and
    running or queued, at once.
    """

    host: object
    executor: CapsuleExecutor
    distribution: object | None = None
    limits: RemoteRunLimits = field(default_factory=RemoteRunLimits)

    def __post_init__(self) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        self.peak_running_per_peer = 0
        self.peak_admitted_per_peer = 0
        self._shares: dict[PeerId, _PeerShare] = {}
        self._total = trio.CapacityLimiter(self.limits.total_running)
        self._fetching: collections.defaultdict[str, trio.Lock] = collections.defaultdict(trio.Lock)

    def install_handler(self) -> None:
        self.host.set_stream_handler(PROTOCOL_ID, self.serve)

    async def serve(self, stream) -> None:
        request = await self._read_request(stream)
        if request is None:
            return
        try:
            answer = await self._admit_and_run(stream.remote_peer, request)
            self.counters["ran"] += 1
        except RemoteRunRefusal as refusal:
            self.counters[f"refused_{refusal.code}"] += 1
            logger.info("refused %s of %s for %s: %s", request.function, request.cid, stream.remote_peer, refusal)
            answer = encode_refusal(refusal.code, str(refusal))
        await self._answer(stream, answer)

    async def _read_request(self, stream) -> RunRequest | None:
        """The peer's request, or None after answering or resetting the stream."""
        reader = BufferedReader(stream)
        largest = 1 + 32 + 1 + MAX_FUNCTION_BYTES + self.limits.max_input_bytes
        try:
            with trio.fail_after(self.limits.request_timeout):
                length = await reader.read_uvarint()
                if length is None:
                    await stream.aclose()
                    return None
                if length > largest:
                    # Refused unread: the input never reaches memory.
                    await self._refuse_over_limit(stream, f"a request of {length} bytes is over this node's limit "
                                                          f"of {largest}")
                    return None
                request = decode_request(await reader.read_exactly(length))
                if len(request.input) > self.limits.max_input_bytes:
                    # The bound above leaves room for the longest function name; this one is exact.
                    await self._refuse_over_limit(stream, f"an input of {len(request.input)} bytes is over this "
                                                          "node's limit")
                    return None
                return request
        except (FramingError, RunProtocolViolation, trio.TooSlowError) as exc:
            self.counters["streams_reset"] += 1
            logger.info("resetting %s stream from %s: %s", PROTOCOL_ID, stream.remote_peer,
                        exc if str(exc) else "request not sent in time")
            await stream.reset()
            return None

    async def _refuse_over_limit(self, stream, what: str) -> None:
        self.counters["refused_over_limit"] += 1
        await self._answer(stream, encode_refusal(
            "over_limit", f"{what} (input at most {self.limits.max_input_bytes} bytes)"))

    async def _answer(self, stream, answer: bytes) -> None:
        with trio.move_on_after(self.limits.answer_timeout) as sending:
            await write_frame(stream, answer, eof=True)  # the answer and its end in one packet
            await stream.aclose()
        if sending.cancelled_caught:
            await stream.reset()

    async def _admit_and_run(self, peer: PeerId, request: RunRequest) -> bytes:
        share = self._shares.get(peer)
        if share is None:
            share = self._shares[peer] = _PeerShare(trio.Semaphore(self.limits.per_peer_running))
        if share.admitted >= self.limits.per_peer_running + self.limits.per_peer_queued:
            raise RemoteRunRefusal("busy", f"this node already runs or queues {share.admitted} calls of yours; "
                                           "retry later")
        share.admitted += 1
        self.peak_admitted_per_peer = max(self.peak_admitted_per_peer, share.admitted)
        try:
            if not await self._take_slot(share):
                raise RemoteRunRefusal("busy", f"no free slot within {self.limits.queue_timeout:g} s; retry later")
            share.running += 1
            self.peak_running_per_peer = max(self.peak_running_per_peer, share.running)
            try:
                return await self._run(request)
            finally:
                share.running -= 1
                self._total.release()
                share.slots.release()
        finally:
            share.admitted -= 1
            if share.admitted == 0:
                del self._shares[peer]

    async def _take_slot(self, share: _PeerShare) -> bool:
        """One of the peer's slots and one of the node's, within the queue timeout (only the wait is bounded)."""
        if share.slots.value and self._total.available_tokens:
            # Both free: nobody waits for them (trio hands a released slot to
            # a waiter), so take them without a scheduling round.
            share.slots.acquire_nowait()
            self._total.acquire_nowait()
            return True
        with trio.move_on_after(self.limits.queue_timeout):
            await share.slots.acquire()
            try:
                await self._total.acquire()
            except BaseException:
                share.slots.release()
                raise
            return True
        return False

    async def _run(self, request: RunRequest) -> bytes:
        capsule = self.executor.known(request.cid)
        if capsule is None:
            capsule = await self._fetch(request.cid)
        if capsule.state == State.QUARANTINED:
            raise _quarantine_refusal(request.cid, capsule.diagnostics)
        try:
            result = await self.executor.run(request.cid, request.function, request.input)
            return encode_ran(result.output, result.receipt)
        except CapsuleQuarantined as exc:
            raise _quarantine_refusal(request.cid, exc.diagnostics) from None
        except LifecycleError as exc:
            raise RemoteRunRefusal("unknown_capsule", f"capsule {request.cid} is installed but not served here: {exc}") from None
        except CallError as exc:
            raise RemoteRunRefusal("call_failed", f"{exc.kind}: {exc}") from None
        except FormatError as exc:  # the output does not fit the wire
            raise RemoteRunRefusal("call_failed", f"output: {exc}") from None

    async def _fetch(self, cid: str):
        """Install ``cid`` from this node's own published chunks, or through the DHT if allowed."""
        if self.distribution is None or not (self.limits.fetch_absent or self.distribution.publishes(cid)):
            raise RemoteRunRefusal("unknown_capsule", f"capsule {cid} is not installed on this node")
        lock = self._fetching[cid]
        try:
            async with lock:
                known = self.executor.known(cid)  # fetched while this request waited
                if known is not None:
                    return known
                try:
                    return await self.distribution.fetch(cid)
                except CapsuleQuarantinedError as exc:
                    return exc.capsule
                except (DistributionError, CapsuleError, TransportError) as exc:
                    raise RemoteRunRefusal("unknown_capsule", f"capsule {cid} is not installed on this node "
                                                              f"and could not be fetched: {exc}") from None
        finally:
            # The last request for this CID drops its lock (a fair lock passes to a waiter first).
            if not lock.locked() and self._fetching.get(cid) is lock:
                del self._fetching[cid]


def _quarantine_refusal(cid: str, diagnostics) -> RemoteRunRefusal:
    reasons = "; ".join(str(d) for d in diagnostics) or "no diagnostic"
    code = "untrusted_signer" if any(d.code == "untrusted_signer" for d in diagnostics) else "quarantined"
    return RemoteRunRefusal(code, f"capsule {cid} failed admission here: {reasons}")


# -- the client side -----------------------------------------------------------


class ReceiptMismatch(CapsuleError):
    """The node's execution receipt does not attest the call that was asked for."""


async def run_remote(host, peer: PeerId, cid: str, function: str, data: bytes, *,
                     timeout: float = DEFAULT_TIMEOUT) -> RunOutcome:
    """Ask ``peer`` to run ``function`` of capsule ``cid`` on ``data``.

    Returns the output and the execution receipt, checked: signed by
    ``peer``, for this capsule, function, input and output. Raises
    :class:`RemoteRunRefused` (``.code``: untrusted_signer, unknown_capsule,
    over_limit, busy, call_failed, quarantined), :class:`ReceiptMismatch`,
    :class:`RunProtocolViolation`, a transport error, or ``trio.TooSlowError``.
    """
    request = RunRequest(cid, function, data)
    body = request.encode()
    with trio.fail_after(timeout):
        stream = await host.new_stream(peer, [PROTOCOL_ID])
        try:
            try:
                # Proposal, request and end in one packet.
                await write_frame(stream, body, eof=True)
            except StreamReset:
                pass  # the node refused before reading it all: its answer says why
            answer = await BufferedReader(stream).read_frame(MAX_RESPONSE_BYTES)
        except FramingError as exc:
            await stream.reset()
            raise RunProtocolViolation(f"the node's answer is malformed: {exc}") from None
        except BaseException:
            await stream.reset()
            raise
        await stream.aclose()
    if answer is None:
        raise RunProtocolViolation("the node closed the stream without answering")
    outcome = decode_response(answer)
    check_receipt(outcome, request, peer)
    return outcome


def check_receipt(outcome: RunOutcome, request: RunRequest, peer: PeerId) -> None:
    receipt = outcome.receipt
    expected = {"capsule": request.cid, "function": request.function, "node": peer_name(peer),
                "input_hash": hashlib.sha256(request.input).hexdigest(),
                "output_hash": hashlib.sha256(outcome.output).hexdigest()}
    wrong = sorted(name for name, value in expected.items() if receipt.get(name) != value)
    if wrong:
        raise ReceiptMismatch(f"the execution receipt's {', '.join(wrong)} do not match the call")
    # decode_response has checked the receipt against its schema.
    if not signature_is_valid(receipt):
        raise ReceiptMismatch(f"the execution receipt is not signed by {peer}")
