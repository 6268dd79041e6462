"""Outbound connections: one dial per peer at a time, its addresses raced, resumption.

A peer's addresses are raced Happy Eyeballs style (``happy_eyeballs.py``):
IPv6 first, the next address 250 ms later or as soon as the one before
fails; the first handshake wins and the other attempts are closed. The whole
dial gives up after ``HostConfig.dial_timeout``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import trio
from aioquic.quic.configuration import QuicConfiguration

from . import metrics
from .config import HostConfig
from .connection import QuicConnectionDriver
from .connection_table import ConnectionTable
from .endpoint import QuicEndpoint
from .errors import HandshakeError, PeerIdMismatch, PeerRefused, TransportError, fresh
from .happy_eyeballs import RaceFailed, interleave_families, race
from .identity import PeerId
from .multiaddrs import MultiaddrError, QuicAddress, resolve, sockaddr_to_multiaddr
from .quic_hooks import Libp2pQuicConnection
from .tickets import BoundedTickets


class _PendingDial:
    """A dial in progress, for callers who want the same peer meanwhile."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: TransportError | None = None


def _worth_another_address(error: Exception) -> bool:
    # A peer that answered with the wrong identity or a refusal would answer
    # the same on its other addresses.
    return isinstance(error, HandshakeError) and not isinstance(error, (PeerIdMismatch, PeerRefused))


class Dialer:
    def __init__(
        self,
        config: HostConfig,
        client_config: QuicConfiguration,
        table: ConnectionTable,
        endpoint_for: Callable[[int], QuicEndpoint],
        spawn: Callable[..., None],
    ) -> None:
        self._config = config
        self._spawn = spawn
        # The client's QUIC configuration (certificate, ALPN, idle timeout).
        self.configuration = client_config
        self._table = table
        self._endpoint_for = endpoint_for
        self._pending: dict[PeerId, _PendingDial] = {}
        # The newest ticket from each peer, with the address that gave it.
        self._tickets = BoundedTickets()

    @property
    def dials_in_progress(self) -> int:
        return len(self._pending)

    async def dial(
        self, peer_id: PeerId, addresses: list[QuicAddress], early_data: bool = False
    ) -> QuicConnectionDriver:
        """One dial per peer at a time: concurrent callers share its outcome.

        With ``early_data``, a resumed dial whose ticket allows 0-RTT returns
        as soon as the first flight is sent, so that replay-safe requests ride
        in it; the handshake then completes (or fails and closes the
        connection) in the background.
        """
        pending = self._pending.get(peer_id)
        if pending is not None:
            await pending.done.wait()
            existing = self._table.newest_to(peer_id)
            if existing is not None:
                return existing
            if pending.error is not None:
                raise fresh(pending.error)  # each waiter its own: the first dial's error is shared
            raise HandshakeError(f"connection to {peer_id} closed as it opened")
        pending = self._pending[peer_id] = _PendingDial()
        early_driver = None
        try:
            driver = await self._dial_any(peer_id, addresses, early_data)
            if not driver.handshake_complete.is_set():
                early_driver = driver
            return driver
        except BaseException as exc:
            pending.error = exc if isinstance(exc, TransportError) else None
            raise
        finally:
            if early_driver is not None:
                self._spawn(self._finish_early_dial, peer_id, pending, early_driver)
            else:
                del self._pending[peer_id]
                pending.done.set()

    async def _finish_early_dial(self, peer_id: PeerId, pending: _PendingDial, driver: QuicConnectionDriver) -> None:
        try:
            await self._complete_handshake(driver)
        except TransportError as exc:
            pending.error = exc
            # The next dial races every address again, without early data.
            self._tickets.pop(peer_id)
        finally:
            del self._pending[peer_id]
            pending.done.set()

    async def _dial_any(
        self, peer_id: PeerId, addresses: list[QuicAddress], early_data: bool
    ) -> QuicConnectionDriver:
        errors = []
        targets = []
        for address in addresses:
            try:
                targets.extend(await resolve(address))
            except MultiaddrError as exc:
                errors.append(str(exc))
        if early_data:
            # Early data goes to one address, the one that gave us the ticket:
            # racing would let the first attempt win before it is answered.
            _, ticket_address = self._tickets.get(peer_id) or (None, None)
            early_targets = [target for target in targets if target[1] == ticket_address]
            if early_targets:
                targets = early_targets[:1]
            else:
                early_data = False
        timeout = self._config.dial_timeout
        with trio.move_on_after(timeout) as deadline:
            try:
                return await race(
                    interleave_families(targets),
                    lambda target: self._dial_address(peer_id, *target, early_data),
                    retryable=_worth_another_address,
                    discard=lambda driver: driver.close("another address connected first"),
                )
            except RaceFailed as failed:
                errors.extend(f"{sockaddr_to_multiaddr(sockaddr)}: {error}" for (_, sockaddr), error in failed.errors)
        if deadline.cancelled_caught:
            errors.append(f"no answer within {timeout:g} s")
        raise HandshakeError(f"could not connect to {peer_id}: " + "; ".join(errors))

    async def _dial_address(
        self, peer_id: PeerId, family: int, sockaddr: tuple, early_data: bool
    ) -> QuicConnectionDriver:
        self._table.check_limit()
        endpoint = self._endpoint_for(family)
        ticket, _ = self._tickets.get(peer_id) or (None, None)
        if not self._config.enable_resumption or (ticket is not None and not ticket.is_valid):
            ticket = None
        configuration = dataclasses.replace(self.configuration, session_ticket=ticket)
        def ticket_received(new_ticket) -> None:
            self._tickets.put(peer_id, (new_ticket, sockaddr))
            driver.session_ticket_received.set()

        quic = Libp2pQuicConnection(
            configuration=configuration,
            expected_peer_id=peer_id,
            resumed_peer_id=peer_id if ticket is not None else None,
            session_ticket_handler=ticket_received,
        )
        driver = self._table.new_driver(endpoint, quic, sockaddr, is_client=True)
        driver.user_data["dial_started"] = started = trio.current_time()
        quic.connect(sockaddr, now=started)
        if early_data and quic.can_send_early_data:
            # Sent at the next scheduling round: the caller's first request,
            # if it comes at once, then rides in the same datagram as the
            # ClientHello (Initial and 0-RTT packets coalesced).
            driver.transmit_soon()
            return driver
        driver.transmit()
        await self._complete_handshake(driver)
        return driver

    async def _complete_handshake(self, driver: QuicConnectionDriver) -> None:
        timeout = min(self._config.handshake_timeout, self._config.dial_timeout)
        try:
            completed = await driver.wait_for_handshake(timeout)
        except trio.Cancelled:
            driver.close("dial cancelled")  # another address won, or the caller gave up
            raise
        if not completed:
            driver.close("handshake failed")
            metrics.CONNECTIONS_TOTAL.labels("outbound", "failed").inc()
            if driver.handshake_error is not None:
                raise fresh(driver.handshake_error)
            raise HandshakeError(f"handshake with {driver.remote_multiaddr} timed out after {timeout:g} s")
        self._table.established(driver, "outbound", driver.user_data["dial_started"])
