"""One request, one answer per stream: the shape of the ledger's protocols (tx, query, state sync).

Each side writes one varint-framed message; a request the server cannot read
or refuses to answer resets the stream (the node carries on), and a broken
connection ends the exchange quietly.
"""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable

import trio

from hypermesh.dht.streams import close_quietly, reset_quietly
from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader, FramingError, write_frame
from hypermesh.transport.identity import PeerId


class OneShotError(Exception):
    """The peer answered nothing, or not in one well-formed frame."""


async def serve_one_request(stream, max_request: int,
                            answer: Callable[[bytes], bytes | None | Awaitable[bytes | None]]) -> None:
    """Read one request (≤ ``max_request`` bytes) and write ``answer(request)`` (awaited if it is a coroutine,
    for an answer that waits on the chain); None from ``answer`` resets."""
    try:
        request = await BufferedReader(stream).read_frame(max_request)
        reply = answer(request) if request is not None else None
        if inspect.isawaitable(reply):
            reply = await reply
        if reply is None:
            await reset_quietly(stream)
            return
        await write_frame(stream, reply)
    except FramingError:
        await reset_quietly(stream)
        return
    except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    await close_quietly(stream)


async def ask(host, peer: PeerId, protocol: str, request: bytes, max_answer: int) -> bytes:
    """Send one request to ``peer`` and return its one answer (:class:`OneShotError` if none)."""
    stream = await host.new_stream(peer, [protocol])
    try:
        await write_frame(stream, request)
        answer = await BufferedReader(stream).read_frame(max_answer)
    except FramingError as exc:
        raise OneShotError(f"malformed answer: {exc}") from None
    finally:
        await close_quietly(stream)
    if answer is None:
        raise OneShotError("the peer closed the stream without answering")
    return answer


__all__ = ["OneShotError", "ask", "serve_one_request"]
