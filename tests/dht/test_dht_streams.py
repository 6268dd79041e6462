"""The pool of reusable DHT request streams (sans sockets: streams are stand-ins)."""

import trio

from hypermesh.dht.streams import MAX_REQUESTS_PER_REUSED_STREAM, StreamPool
from hypermesh.transport.identity import Identity


class StandInStream:
    def __init__(self, early=False):
        self.closed = False
        # Opened in 0-RTT and the handshake not completed yet.
        self.early = early
        self.handshake_confirmed = not early

    async def aclose(self):
        await trio.sleep(0.01)  # a real close yields too
        self.closed = True

    async def receive_some(self, max_bytes=None):
        return b""


def pool_with_counter():
    opened = []

    async def open_stream(peer, replay_safe):
        await trio.lowlevel.checkpoint()
        opened.append(StandInStream(early=replay_safe))
        return opened[-1]

    return StreamPool(open_stream, max_idle=2, max_idle_seconds=10), opened


PEERS = [Identity.generate().peer_id for _ in range(3)]


async def test_a_stream_given_back_is_reused_until_it_has_carried_its_quota(autojump_clock):
    pool, opened = pool_with_counter()
    for _ in range(MAX_REQUESTS_PER_REUSED_STREAM + 1):
        pooled = await pool.take(PEERS[0])
        await pool.give_back(PEERS[0], pooled)
    assert len(opened) == 2 and opened[0].closed and not opened[1].closed


async def test_stale_and_surplus_streams_are_closed(autojump_clock):
    pool, opened = pool_with_counter()
    taken = [await pool.take(peer) for peer in PEERS]
    for peer, pooled in zip(PEERS, taken):
        await pool.give_back(peer, pooled)
    assert len(pool) == 2 and opened[0].closed  # least recently used beyond max_idle
    await trio.sleep(11)
    pooled = await pool.take(PEERS[1])
    assert not pooled.reused and opened[1].closed


async def test_closing_stale_streams_while_requests_take_them(autojump_clock):
    pool, opened = pool_with_counter()
    for peer in PEERS[:2]:
        await pool.give_back(peer, await pool.take(peer))
    await trio.sleep(11)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.close_stale)
        for peer in PEERS[:2]:
            nursery.start_soon(pool.take, peer)
    assert all(stream.closed for stream in opened[:2]) and len(pool) == 0


async def test_a_write_is_not_given_a_stream_still_in_early_data(autojump_clock):
    pool, opened = pool_with_counter()
    read = await pool.take(PEERS[0], replay_safe=True)
    await pool.give_back(PEERS[0], read)
    write = await pool.take(PEERS[0], replay_safe=False)
    assert write.stream is opened[1] and not write.stream.early
    assert len(pool) == 1  # the early stream stays for the next read
    assert (await pool.take(PEERS[0], replay_safe=True)).stream is opened[0]


async def test_a_write_reuses_an_early_stream_once_its_handshake_completed(autojump_clock):
    pool, opened = pool_with_counter()
    await pool.give_back(PEERS[0], await pool.take(PEERS[0], replay_safe=True))
    opened[0].handshake_confirmed = True
    assert (await pool.take(PEERS[0], replay_safe=False)).stream is opened[0]
