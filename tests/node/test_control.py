"""The control socket protocol, in process: requests, errors, progress, bounds."""

import json
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st
import trio

from hypermesh.node import control


@pytest.fixture
async def server(tmp_path, nursery):
    server = control.ControlServer(tmp_path)
    await nursery.start(server.serve)
    return server


async def test_result_error_and_unknown_command(server, tmp_path):
    async def echo(request, progress):
        return {"echo": request["value"]}

    async def broken(request, progress):
        raise RuntimeError("it broke")

    server.register("echo", echo)
    server.register("broken", broken)
    assert stat.S_IMODE(control.socket_path(tmp_path).stat().st_mode) == 0o600
    assert await control.call(tmp_path, "echo", value=3) == {"echo": 3}
    with pytest.raises(control.ControlError, match="it broke"):
        await control.call(tmp_path, "broken")
    with pytest.raises(control.ControlError, match="unknown command"):
        await control.call(tmp_path, "nope")


async def test_progress_reaches_the_client_before_the_result(server, tmp_path):
    proceed = trio.Event()

    async def slow(request, progress):
        progress({"done": 1, "total": 3})
        await proceed.wait()
        progress({"done": 3, "total": 3})
        return "finished"

    server.register("slow", slow)
    seen = []

    def on_progress(update):
        seen.append(update)
        proceed.set()

    with trio.fail_after(10):
        assert await control.call(tmp_path, "slow", on_progress=on_progress) == "finished"
    assert seen[0] == {"done": 1, "total": 3} and seen[-1] == {"done": 3, "total": 3}


async def test_oversized_and_malformed_requests_are_refused(server, tmp_path):
    for payload in (b"x" * (control.MAX_REQUEST_BYTES + 10) + b"\n", b"not json\n", b"[1, 2]\n"):
        stream = await trio.open_unix_socket(str(control.socket_path(tmp_path)))
        async with stream:
            await stream.send_all(payload)
            answer = json.loads((await stream.receive_some(65536)).decode())
        assert answer["ok"] is False and answer["error"]


async def test_a_second_node_on_the_same_data_dir_is_refused(server, tmp_path):
    with pytest.raises(control.ControlError, match="already running"):
        await control.ControlServer(tmp_path).serve()


@given(st.binary(max_size=256))
def test_control_requests_of_any_bytes_get_an_answer_not_a_crash(raw):
    server = control.ControlServer("/nonexistent")

    async def echo(request, progress):
        return request

    server.register("echo", echo)

    async def dispatch():
        try:
            answer = await server._dispatch(raw, lambda progress: None)
        except control.ControlError:
            return
        assert answer["ok"] is True

    trio.run(dispatch)
