"""QUIC Retry: address validation tokens, and a spoofed flood that cannot lock honest peers out."""

import contextlib
import socket

import pytest
import trio
from aioquic.quic.connection import QuicConnection

from hypermesh.transport import ping
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.retry import TOKEN_LIFETIME, RetryTokens

from .test_quic_hooks import configuration

V4 = "/ip4/127.0.0.1/udp/0/quic-v1"
STEP = 10
CLIENT = ("127.0.0.1", 4242)
ORIGINAL_CID, RETRY_CID = bytes(range(8)), bytes(range(8, 16))


def test_a_token_is_valid_only_from_its_address_to_its_retry_cid_while_fresh():
    tokens = RetryTokens()
    token = tokens.issue(CLIENT, ORIGINAL_CID, RETRY_CID, now=100.0)
    assert tokens.check(token, CLIENT, RETRY_CID, now=101.0).original_cid == ORIGINAL_CID
    for address, cid, now in [
        (("127.0.0.1", 4243), RETRY_CID, 101.0),
        (("127.0.0.2", 4242), RETRY_CID, 101.0),
        (CLIENT, ORIGINAL_CID, 101.0),
        (CLIENT, RETRY_CID, 100.0 + TOKEN_LIFETIME + 1),
    ]:
        checked = tokens.check(token, address, cid, now)
        assert checked.ours and not checked.valid  # ours, so the server closes with INVALID_TOKEN


@pytest.mark.parametrize("length", [0, 1, 27, 40, 200])
def test_forged_truncated_or_foreign_tokens_are_not_ours(length):
    tokens = RetryTokens()
    assert not tokens.check(bytes(length), CLIENT, RETRY_CID, now=1.0).ours
    token = bytearray(tokens.issue(CLIENT, ORIGINAL_CID, RETRY_CID, now=1.0))
    token[-1] ^= 1
    assert not tokens.check(bytes(token), CLIENT, RETRY_CID, now=1.0).ours
    foreign = RetryTokens().issue(CLIENT, ORIGINAL_CID, RETRY_CID, now=1.0)  # another server's key
    assert not tokens.check(foreign, CLIENT, RETRY_CID, now=1.0).ours


async def test_a_client_asked_to_retry_connects_and_is_authenticated():
    async with open_host(Identity.generate(), [V4], HostConfig(retry_threshold=0)) as server, open_host(
        Identity.generate(), [V4]
    ) as client:
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            assert await ping.ping(client, server.peer_id)
        assert driver.remote_peer_id == server.peer_id
        assert server.connections_to(client.peer_id)


@pytest.mark.parametrize("retry_threshold", [0, None])
async def test_a_token_from_another_server_is_ignored_not_fatal(retry_threshold):
    # A client may carry a NEW_TOKEN token from an earlier server at this
    # address: the server neither trusts it nor closes on it.
    async with open_host(Identity.generate(), [V4], HostConfig(retry_threshold=retry_threshold)) as server, open_host(
        Identity.generate(), [V4]
    ) as client:
        client.dialer.configuration.token = RetryTokens().issue(CLIENT, ORIGINAL_CID, RETRY_CID, now=0.0)
        with trio.fail_after(STEP):
            await client.connect(server.listen_addrs()[0])
            assert await ping.ping(client, server.peer_id)


def spoofed_initials(count):
    """Valid client Initials (each a fresh connection), as an attacker would replay from forged sources."""
    client_config = configuration(Identity.generate(), True)
    initials = []
    for _ in range(count):
        quic = QuicConnection(configuration=client_config)
        quic.connect(("127.0.0.1", 9), now=0.0)
        initials.append(quic.datagrams_to_send(0.0)[0][0])
    return initials


async def test_a_flood_of_spoofed_initials_does_not_lock_out_an_honest_client():
    config = HostConfig(max_connections=32)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V4], config))
        port = int(server.listen_addrs()[0].split("/")[4])
        forged_sources = []
        for index, initial in enumerate(spoofed_initials(3 * config.max_connections)):
            # Sources across 127/8 that never answer: spoofed addresses.
            source = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            source.bind((f"127.0.{index // 250}.{index % 250 + 2}", 0))
            source.sendto(initial, ("127.0.0.1", port))
            forged_sources.append(source)
        client = await stack.enter_async_context(open_host(Identity.generate(), [V4]))
        with trio.fail_after(STEP / 2):
            await client.connect(server.listen_addrs()[0])
            assert await ping.ping(client, server.peer_id)
        assert server.connection_count < config.max_connections
