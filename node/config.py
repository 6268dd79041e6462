"""Node configuration: ``config.toml`` in the data directory, ``HYPERMESH_*``
environment variables and command-line flags.

Each setting has one name in each place (``network.listen`` in the file,
``HYPERMESH_LISTEN`` in the environment, ``--listen`` on the command line)
and one check, so a value is refused the same way wherever it comes from.
A flag beats the environment, which beats the file, which beats the default.
The file is refused as a whole (its line named) on a syntax error, an
unknown key or a bad value; nothing is read from a file that fails.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from hypermesh.capsules.remote_limits import RemoteRunLimits
from hypermesh.transport.identity import PeerId
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

DEFAULT_DATA_DIR = Path(os.environ.get("HYPERMESH_DATA_DIR", "~/.hypermesh")).expanduser()
DEFAULT_LISTEN = ["/ip6/::/udp/4001/quic-v1", "/ip4/0.0.0.0/udp/4001/quic-v1"]
CONFIG_FILE = "config.toml"
ENV_PREFIX = "HYPERMESH_"
LOG_LEVELS = ("debug", "info", "warning", "error")
DHT_MODES = ("server", "client")
# Bounds that keep a typo from becoming a denial of service on ourselves.
MAX_CONNECTIONS = 1_000_000
MAX_DISJOINT_PATHS = 16
REMOTE_RUN = RemoteRunLimits()
MAX_REMOTE_INPUT_BYTES = 16 * 1024 * 1024  # the /hm/capsule-run/1.0.0 codec's own ceiling
MAX_REMOTE_CALLS = 1024
# The chain's round timeout, in seconds: below, votes cannot cross a loaded link in time; above, a dead proposer stalls.
CHAIN_TIMEOUT_RANGE = (0.05, 60.0)
MAX_SNAPSHOT_INTERVAL = 1_000_000


class SettingError(ValueError):
    """A value refused by a setting's check; the message says why."""


class ConfigError(Exception):
    """The configuration cannot be used: one line naming the key and where it came from."""


# -- checks: each takes a TOML value, an environment string or a parsed flag -------


def _from_text(value, convert: Callable[[str], object], kind: str):
    """An environment or flag string converted; any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return convert(value.strip())
    except ValueError:
        raise SettingError(f"{value!r} is not {kind}") from None


def whole_number(minimum: int | None = None, maximum: int | None = None) -> Callable[[object], int]:
    def check(value) -> int:
        value = _from_text(value, int, "a whole number")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(f"{value!r} is not a whole number")
        check_range(value, minimum, maximum)
        return value

    return check


def check_range(value, minimum, maximum) -> None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise SettingError(f"must be between {minimum:g} and {maximum:g}, not {value:g}")
    if minimum is not None and value < minimum:
        raise SettingError(f"must be at least {minimum:g}, not {value:g}")
    if maximum is not None and value > maximum:
        raise SettingError(f"must be at most {maximum:g}, not {value:g}")


def number(minimum: float, maximum: float) -> Callable[[object], float]:
    """A finite number within ``minimum..maximum`` (a whole one is accepted too)."""

    def check(value) -> float:
        value = _from_text(value, float, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise SettingError(f"{value!r} is not a number")
        check_range(value, minimum, maximum)
        return float(value)

    return check


def path_text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingError(f"{value!r} is not a path")
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise SettingError(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return check


def flag(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise SettingError(f"{value!r} is not true or false")


def host_port(value) -> str:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces), port 0..65535."""
    if not isinstance(value, str):
        raise SettingError(f"{value!r} is not HOST:PORT")
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingError(f"{value!r} is not HOST:PORT with a port from 0 to 65535")
    if host.startswith("[") != host.endswith("]"):
        raise SettingError(f"{value!r}: an IPv6 host goes in brackets, like [::1]:9100")
    return value


def optional(check: Callable[[object], object]) -> Callable[[object], object]:
    """``check``, or off for an empty string."""
    return lambda value: None if value in ("", None) else check(value)


def list_setting(key: str, dest: str, item_check, default: list, comment: str) -> "Setting":
    return Setting(key, dest, list_of(item_check), default, comment, item_check)


def list_of(check: Callable[[object], object]) -> Callable[[object], list]:
    """A TOML array, a comma-separated environment string, or a flag's list."""

    def check_all(value) -> list:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)):
            raise SettingError(f"{value!r} is not a list")
        return [check(item) for item in value]

    return check_all


def quic_multiaddr(need_peer_id: bool) -> Callable[[object], str]:
    def check(value) -> str:
        if not isinstance(value, str):
            raise SettingError(f"{value!r} is not a multiaddr")
        try:
            address = parse_quic_address(value)
        except MultiaddrError as exc:
            raise SettingError(str(exc)) from None
        if need_peer_id and address.peer_id is None:
            raise SettingError(f"{value} lacks /p2p/<peer id>")
        return value

    return check


def peer_id(value) -> str:
    try:
        PeerId.from_base58(value)
    except Exception:  # any decoding failure means the same to the user
        raise SettingError(f"{value!r} is not a peer ID") from None
    return value


# -- the settings --------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # section.name in config.toml
    dest: str  # attribute of the parsed command line; also names the flag and the variable
    check: Callable[[object], object]
    default: object
    comment: str
    # For a list: the check of one item (a repeatable flag gives one at a time).
    item_check: Callable[[object], object] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


SETTINGS = (
    list_setting("network.listen", "listen", quic_multiaddr(need_peer_id=False), DEFAULT_LISTEN,
                 "QUIC addresses to listen on; port 0 picks a free port."),
    list_setting("network.bootstrap", "bootstrap", quic_multiaddr(need_peer_id=True), [],
                 "Peers to join the mesh through, each ending in /p2p/<peer id>."),
    Setting("network.connections_high", "connections_high", whole_number(1, MAX_CONNECTIONS), 1000,
            "Above this many open connections, close idle ones ..."),
    Setting("network.connections_low", "connections_low", whole_number(1, MAX_CONNECTIONS), 800,
            "... until this many remain."),
    Setting("network.perf", "perf", flag, False,
            "Serve /perf/1.0.0 (throughput tests) to peers; off by default, as in go-libp2p."),
    Setting("dht.mode", "dht_mode", one_of(DHT_MODES), "server",
            'DHT mode: "server" answers queries (reachable nodes), "client" only asks (behind NAT).'),
    Setting("dht.disjoint_paths", "dht_disjoint_paths", whole_number(1, MAX_DISJOINT_PATHS), 1,
            "S/Kademlia disjoint lookup paths: 1 is off; 3 resists eclipse attacks at about 3x the messages."),
    Setting("metrics.address", "metrics", optional(host_port), None,
            'Serve Prometheus metrics on HOST:PORT, like "[::1]:9100"; "" is off.'),
    Setting("log.level", "log_level", one_of(LOG_LEVELS), "warning",
            "Log on stderr at this level and above: debug, info, warning or error."),
    Setting("log.json", "log_json", flag, False, "Log one JSON object per line instead of text."),
    Setting("chain.genesis", "genesis", optional(path_text), None,
            "Run the chain of this genesis file (`hypermesh genesis new`); a relative path in this file\n"
            'is taken from the data directory. "" runs no chain.'),
    Setting("chain.validator", "validator", flag, False,
            "Sign blocks with the node's identity key whenever the ledger makes it a validator;\n"
            "off: follow the chain (verify every block) and answer queries."),
    Setting("chain.state_sync", "state_sync", flag, False,
            "With no chain data yet, start from a validator's certified snapshot instead of replaying every block."),
    Setting("chain.timeout", "chain_timeout", number(*CHAIN_TIMEOUT_RANGE), 1.0,
            "Seconds a validator waits for a round's proposal (votes wait half; each new round adds half);\n"
            "also how often it re-sends its votes."),
    Setting("chain.snapshot_interval", "snapshot_interval", whole_number(1, MAX_SNAPSHOT_INTERVAL), 1000,
            "Keep a snapshot of the chain state every this many blocks, for nodes that join by state sync."),
    list_setting("capsules.trust", "trust", peer_id, [],
                 "Capsule signers (peer IDs) this node accepts for the tenant, session and ephemeral zones;\n"
                 "added to the trust policy when the node starts, like `hypermesh capsule trust`."),
    Setting("capsules.remote_max_input_bytes", "remote_max_input_bytes", whole_number(1, MAX_REMOTE_INPUT_BYTES),
            REMOTE_RUN.max_input_bytes, "Largest input a peer may send in one /hm/capsule-run/1.0.0 request (bytes)."),
    Setting("capsules.remote_per_peer_running", "remote_per_peer_running", whole_number(1, MAX_REMOTE_CALLS),
            REMOTE_RUN.per_peer_running, "Calls one peer may have running at once on this node ..."),
    Setting("capsules.remote_per_peer_queued", "remote_per_peer_queued", whole_number(0, MAX_REMOTE_CALLS),
            REMOTE_RUN.per_peer_queued, "... and waiting beyond those; more are refused as busy."),
    Setting("capsules.remote_total_running", "remote_total_running", whole_number(1, MAX_REMOTE_CALLS),
            REMOTE_RUN.total_running, "Peers' calls running at once over all peers (each takes a worker thread)."),
)
SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}


@dataclass
class Config:
    """The effective configuration: a value and where it came from, per setting."""

    values: dict[str, object]  # by dest
    sources: dict[str, str]  # by dest: "flag --listen", "env HYPERMESH_LISTEN", "file PATH line N", "default"
    file: Path

    def to_json(self) -> dict:
        return {
            "file": str(self.file),
            "settings": {s.key: {"value": self.values[s.dest], "source": self.sources[s.dest]} for s in SETTINGS},
        }


def load_config(data_dir: Path, flags: Mapping[str, object], environ: Mapping[str, str]) -> Config:
    """The effective configuration for the node of ``data_dir``. ``flags``
    holds only the settings given on the command line, by dest."""
    path = Path(data_dir) / CONFIG_FILE
    from_file = read_config_file(path)
    values, sources = {}, {}
    for setting in SETTINGS:
        if setting.dest in flags:
            value, source = flags[setting.dest], f"flag {setting.flag}"
        elif setting.env in environ:
            value, source = environ[setting.env], f"env {setting.env}"
        elif setting.key in from_file:
            value, source = from_file[setting.key]
        else:
            values[setting.dest], sources[setting.dest] = setting.default, "default"
            continue
        try:
            values[setting.dest] = setting.check(value)
        except SettingError as exc:
            raise ConfigError(f"{setting.key} ({source}): {exc}") from None
        sources[setting.dest] = source
    if values["connections_low"] > values["connections_high"]:
        raise ConfigError(
            f"network.connections_low {values['connections_low']} ({sources['connections_low']}) must not exceed "
            f"network.connections_high {values['connections_high']} ({sources['connections_high']})"
        )
    return Config(values, sources, path)


def read_config_file(path: Path) -> dict[str, tuple[object, str]]:
    """``{key: (value, "file PATH line N")}`` from ``path`` (empty when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    lines = _key_lines(text)
    entries = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path} line {lines.get(section, '?')}: unknown key {section} "
                              f"(settings go in sections: {', '.join(sorted({k.split('.')[0] for k in SETTINGS_BY_KEY}))})")
        for name, value in table.items():
            key = f"{section}.{name}"
            where = f"file {path} line {lines.get(key, '?')}"
            if key not in SETTINGS_BY_KEY:
                raise ConfigError(f"{path} line {lines.get(key, '?')}: unknown key {key} "
                                  f"(known: {', '.join(SETTINGS_BY_KEY)})")
            entries[key] = (value, where)
    return entries


_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """The line each ``section.key`` (and bare top-level key) is set on: enough
    for the simple tables config.toml holds, to point the user at a line."""
    lines, section = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _SECTION.match(line):
            section = match.group(1)
            lines.setdefault(section, number)
        elif match := _ASSIGNMENT.match(line):
            key = f"{section}.{match.group(1)}" if section else match.group(1)
            lines.setdefault(key, number)
    return lines


def config_template() -> str:
    """The commented config.toml that ``hypermesh init`` writes: every setting,
    commented out at its default."""
    out = [
        "# HyperMesh node configuration (docs/NODE-RUNNER.md).",
        "# Each setting is also an environment variable (HYPERMESH_<NAME>, lists comma-separated)",
        "# and a flag of `hypermesh run`; a flag beats the environment, which beats this file.",
        "# Uncomment a line to change it; `hypermesh config show` prints what is in effect.",
    ]
    tables: dict[str, list[Setting]] = {}  # each table once, in the order settings name them
    for setting in SETTINGS:
        tables.setdefault(setting.key.split(".")[0], []).append(setting)
    for table, settings in tables.items():
        out += ["", f"[{table}]"]
        for setting in settings:
            out += [f"# {line}" for line in setting.comment.splitlines()]
            out.append(f"# ({setting.env}, {setting.flag})")
            out.append(f"# {setting.key.split('.')[1]} = {toml_value(setting.default)}")
    return "\n".join(out) + "\n"


def toml_value(value) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return str(value)
