"""The local control socket: how CLI commands talk to the running node.

A Unix socket ``control.sock`` in the node's data directory (mode 0600, in
a 0700 directory, so only the node's user can drive it). One request per
connection: a JSON object ``{"cmd": NAME, ...}`` on one line; the answer is
one line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
A long command (a capsule fetch) may first send ``{"progress": {...}}``
lines; only the latest progress is sent when the client reads slowly.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

import trio

log = logging.getLogger("hypermesh.node")

SOCKET_NAME = "control.sock"
# Requests are small commands; anything larger is a mistake or an attack.
MAX_REQUEST_BYTES = 64 << 10
MAX_RESPONSE_BYTES = 64 << 20
# Long enough for a capsule fetch of a few hundred MB over a slow path.
REQUEST_TIMEOUT = 300.0

# A command gets the request and a function to report progress with.
Command = Callable[[dict, Callable[[dict], None]], Awaitable[object]]


class ControlError(Exception):
    """A control request failed; the message is shown to the user."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


class ControlServer:
    def __init__(self, data_dir: Path):
        self.path = socket_path(data_dir)
        self._commands: dict[str, Command] = {}

    def register(self, name: str, command: Command) -> None:
        self._commands[name] = command

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            if await _is_alive(self.path):
                raise ControlError(f"another node is already running with {self.path.parent}")
            self.path.unlink()  # left behind by a node that was killed
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._handle, [listener])
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    async def _handle(self, stream: trio.SocketStream) -> None:
        # Bounds the whole exchange, including a client that stops reading.
        with trio.move_on_after(REQUEST_TIMEOUT + 10):
            await self._exchange(stream)

    async def _exchange(self, stream: trio.SocketStream) -> None:
        async with stream:
            reporter = _ProgressReporter(stream)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reporter.run)
                    try:
                        with trio.fail_after(REQUEST_TIMEOUT):
                            request = await _read_line(stream, MAX_REQUEST_BYTES)
                            response = await self._dispatch(request, reporter.report)
                    except trio.TooSlowError:
                        response = {"ok": False, "error": "request timed out"}
                    except ControlError as exc:
                        response = {"ok": False, "error": str(exc)}
                    reporter.finish()
                await stream.send_all(json.dumps(response, default=str).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _dispatch(self, raw: bytes, progress: Callable[[dict], None]) -> dict:
        try:
            request = json.loads(raw)
        except ValueError:
            raise ControlError("request is not JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ControlError('request must be an object with a "cmd" string')
        command = self._commands.get(request["cmd"])
        if command is None:
            raise ControlError(f"unknown command {request['cmd']!r}")
        try:
            return {"ok": True, "result": await command(request, progress)}
        except ControlError:
            raise
        except Exception as exc:  # reported to the caller; the node keeps running
            log.debug("control command %s failed", request["cmd"], exc_info=True)
            raise ControlError(str(exc) or type(exc).__name__) from None


class _ProgressReporter:
    """Sends the latest progress of a running command, never a backlog.

    It stops by itself once told the command is done (never cancelled in the
    middle of a write, which would leave half a line on the socket).
    """

    def __init__(self, stream: trio.SocketStream):
        self._stream = stream
        self._latest: dict | None = None
        self._unsent = False
        self._done = False
        self._wakeup = trio.Event()

    def report(self, progress: dict) -> None:
        self._latest, self._unsent = progress, True
        self._wakeup.set()

    def finish(self) -> None:
        self._done = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self._unsent:
                self._unsent = False
                await self._stream.send_all(json.dumps({"progress": self._latest}).encode() + b"\n")
            if self._done and not self._unsent:
                return


async def _read_line(stream: trio.SocketStream, limit: int) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > limit:
            raise ControlError(f"message exceeds {limit} bytes")
    return bytes(buffer.split(b"\n", 1)[0])


async def _is_alive(path: Path) -> bool:
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError:
        return False
    await stream.aclose()
    return True


def node_is_running(data_dir: Path) -> bool:
    return socket_path(data_dir).exists()


async def call(data_dir: Path, cmd: str, *, request_timeout: float = REQUEST_TIMEOUT,
               on_progress: Callable[[dict], None] | None = None, **params) -> object:
    """Send one command to the node running in ``data_dir``; return its result.

    ``params`` are the command's own arguments (one may well be a ``timeout``).
    """
    path = socket_path(data_dir)
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ControlError(f"no node is running in {data_dir} ({exc.strerror})") from None
    reader = _LineReader(stream)
    async with stream:
        with trio.move_on_after(request_timeout) as deadline:
            await stream.send_all(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
            while True:
                response = reader.parse(await reader.next_line(MAX_RESPONSE_BYTES))
                if "progress" not in response:
                    break
                if on_progress is not None:
                    on_progress(response["progress"])
    if deadline.cancelled_caught:
        raise ControlError(f"the node in {data_dir} did not answer within {request_timeout:g} s")
    if not response.get("ok"):
        raise ControlError(response.get("error", "unknown error"))
    return response.get("result")


class _LineReader:
    def __init__(self, stream: trio.SocketStream):
        self._stream = stream
        self._buffer = bytearray()

    async def next_line(self, limit: int) -> bytes:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise ControlError("the node closed the connection without an answer")
            self._buffer += chunk
            if len(self._buffer) > limit:
                raise ControlError(f"answer exceeds {limit} bytes")
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    @staticmethod
    def parse(raw: bytes) -> dict:
        try:
            response = json.loads(raw)
        except ValueError:
            raise ControlError("the node sent a malformed answer") from None
        if not isinstance(response, dict):
            raise ControlError("the node sent a malformed answer")
        return response
