"""Applying the connection manager's trim policy to live connections.

The policy itself (which connections to close) is the sans-IO
:class:`~hypermesh.transport.connmgr.ConnectionManager`; this module feeds it
the connections' state and closes what it selects.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection

import trio

from . import metrics
from .connection import QuicConnectionDriver
from .connmgr import ConnectionManager, ConnectionState

log = logging.getLogger("hypermesh.transport")

# The periodic connection trim runs at least this far apart.
MIN_TRIM_INTERVAL = 1.0


def trim_connections(manager: ConnectionManager, drivers: Collection[QuicConnectionDriver]) -> int:
    """Close the idle connections ``manager`` selects; returns how many."""
    now = trio.current_time()
    if not manager.wants_trim(len(drivers), now):
        return 0
    states = [
        ConnectionState(d, d.remote_peer_id, d.opened_at, d.stream_count, d.last_stream_activity) for d in drivers
    ]
    chosen = manager.select_for_trim(states, now)
    for driver in chosen:
        driver.close("idle connection trimmed (over the high water mark)")
    metrics.CONNECTIONS_TRIMMED.inc(len(chosen))
    if chosen:
        log.debug("closed %d idle connections; %d remain", len(chosen), len(drivers) - len(chosen))
    return len(chosen)


async def trim_periodically(trim: Callable[[], int], silence_period: float) -> None:
    # Connections that were busy at the last trim may be idle now.
    interval = max(MIN_TRIM_INTERVAL, silence_period)
    while True:
        await trio.sleep(interval)
        trim()
