"""The UDP endpoint's routing of datagrams to connections (real sockets on [::1])."""

import socket
import sys

import pytest
import trio
import trio.testing

from hypermesh.transport import endpoint as endpoint_module
from hypermesh.transport import metrics
from hypermesh.transport.endpoint import QuicEndpoint, make_udp_socket


def initial_datagram(cid: bytes = bytes(range(8))) -> bytes:
    # Long header, type Initial, QUIC v1, then the destination CID; padded to
    # the minimum Initial size (what a client's first flight looks like to routing).
    head = bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([len(cid)]) + cid + bytes([0])
    return head + bytes(1200 - len(head))


def dropped(reason: str) -> float:
    return metrics.DATAGRAMS_DROPPED.labels(reason)._value.get()


@pytest.fixture
def endpoint():
    accepted = []

    def accept(endpoint, data, addr, cid, version):
        accepted.append(cid)
        return None

    sock = make_udp_socket(socket.AF_INET6, "::1", 0)
    ep = QuicEndpoint(sock, socket.AF_INET6, accept)
    ep.accepted = accepted
    yield ep
    sock.close()


def test_an_initial_that_waited_too_long_in_the_queue_opens_no_connection(endpoint):
    before = dropped("stale_initial")
    stale = endpoint_module.STALE_INITIAL_SECONDS + 1
    assert endpoint._datagram_received(initial_datagram(), ("::1", 9, 0, 0), 0.0, queued=stale) is None
    assert dropped("stale_initial") == before + 1 and endpoint.accepted == []
    endpoint._datagram_received(initial_datagram(), ("::1", 9, 0, 0), 0.0, queued=0.01)
    assert endpoint.accepted == [bytes(range(8))]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive timestamps are a Linux feature")
async def test_queue_time_comes_from_kernel_timestamps(endpoint, monkeypatch):
    # A datagram that sits unread for 50 ms counts as stale at a 10 ms limit.
    monkeypatch.setattr(endpoint_module, "STALE_INITIAL_SECONDS", 0.01)
    assert endpoint._timestamps
    before = dropped("stale_initial")
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sender.sendto(initial_datagram(), endpoint.sock.getsockname())
    sender.close()
    await trio.sleep(0.05)  # the datagram ages in the kernel queue
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint.run)
            # Once every task is blocked, the endpoint has read all there was.
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert dropped("stale_initial") == before + 1 and endpoint.accepted == []


def a_run_of_datagrams() -> list[bytes]:
    # Five of one size and a shorter last one: one GSO send.
    return [bytes([index]) * 1452 for index in range(5)] + [b"\xff" * 300]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO/GRO are Linux features")
def test_a_run_of_datagrams_leaves_in_one_gso_send_and_arrives_as_datagrams(endpoint, monkeypatch):
    assert endpoint.gso
    sends = []
    real_sendmsg = endpoint.sock.sendmsg
    monkeypatch.setattr(endpoint, "sock", type("Spy", (), {
        "sendmsg": lambda self, *args: sends.append(args) or real_sendmsg(*args),
        "sendto": endpoint.sock.sendto})())
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("::1", 0))
        receiver.settimeout(5)
        endpoint.send_datagrams(a_run_of_datagrams(), receiver.getsockname())
        # A socket without GRO gets them one by one, as sent.
        assert [receiver.recv(65536) for _ in range(6)] == a_run_of_datagrams()
    assert len(sends) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO/GRO are Linux features")
async def test_datagrams_coalesced_by_gro_are_routed_one_by_one(endpoint):
    arrived = []
    receiver = QuicEndpoint(make_udp_socket(socket.AF_INET6, "::1", 0), socket.AF_INET6, None)
    receiver._datagram_received = lambda data, addr, now, queued=0.0: arrived.append(data)
    try:
        endpoint.send_datagrams(a_run_of_datagrams(), receiver.sock.getsockname())
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver.run)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    finally:
        receiver.close()
    assert arrived == a_run_of_datagrams()


def test_a_kernel_that_refuses_gso_gets_the_datagrams_one_by_one(endpoint, monkeypatch):
    def refuse(*args):
        raise OSError(5, "Input/output error")  # EIO: a device without checksum offload

    sent = []
    monkeypatch.setattr(endpoint, "sock", type("Refusing", (), {
        "sendmsg": lambda self, *args: refuse(), "sendto": lambda self, data, addr: sent.append(data)})())
    endpoint.gso = True
    endpoint.send_datagrams(a_run_of_datagrams(), ("::1", 9, 0, 0))
    assert sent == a_run_of_datagrams() and not endpoint.gso


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO and GRO are Linux features")
async def test_a_batch_is_counted_in_datagrams_even_when_gro_coalesces_them(endpoint, monkeypatch):
    """With GRO one receive call returns dozens of datagrams; the endpoint still stops after about
    MAX_BATCH of them to send what they call for (a bulk sender's ACKs waited thousands before)."""
    if not endpoint._gro:
        pytest.skip("no UDP GRO on this kernel")
    handled = []
    monkeypatch.setattr(endpoint, "_datagram_received", lambda data, *args: handled.append(len(data)))
    segment, per_send, sends = 1200, 50, 8
    short_header = bytes([0x40]) + bytes(segment - 1)  # for no connection of ours: dropped
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for _ in range(sends):
        sender.sendmsg([short_header * per_send], [(endpoint_module.SOL_UDP, endpoint_module.UDP_SEGMENT,
                                                    endpoint_module._SEGMENT_SIZE.pack(segment))],
                       0, endpoint.sock.getsockname())
    sender.close()
    # Where each batch ends: the endpoint yields to other tasks (and then transmits).
    at_yields = []
    checkpoint = trio.lowlevel.checkpoint

    async def recording_checkpoint():
        at_yields.append(len(handled))
        await checkpoint()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", recording_checkpoint)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(endpoint.run)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()  # all read: the endpoint waits on its socket
        nursery.cancel_scope.cancel()
    batches = [b - a for a, b in zip([0] + at_yields, at_yields) if b > a]
    assert handled == [segment] * (sends * per_send)
    assert len(batches) > 1 and max(batches) <= endpoint_module.MAX_BATCH + per_send
