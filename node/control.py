"""The local control socket: how CLI commands talk to the running node.

A Unix socket ``control.sock`` in the node's data directory (mode 0600, in
a 0700 directory, so only the node's user can drive it). One request per
connection: a JSON object ``{"cmd": NAME, ...}`` on one line; the answer is
one line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
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
REQUEST_TIMEOUT = 30.0

Command = Callable[[dict], Awaitable[object]]


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
        async with stream:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    request = await _read_line(stream, MAX_REQUEST_BYTES)
                    response = await self._dispatch(request)
            except trio.TooSlowError:
                response = {"ok": False, "error": "request timed out"}
            except ControlError as exc:
                response = {"ok": False, "error": str(exc)}
            try:
                await stream.send_all(json.dumps(response, default=str).encode() + b"\n")
            except trio.BrokenResourceError:
                pass

    async def _dispatch(self, raw: bytes) -> dict:
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
            return {"ok": True, "result": await command(request)}
        except ControlError:
            raise
        except Exception as exc:  # reported to the caller; the node keeps running
            log.debug("control command %s failed", request["cmd"], exc_info=True)
            raise ControlError(str(exc) or type(exc).__name__) from None


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


async def call(data_dir: Path, cmd: str, timeout: float = REQUEST_TIMEOUT, **params) -> object:
    """Send one command to the node running in ``data_dir``; return its result."""
    path = socket_path(data_dir)
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ControlError(f"no node is running in {data_dir} ({exc.strerror})") from None
    async with stream:
        with trio.fail_after(timeout):
            await stream.send_all(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
            raw = await _read_line(stream, MAX_RESPONSE_BYTES)
    try:
        response = json.loads(raw)
    except ValueError:
        raise ControlError("the node sent a malformed answer") from None
    if not response.get("ok"):
        raise ControlError(response.get("error", "unknown error"))
    return response.get("result")
