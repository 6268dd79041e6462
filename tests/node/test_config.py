"""config.toml, HYPERMESH_* variables and flags: one value per setting, flag >
env > file > default, and a bad file refused with its line before anything changes."""

import json
import tomllib

import pytest

from hypermesh.capsules.trust import POLICY_FILE
from hypermesh.node.cli import apply_config, main, parse_command_line
from hypermesh.node.config import SETTINGS, config_template
from hypermesh.node.processes import run_cli, start_node


def snapshot(directory):
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in directory.iterdir()}


@pytest.fixture
def node_dir(tmp_path):
    assert run_cli("init", "--data-dir", str(tmp_path)).returncode == 0
    return tmp_path


def show(data_dir, capsys, *flags):
    assert main(["config", "show", "--json", "--data-dir", str(data_dir), *flags]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    return json.loads(out)["settings"]


def test_init_writes_a_commented_config_naming_every_setting(node_dir):
    text = (node_dir / "config.toml").read_text()
    assert all(table == {} for table in tomllib.loads(text).values())  # all commented out: defaults hold
    for setting in SETTINGS:
        name = setting.key.split(".")[1]
        assert f"# {name} = " in text and setting.env in text and setting.flag in text
    assert text == config_template()
    for line in config_template().splitlines():  # uncommenting any line gives a valid file
        if line.startswith("# ") and " = " in line:
            section = next(l for l in reversed(text[: text.index(line)].splitlines()) if l.startswith("["))
            tomllib.loads(f"{section}\n{line[2:]}\n")


def test_precedence_is_flag_then_env_then_file_then_default(node_dir, capsys, monkeypatch):
    (node_dir / "config.toml").write_text('[log]\n\n  level = "error"\n[dht]\nmode = "client"\n')
    monkeypatch.setenv("HYPERMESH_LOG_LEVEL", "info")
    settings = show(node_dir, capsys, "--log-level", "debug")
    assert settings["log.level"] == {"value": "debug", "source": "flag --log-level"}
    settings = show(node_dir, capsys)
    assert settings["log.level"] == {"value": "info", "source": "env HYPERMESH_LOG_LEVEL"}
    monkeypatch.delenv("HYPERMESH_LOG_LEVEL")
    settings = show(node_dir, capsys)
    assert settings["log.level"] == {"value": "error", "source": f"file {node_dir / 'config.toml'} line 3"}
    assert settings["dht.mode"]["value"] == "client"
    assert settings["network.connections_high"] == {"value": 1000, "source": "default"}
    monkeypatch.setenv("HYPERMESH_BOOTSTRAP", "/ip6/::1/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN,"
                       "/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
    assert len(show(node_dir, capsys)["network.bootstrap"]["value"]) == 2  # lists: comma-separated


@pytest.mark.parametrize("content, expected", [
    ('[network\nlisten = []\n', "is not valid TOML: "),
    ('[network]\nlisten = []\n\nlisen = ["/ip6/::1/udp/0/quic-v1"]\n', "line 4: unknown key network.lisen"),
    ('[network]\nconnections_high = 0\n', "network.connections_high (file {path} line 2): must be between 1 and"),
    ('[dht]\nmode = "sometimes"\n', "dht.mode (file {path} line 2): 'sometimes' is not one of server, client"),
    ('[network]\nbootstrap = ["/ip6/::1/udp/1/quic-v1"]\n', "network.bootstrap (file {path} line 2): "),
    ('verbose = true\n', "line 1: unknown key verbose"),
])
def test_a_bad_config_is_one_line_naming_it_and_changes_nothing(node_dir, content, expected):
    path = node_dir / "config.toml"
    path.write_text(content)
    before = snapshot(node_dir)
    result = run_cli("run", "--data-dir", str(node_dir), "--listen", "/ip6/::1/udp/0/quic-v1")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.stderr
    assert expected.format(path=path) in lines[0]
    assert snapshot(node_dir) == before


def test_a_bad_environment_value_names_its_variable(node_dir, capsys, monkeypatch):
    monkeypatch.setenv("HYPERMESH_CONNECTIONS_LOW", "lots")
    assert main(["config", "show", "--data-dir", str(node_dir)]) == 1
    assert capsys.readouterr().err == ("error: network.connections_low (env HYPERMESH_CONNECTIONS_LOW): "
                                       "'lots' is not a whole number\n")


def test_run_uses_the_config_file(node_dir, tmp_path_factory):
    signer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    (node_dir / "config.toml").write_text(f'[dht]\nmode = "client"\n[capsules]\ntrust = ["{signer}"]\n')
    with start_node(node_dir) as node:
        asker = tmp_path_factory.mktemp("asker")
        record = json.loads(run_cli("id", node.addr(), "--json", "--data-dir", str(asker)).stdout)
    assert "/ipfs/kad/1.0.0" not in record["protocols"]  # a DHT client
    assert signer in (node_dir / POLICY_FILE).read_text()


SIGNER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
ENV_EXAMPLES = {
    "network.listen": ("/ip6/::1/udp/0/quic-v1,/ip4/127.0.0.1/udp/0/quic-v1",
                       ["/ip6/::1/udp/0/quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1"]),
    "network.bootstrap": (f"/ip6/::1/udp/1/quic-v1/p2p/{SIGNER}", [f"/ip6/::1/udp/1/quic-v1/p2p/{SIGNER}"]),
    "network.connections_high": ("2000", 2000),
    "network.connections_low": ("10", 10),
    "network.perf": ("true", True),
    "dht.mode": ("client", "client"),
    "dht.disjoint_paths": ("3", 3),
    "metrics.address": ("[::1]:9100", "[::1]:9100"),
    "log.level": ("debug", "debug"),
    "log.json": ("true", True),
    "capsules.trust": (SIGNER, [SIGNER]),
    "capsules.remote_max_input_bytes": ("65536", 65536),
    "capsules.remote_per_peer_running": ("4", 4),
    "capsules.remote_per_peer_queued": ("0", 0),
    "capsules.remote_total_running": ("16", 16),
    "network.perf": ("yes", True),
    "chain.genesis": ("genesis.json", "genesis.json"),
    "chain.validator": ("true", True),
    "chain.state_sync": ("on", True),
    "chain.timeout": ("0.25", 0.25),
    "chain.snapshot_interval": ("50", 50),
}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.key)
def test_every_setting_is_an_environment_variable(setting, node_dir, capsys, monkeypatch):
    text, value = ENV_EXAMPLES[setting.key]
    monkeypatch.setenv(setting.env, text)
    assert show(node_dir, capsys)[setting.key] == {"value": value, "source": f"env {setting.env}"}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.key)
def test_every_setting_is_a_flag_of_run(setting, tmp_path):
    text, value = ENV_EXAMPLES[setting.key]
    given = [setting.flag] if value is True else [setting.flag, text.split(",")[0]]
    args = parse_command_line(["run", *given, "--data-dir", str(tmp_path)])
    apply_config(args, environ={setting.env: "something else entirely"})  # the flag wins
    assert args.config.sources[setting.dest] == f"flag {setting.flag}"
    assert getattr(args, setting.dest) == (value[:1] if isinstance(value, list) else value)
