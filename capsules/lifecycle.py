"""Capsule lifecycle states, the legal transitions between them, and the event bus.

::

    discovered ─► verified ─► loaded ─► active ⇄ suspended
        │            │          │          │          │
        └──► quarantined ◄──────┘          └──► unloaded ◄┘   (unloaded ─► loaded)

A quarantined capsule stays quarantined: no transition leaves that state, so
it can never be activated. Every transition is logged and published on the
node's local :class:`EventBus`.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from .errors import LifecycleError

logger = logging.getLogger("hypermesh.capsules")


class State(enum.Enum):
    DISCOVERED = "discovered"
    VERIFIED = "verified"
    LOADED = "loaded"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    UNLOADED = "unloaded"
    QUARANTINED = "quarantined"


ALLOWED: dict[State, frozenset[State]] = {
    State.DISCOVERED: frozenset({State.VERIFIED, State.QUARANTINED}),
    State.VERIFIED: frozenset({State.LOADED, State.QUARANTINED, State.UNLOADED}),
    State.LOADED: frozenset({State.ACTIVE, State.UNLOADED, State.QUARANTINED}),
    State.ACTIVE: frozenset({State.SUSPENDED, State.UNLOADED}),
    State.SUSPENDED: frozenset({State.ACTIVE, State.UNLOADED}),
    # Reloading links again: code that no longer links (or no longer matches its admitted digest) is quarantined.
    State.UNLOADED: frozenset({State.LOADED, State.QUARANTINED}),
    State.QUARANTINED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a capsule: a transition, a swap step, a rollback."""

    topic: str  # "transition", "swap.switched", "swap.completed", "swap.rolled_back"
    cid: str | None
    name: str | None
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class EventBus:
    """Synchronous local publish/subscribe with a bounded history.

    Subscribers run on the publishing thread and must be quick; one that
    raises is logged and kept, so a faulty observer cannot stall the runtime.
    Trio code reads events from :meth:`open_trio_channel` instead.
    """

    HISTORY = 1024

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self.history: deque[Event] = deque(maxlen=self.HISTORY)
        self.dropped = 0

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def open_trio_channel(self, max_buffer: int = 256) -> tuple["trio.MemoryReceiveChannel[Event]", Callable[[], None]]:
        """Events as a trio channel, for tasks of the calling trio run.

        Events may be published from any thread; each is handed to the trio
        run with ``run_sync_soon`` (thread-safe, never blocks the publisher).
        A full buffer drops the event and counts it in ``dropped``: the bus
        must not stall the runtime behind a slow reader. Returns the receive
        channel and an unsubscribe function.
        """
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel(max_buffer)

        def deliver(event: Event) -> None:
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.dropped += 1

        def forward(event: Event) -> None:
            try:
                token.run_sync_soon(deliver, event)
            except trio.RunFinishedError:
                self.dropped += 1

        return receive, self.subscribe(forward)

    def publish(self, event: Event) -> None:
        with self._lock:
            self.history.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s", callback, event.topic)


class Lifecycle:
    """The state of one capsule; callers hold the runtime's lock around transitions."""

    def __init__(self, cid: str | None, name: str | None, bus: EventBus):
        self.cid = cid
        self.name = name
        self.bus = bus
        self.state = State.DISCOVERED
        self.history: list[tuple[State, str]] = [(State.DISCOVERED, "found")]
        bus.publish(Event("transition", cid, name, {"from": None, "to": State.DISCOVERED.value, "reason": "found"}))

    def transition(self, target: State, reason: str) -> None:
        if target not in ALLOWED[self.state]:
            raise LifecycleError(f"capsule {self.name or self.cid}: cannot go from {self.state.value} to {target.value}")
        previous, self.state = self.state, target
        self.history.append((target, reason))
        logger.info("capsule %s %s: %s -> %s (%s)", self.name, self.cid, previous.value, target.value, reason)
        self.bus.publish(Event("transition", self.cid, self.name, {"from": previous.value, "to": target.value, "reason": reason}))
