"""What a node grants its peers over ``/hm/capsule-run/1.0.0`` (a light module: node/config.py takes its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RemoteRunLimits:
    """What one node grants its peers; a call also stays within its trust zone's fuel, memory and time."""

    max_input_bytes: int = 1024 * 1024
    per_peer_running: int = 2
    per_peer_queued: int = 8
    # Calls at once over all peers (each takes a worker thread).
    total_running: int = 4
    # A queued call gives up (busy) after this long without a slot.
    queue_timeout: float = 10.0
    # To send the request; and, separately, to take the answer.
    request_timeout: float = 10.0
    answer_timeout: float = 10.0
    # Fetch a capsule through the DHT when it is not installed (admission still decides).
    fetch_absent: bool = True
