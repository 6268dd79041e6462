"""TLS session tickets for resumption, bounded in number.

A client remembers the newest ticket each peer gave it; a server remembers
the tickets it issued with the peer each was issued to, so a resumed
handshake (which carries no certificates) still authenticates the client.
"""

from __future__ import annotations

import collections

from .identity import PeerId

# Session tickets remembered, as a server (issued, with their peers) and as a
# client (received, one per peer).
MAX_TICKETS = 10_000


class BoundedTickets:
    """Session tickets, oldest dropped first beyond ``MAX_TICKETS``."""

    def __init__(self) -> None:
        self._tickets: collections.OrderedDict = collections.OrderedDict()

    def put(self, key, value) -> None:
        self._tickets[key] = value
        self._tickets.move_to_end(key)
        while len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)

    def get(self, key):
        return self._tickets.get(key)

    def pop(self, key):
        return self._tickets.pop(key, None)


class ServerTickets(BoundedTickets):
    """Session tickets we issued, with the peer each was issued to."""

    def store(self, ticket, peer_id: PeerId | None) -> None:
        if peer_id is not None:
            self.put(ticket.ticket, (ticket, peer_id))

    def lookup(self, label: bytes):
        # Single use: a replayed ticket falls back to a full handshake.
        return self.pop(label)
