"""Session resumption in tests: a client that holds a fresh ticket for a server and no connection."""

import trio

from hypermesh.transport import ping


async def earn_session_ticket(client, server, timeout: float):
    """Connect ``client`` to ``server`` once, then close that connection.

    The client then holds a fresh session ticket for the server (its next dial
    resumes, and may send 0-RTT) and knows the server's address. Returns the
    client's socket (endpoint), which that next dial uses again."""
    addr = server.listen_addrs()[0]
    client.peerstore.add_addrs(server.peer_id, [addr])
    with trio.fail_after(timeout):
        first = await client.connect(addr)
        # The ticket comes after the handshake; a ping's answer follows it.
        assert await ping.ping(client, server.peer_id)
        await first.aclose()
    return first.endpoint
