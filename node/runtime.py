"""Process-wide settings for a long-running node.

Python's cyclic garbage collector promotes any object that survives two
young collections (700 allocations each by default) into the old
generation, and full collections then rescan that whole old generation. A
node churns through short-lived objects that live just long enough to be
promoted (QUIC packets in flight, streams awaiting an answer, DHT requests),
while holding a large, stable heap (thousands of connections): with the
defaults, 200 DHT nodes on two cores spent over a quarter of their CPU in
the collector. A larger young generation lets those objects die young, and
freezing what exists at start-up (modules, compiled schemas) keeps it out of
every later scan.
"""

from __future__ import annotations

import gc

# Allocations between young collections. A young collection scans at most
# this many objects: about a millisecond, rare enough not to matter.
YOUNG_GENERATION_THRESHOLD = 50_000
# Young collections per middle one, and middle ones per full one (CPython
# also waits until the old generation has grown by a quarter).
MIDDLE_GENERATION_THRESHOLD = 20
OLD_GENERATION_THRESHOLD = 20


def tune_garbage_collector() -> None:
    """Call once, after imports and before the node starts serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD)
