"""libp2p perf, ``/perf/1.0.0`` (libp2p/specs perf/perf.md).

The client sends the number of bytes it wants back (u64, big-endian), then
its upload, then closes its side; the server reads everything, then sends
the requested bytes and closes. go, rust and js libp2p implement the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from .errors import ProtocolError, ResourceLimitError

PROTOCOL = "/perf/1.0.0"
BLOCK = bytes(64 << 10)
# What one request may ask us to send: bounded so a peer cannot keep us
# sending for ever.
MAX_DOWNLOAD_BYTES = 10 << 30
# Requests one peer may have served at once: perf is for measuring, and a
# peer that opens many and never reads must not tie up the node.
MAX_REQUESTS_PER_PEER = 8


async def _send_zeros(stream, count: int) -> None:
    while count > 0:
        chunk = BLOCK if count >= len(BLOCK) else BLOCK[:count]
        await stream.send_all(chunk)
        count -= len(chunk)


async def _drain(stream) -> int:
    total = 0
    while True:
        data = await stream.receive_some(1 << 20)
        if not data:
            return total
        total += len(data)


async def handle_perf(stream) -> None:
    header = b""
    while len(header) < 8:
        data = await stream.receive_some(8 - len(header))
        if not data:
            raise ProtocolError("perf request ended before its 8-byte length")
        header += data
    download = int.from_bytes(header, "big")
    if download > MAX_DOWNLOAD_BYTES:
        raise ProtocolError(f"perf request for {download} bytes exceeds {MAX_DOWNLOAD_BYTES}")
    await _drain(stream)
    await _send_zeros(stream, download)
    await stream.send_eof()


@dataclass
class PerfResult:
    upload_bytes: int
    download_bytes: int
    upload_seconds: float
    download_seconds: float
    total_seconds: float

    def to_json(self) -> dict:
        def rate(count, seconds):
            return round(count / seconds / 1e6, 3) if seconds > 0 else None

        return {
            "upload_bytes": self.upload_bytes,
            "download_bytes": self.download_bytes,
            "upload_seconds": round(self.upload_seconds, 6),
            "download_seconds": round(self.download_seconds, 6),
            "total_seconds": round(self.total_seconds, 6),
            "upload_mb_per_s": rate(self.upload_bytes, self.upload_seconds),
            "download_mb_per_s": rate(self.download_bytes, self.download_seconds),
        }


async def run_perf(stream, upload: int, download: int) -> PerfResult:
    started = trio.current_time()
    await stream.send_all(download.to_bytes(8, "big"))
    await _send_zeros(stream, upload)
    await stream.send_eof()
    # The upload is done when the server starts answering; for upload-only
    # runs, when it closes.
    first = await stream.receive_some(1 << 20)
    upload_done = trio.current_time()
    received = len(first) + (await _drain(stream) if first else 0)
    finished = trio.current_time()
    if received != download:
        raise ProtocolError(f"perf server sent {received} bytes, expected {download}")
    return PerfResult(upload, download, upload_done - started, finished - upload_done, finished - started)


def limited_per_peer(handler, limit: int):
    """``handler``, refusing a peer's stream while it has ``limit`` running."""
    running: dict = {}

    async def limited(stream) -> None:
        peer = stream.remote_peer
        if running.get(peer, 0) >= limit:
            raise ResourceLimitError(f"{peer} already has {limit} perf requests running")
        running[peer] = running.get(peer, 0) + 1
        try:
            await handler(stream)
        finally:
            running[peer] -= 1
            if not running[peer]:
                del running[peer]

    return limited


def install(host, max_requests_per_peer: int = MAX_REQUESTS_PER_PEER) -> None:
    host.set_stream_handler(PROTOCOL, limited_per_peer(handle_perf, max_requests_per_peer))
