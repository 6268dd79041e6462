"""The commands in README.md and docs/NODE-RUNNER.md work as written.

Every line of every ```sh block is typed, in order, into one bash session
(so variables and the working directory carry over, as in a terminal).
The commands that run until Ctrl-C (``hypermesh run``, ``hypermesh devnet``)
are started in the background instead, like a second terminal: the test waits
for their first line of output, and at the end sends each one SIGINT and
expects a clean exit.
"""

import base64
import os
import re
import signal
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from hypermesh.node.config import load_config
from hypermesh.node.processes import read_line

REPO = Path(__file__).resolve().parents[2]
LONG_RUNNING = ("hypermesh run ", "hypermesh devnet ")
# Commands a user types that this test must not: `make test` runs this very test.
NOT_RUN = {"make test"}
COMMAND_TIMEOUT = 300.0
STARTUP_TIMEOUT = 120.0


def sh_commands(markdown: Path) -> list[str]:
    blocks = re.findall(r"^```sh\n(.*?)^```", markdown.read_text(), re.S | re.M)
    return [line for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


class Terminal:
    """One bash, fed a command at a time; its output (stdout and stderr) is kept."""

    def __init__(self, cwd: Path, env: dict):
        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.transcript: list[str] = []

    def type(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        marker = f"__done_{uuid.uuid4().hex}__"
        self.process.stdin.write(f"{command}\necho; echo {marker} $?\n".encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        output = []
        while True:  # bounded by the deadline
            line = read_line(self.process.stdout, deadline).decode(errors="replace")
            if line.startswith(marker):
                self.transcript.append(f"$ {command}\n{''.join(output)}")
                return int(line.split()[1]), "".join(output)
            output.append(line)

    def expand(self, command: str) -> list[str]:
        """The argv bash would run for ``command`` (variables and quotes resolved)."""
        # The newline ends a trailing comment of the command before the pipe.
        status, output = self.type(f"{{ printf '%s\\0' {command}\n}} | base64 -w0")
        assert status == 0, output
        return base64.b64decode(output.strip()).decode().split("\0")[:-1]

    def exported_environment(self) -> tuple[str, dict]:
        status, output = self.type("pwd; env -0 | base64 -w0")
        assert status == 0, output
        cwd, encoded = output.strip().split("\n", 1)
        pairs = base64.b64decode(encoded.strip()).decode().split("\0")
        return cwd, dict(pair.split("=", 1) for pair in pairs if "=" in pair)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def walk_through(markdown: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for name in list(env):  # the user's shell has none of the test's settings
        if name.startswith("HYPERMESH_") and name != "HYPERMESH_INTEROP_PY":
            del env[name]
    terminal = Terminal(REPO, env)
    background: list[tuple[str, subprocess.Popen]] = []
    try:
        for command in sh_commands(markdown):
            if command.strip() in NOT_RUN:
                continue
            if command.startswith(LONG_RUNNING):
                background.append((command, start_in_background(terminal, command, tmp_path, len(background))))
                continue
            status, output = terminal.type(command)
            assert status == 0, "\n".join(terminal.transcript)
        for command, process in background:  # Ctrl-C, as the docs say
            process.send_signal(signal.SIGINT)
        for command, process in background:
            assert process.wait(60) == 0, f"{command} exited with {process.returncode}"
    finally:
        for _, process in background:
            process.kill()
            process.wait()
        terminal.close()


def start_in_background(terminal: Terminal, command: str, tmp_path: Path, index: int) -> subprocess.Popen:
    """Start ``command`` as the terminal would, and wait for its first line."""
    argv = terminal.expand(command)
    cwd, env = terminal.exported_environment()
    log = open(tmp_path / f"background-{index}.log", "wb")
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    try:
        first = read_line(process.stdout, time.monotonic() + STARTUP_TIMEOUT)
    except Exception:
        process.kill()
        raise AssertionError(f"{command}: {(tmp_path / f'background-{index}.log').read_text()}") from None
    terminal.transcript.append(f"$ {command} &\n{first.decode()}")
    return process


@pytest.mark.timeout(900)
def test_every_readme_command_works_as_written(tmp_path):
    walk_through(REPO / "README.md", tmp_path)


@pytest.mark.timeout(600)
def test_every_node_runner_command_works_as_written(tmp_path):
    walk_through(REPO / "docs" / "NODE-RUNNER.md", tmp_path)


def test_every_config_example_in_the_node_runner_guide_is_accepted(tmp_path):
    text = (REPO / "docs" / "NODE-RUNNER.md").read_text()
    examples = re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M)
    assert examples
    for example in examples:
        tomllib.loads(example)
        (tmp_path / "config.toml").write_text(example)
        config = load_config(tmp_path, flags={}, environ={})
        assert any(source.startswith("file ") for source in config.sources.values())
