"""The CLI's contract for failures and output: one ``error:`` line, exit 1 for
a refused value (2 for a malformed command line), never a traceback."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypermesh.node.cli import main, parse_command_line
from hypermesh.node.cli.common import BadValue
from hypermesh.node.processes import hypermesh_command, run_cli


def one_error_line(result, status=1):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("argv, names", [
    (["dht", "wait", "--timeout", "-1"], "--timeout"),
    (["dht", "wait", "--timeout", "nan"], "--timeout"),
    (["run", "--metrics", "localhost:99999"], "--metrics"),
    (["--log-level", "verbose", "peers"], "--log-level"),
])
def test_the_reported_tracebacks_are_one_error_line(argv, names, tmp_path):
    line = one_error_line(run_cli(*argv, "--data-dir", str(tmp_path)))
    assert names in line
    assert list(tmp_path.iterdir()) == []


def run_main(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, captured.out, captured.err)


@pytest.mark.parametrize("argv, expected", [
    (["ping", "--count", "abc", "/ip6/::1/udp/1/quic-v1"], "--count: 'abc' is not a whole number"),
    (["ping", "--count", "0", "/ip6/::1/udp/1/quic-v1"], "--count: must be at least 1, not 0"),
    (["service", "register", "echo", "--protocol", "/x", "--weight", "-1"],
     "--weight: must be between 0 and 65535, not -1"),
    (["perf", "/ip6/::1/udp/1/quic-v1", "--upload", "lots"], "--upload: 'lots' is not a byte count"),
    (["run", "--dht-mode", "both"], "--dht-mode: 'both' is not one of server, client"),
    (["run", "--dht-disjoint-paths", "0"], "--dht-disjoint-paths: must be between 1 and 16, not 0"),
    (["run", "--chain-timeout", "0"], "--chain-timeout: must be between 0.05 and 60, not 0"),
    (["run", "--snapshot-interval", "x"], "--snapshot-interval: 'x' is not a whole number"),
    (["transfer", "12D3KooWAdB5DkwdBVZUbP9RonHRVwT6yxu6mBn1tZG3vSowry2Z", "0"], "amount: must be between 1 and"),
    (["chain", "block", "0"], "height: must be at least 1, not 0"),
    (["stake", "bond", "10000", "--role", "admin"], "--role: 'admin' is not one of validator, provider"),
    (["escrow", "open", "x", "5", "--deadline", "-1"], "--deadline: must be between 1 and"),
    (["lock", "acquire", "job", "--ttl", "-1"], "--ttl: must be between 0.001 and 86400, not -1"),
    (["lock", "release", "job", "--token", "0"], "--token: must be between 1 and"),
])
def test_a_refused_value_names_its_option(argv, expected, capsys, tmp_path):
    line = one_error_line(run_main([*argv, "--data-dir", str(tmp_path)], capsys))
    assert line.startswith(f"error: {expected}")


@pytest.mark.parametrize("argv", [["no-such-command"], ["ping"], ["peers", "--no-such-option"], []])
def test_a_malformed_command_line_is_one_line_and_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "--help" in err


def test_global_options_are_accepted_after_the_command(tmp_path):
    after = parse_command_line(["peers", "--log-level", "info", "--log-json", "--data-dir", str(tmp_path)])
    before = parse_command_line(["--log-level", "info", "--log-json", "--data-dir", str(tmp_path), "peers"])
    for args in (after, before):
        assert (args.log_level, args.log_json, args.data_dir) == ("info", True, tmp_path)
    capsule = parse_command_line(["--data-dir", str(tmp_path), "capsule", "ls"])
    assert capsule.data_dir == tmp_path
    assert parse_command_line(["dht", "--log-level", "debug", "wait"]).log_level == "debug"


def test_commands_without_a_running_node_say_how_to_start_one(tmp_path, capsys):
    for argv in (["dht", "wait"], ["dht", "provide", "k"], ["service", "register", "echo", "--protocol", "/x"],
                 ["peers"], ["chain", "status"], ["validators"], ["stake", "unbond", "10"], ["lock", "show", "job"],
                 ["transfer", "12D3KooWAdB5DkwdBVZUbP9RonHRVwT6yxu6mBn1tZG3vSowry2Z", "1"]):
        line = one_error_line(run_main([*argv, "--data-dir", str(tmp_path)], capsys))
        assert f"start one with `hypermesh run --data-dir {tmp_path}`" in line and "--bootstrap" not in line
    line = one_error_line(run_main(["service", "resolve", "echo", "--data-dir", str(tmp_path)], capsys))
    assert "or give --bootstrap MADDR" in line
    assert list(tmp_path.iterdir()) == []  # nothing published, no identity made


def test_ctrl_c_during_a_short_lived_ping_says_interrupted(tmp_path):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("::1", 0))
        target = f"/ip6/::1/udp/{silent.getsockname()[1]}/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        # Ctrl-C at a terminal: SIGINT at its default disposition. A runner
        # started as a background job of a non-interactive shell ignores
        # SIGINT, and the child would inherit that (and rightly ignore it).
        process = subprocess.Popen(hypermesh_command("ping", target, "--log-level", "debug", "--data-dir",
                                                     str(tmp_path)), stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for line in process.stderr:  # bounded: the dial fails after its timeout
                if "dialling" in line:
                    process.send_signal(signal.SIGINT)
                    break
            rest = process.stderr.read()
            assert process.wait(30) == 130, rest
        finally:
            process.kill()
    assert rest.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in rest


def test_a_closed_stdout_is_not_an_error(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before we write (`| head` that exited)
    try:
        result = subprocess.run(hypermesh_command("init", "--data-dir", str(tmp_path)), stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == ""


def test_peers_json_is_one_object_on_one_line(tmp_path):
    from hypermesh.node.processes import start_node

    with start_node(tmp_path / "node") as node:
        result = run_cli("peers", "--json", "--data-dir", str(node.data_dir))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout) == {"peers": []}


# -- any command line: never a traceback ---------------------------------------

WORDS = ["init", "run", "ping", "id", "perf", "peers", "dht", "wait", "provide", "find-providers", "service",
         "register", "resolve", "capsule", "ls", "trust", "fetch", "publish", "genesis", "new", "chain", "status",
         "block", "account", "show", "transfer", "stake", "bond", "unbond", "escrow", "open", "release", "refund",
         "validators", "lock", "acquire", "renew", "--ttl", "--token", "--proof", "--validator", "--allocation", "--genesis", "--state-sync", "--role", "--deadline", "--json", "--data-dir", "--log-level",
         "--log-json", "--count", "--timeout", "--peers", "--weight", "--protocol", "--metrics", "--listen",
         "--bootstrap", "--connections-low", "--connections-high", "--dht-mode", "--upload", "--dht-disjoint-paths",
         "-1", "0", "nan", "inf", "1e999", "99999", "info", "verbose", "[::1]:0", "localhost:99999", "-", "--", "-h"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=8))
def test_random_command_lines_never_raise_a_traceback(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parse_command_line(argv)
        except BadValue as exc:
            assert str(exc)
        except SystemExit as exited:
            assert exited.code in (0, 2)
            if exited.code == 2:
                assert err.getvalue().startswith("error: ") and len(err.getvalue().strip().splitlines()) == 1
