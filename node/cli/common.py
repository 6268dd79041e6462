"""What every ``hypermesh`` command shares: the failure type, output helpers,
value types for options, and how a command reaches its node."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import trio

from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity, key_path, load_identity

from .. import control, operations
from ..config import LOG_LEVELS, SETTINGS_BY_KEY, SettingError, check_range, flag, one_of, whole_number

# A short-lived node (a CLI command with no running node) listens only so
# that the peers it asks can answer it.
SHORT_LIVED_LISTEN = ["/ip6/::/udp/0/quic-v1", "/ip4/0.0.0.0/udp/0/quic-v1"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so that
    an ``error:`` message stays one line whatever the user typed."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def show(args, result, lines) -> int:
    """``result`` as one JSON line with ``--json``, else as the text ``lines(result)``."""
    if args.json:
        print_json(result)
    else:
        for line in lines(result):
            print(line)
    return EXIT_OK


def key_value_lines(result):
    for key, value in result.items():
        yield f"{key}: {value}"


# -- the parser -----------------------------------------------------------------

JSON_HELP = "print one JSON object on one line on stdout"
DEFAULT_LOG_LEVEL = SETTINGS_BY_KEY["log.level"].default


class BadValue(CommandError):
    """An option's value was refused: one ``error:`` line, exit status 1."""


GLOBAL_OPTIONS = {
    "--data-dir": dict(type=Path, metavar="DIR",
                       help="the node's directory: identity, settings, records, control socket "
                       "(default $HYPERMESH_DATA_DIR, else ~/.hypermesh)"),
    "--log-level": dict(type=one_of(LOG_LEVELS), metavar="LEVEL",
                        help=f"log on stderr at this level and above: {', '.join(LOG_LEVELS)} (default {DEFAULT_LOG_LEVEL})"),
    "--log-json": dict(action="store_true", help="log one JSON object per line on stderr"),
}


class Parser(argparse.ArgumentParser):
    """The parser of ``hypermesh`` and of each of its (sub)commands.

    Each accepts the global options, so they may come before or after the
    command; they are left unset unless given (``parse_command_line`` fills in
    the defaults), so a subcommand never overwrites what came before it. A
    refused value raises :class:`BadValue` (exit 1), naming the option; a
    command line of the wrong shape (unknown option, missing argument) is one
    ``error:`` line and exit status 2.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, options in GLOBAL_OPTIONS.items():
            try:
                self.add_argument(name, default=argparse.SUPPRESS, **options)
            except argparse.ArgumentError:
                pass  # a parent parser (capsule …) already has it

    def add_argument(self, *names, **kwargs):
        if kwargs.get("type") is not None or kwargs.get("choices") is not None:
            label = next((name for name in names if name.startswith("--")), None) or kwargs.get("dest") or names[0]
            kwargs["type"] = _refusing(label, kwargs.get("type"), kwargs.get("choices"))
        return super().add_argument(*names, **kwargs)

    def add_subparsers(self, **kwargs):
        """Also kept as ``self.subcommands``, so the command tree can be walked."""
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def explicit_global_options(argv: list[str]) -> dict:
    """The global options given anywhere on the command line (a parent parser's
    default for one, such as capsule's ``--data-dir``, must not win over them)."""
    scanner = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name, options in GLOBAL_OPTIONS.items():
        scanner.add_argument(name, default=argparse.SUPPRESS, **options)
    given, _ = scanner.parse_known_args(argv)
    return vars(given)


def _refusing(label: str, convert, choices):
    """``convert`` raising :class:`BadValue` (which argparse lets through) instead
    of argparse's own multi-line usage error."""

    def converted(text: str):
        try:
            value = convert(text) if convert is not None else text
        except (argparse.ArgumentTypeError, SettingError) as exc:
            raise BadValue(f"{label}: {exc}") from None
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number"}.get(convert, "a valid value")
            raise BadValue(f"{label}: {text!r} is not {kind}") from None
        if choices is not None and value not in choices:
            raise BadValue(f"{label}: {text!r} is not one of {', '.join(map(str, choices))}")
        return value

    converted.__name__ = getattr(convert, "__name__", "text")
    return converted


# -- adding commands and options ------------------------------------------------


def add_command(group, name: str, handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand with ``--json`` (the global options come with every :class:`Parser`)."""
    sub = group.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--json", action="store_true", help=JSON_HELP)
    sub.set_defaults(handler=handler)
    return sub


def add_setting_option(parser: argparse.ArgumentParser, key: str, metavar: str, help_text: str) -> None:
    """A flag for the setting ``key``; unset unless given, so that the
    environment and config.toml can supply it (see node/config.py)."""
    setting = SETTINGS_BY_KEY[key]
    default = setting.default
    shown = "off" if default is None else (" and ".join(default) or "none") if isinstance(default, list) else default
    help_text = f"{help_text} (default {shown}; {key} in config.toml, {setting.env})"
    if setting.item_check is not None:
        parser.add_argument(setting.flag, dest=setting.dest, action="append", type=setting.item_check,
                            default=None, metavar=metavar, help=help_text)
    elif setting.check is flag:
        parser.add_argument(setting.flag, dest=setting.dest, action="store_const", const=True, default=None,
                            help=help_text)
    else:
        parser.add_argument(setting.flag, dest=setting.dest, type=setting.check, default=None, metavar=metavar,
                            help=help_text)


def add_bootstrap_option(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_setting_option(sub, "network.bootstrap", "MADDR",
                       "when no node runs in --data-dir: peer to join for this command (repeatable)")
    return sub



# -- option value types ----------------------------------------------------------


def byte_count(text: str) -> int:
    """``100``, ``64k``, ``100M``, ``1.5GiB``: bytes, in powers of 1024."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    try:
        value = float(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (like 512, 64k, 100M, 1G)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (like 512, 64k, 100M, 1G)")
    return int(value)


def seconds(minimum: float = 0.0, maximum: float | None = None):
    """A converter for a duration in seconds within ``minimum..maximum``."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
        check_range(value, minimum, maximum)
        return value

    return convert


positive = whole_number(minimum=1)


# -- reaching the node ------------------------------------------------------------


def client_identity(data_dir: Path) -> Identity:
    """The node's identity when it has one; a throwaway one for a pure client."""
    if key_path(data_dir).exists():
        return load_identity(data_dir)
    return Identity.generate()


class _HostOnly:
    def __init__(self, host):
        self.host = host


def no_running_node(args, alternative: str = "") -> CommandError:
    return CommandError(f"no node is running in {args.data_dir}: start one with "
                        f"`hypermesh run --data-dir {args.data_dir}`{alternative}")


async def on_node(args, command: str, on_progress=None, short_lived: bool = True, why: str = "", **params):
    """Run an operation on the node of ``--data-dir``: through its control
    socket when it is running, else (``short_lived``) on a short-lived node with
    its identity (a throwaway one for transport-only commands on an
    uninitialised dir). Work that must outlive the command (records to keep
    published) is not ``short_lived``."""
    from hypermesh.dht.kademlia import Mode

    if control.node_is_running(args.data_dir):
        try:
            return await control.call(args.data_dir, command, on_progress=on_progress, **params)
        except control.ControlError as exc:
            if "no node is running" not in str(exc):
                raise CommandError(str(exc)) from None
    if not short_lived:
        raise no_running_node(args, f"; {why}" if why else "")
    operation = operations.OPERATIONS[command]
    if command in operations.TRANSPORT_ONLY:
        async with open_host(client_identity(args.data_dir)) as host:
            return await operation(_HostOnly(host), **params)
    bootstrap = getattr(args, "bootstrap", None) or []
    if not bootstrap:
        raise no_running_node(args, ", or give --bootstrap MADDR")
    from ..node import open_node

    # A DHT client asks with any key: no identity is made for a lookup.
    async with open_node(client_identity(args.data_dir), args.data_dir, SHORT_LIVED_LISTEN, bootstrap,
                         dht_mode=Mode.CLIENT) as node:
        for addr in bootstrap:
            with trio.move_on_after(operations.DIAL_TIMEOUT) as dial:
                await node.host.connect(addr)
            if dial.cancelled_caught:
                raise CommandError(f"bootstrap peer {addr} did not answer within {operations.DIAL_TIMEOUT:g} s")
        await node.discovery.service.bootstrap()
        if on_progress is not None:
            params["progress"] = on_progress
        return await operation(node, **params)


def node_command(command: str, lines, progress_bar: bool = False, short_lived: bool = True, why: str = "",
                 **fixed):
    """A CLI handler running ``command`` on the node, with arguments from args
    (``why`` it needs a running node when it is not ``short_lived``)."""

    def handler(args) -> int:
        params = {name: getattr(args, attribute) for name, attribute in fixed.items()}
        bar = ProgressBar(sys.stderr) if progress_bar and not args.json and sys.stderr.isatty() else None

        async def run():
            return await on_node(args, command, on_progress=bar.update if bar else None,
                                 short_lived=short_lived, why=why, **params)

        try:
            result = trio.run(run)
        finally:
            if bar is not None:
                bar.finish()
        return show(args, result, lines)

    return handler


class ProgressBar:
    """``[#####.....]  45%  1.2 / 2.6 MB`` redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, stream):
        self._stream = stream
        self._drawn = False

    def update(self, progress: dict) -> None:
        done, total = progress.get("done", 0), max(1, progress.get("total", 1))
        filled = min(self.WIDTH, self.WIDTH * done // total)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * done // total:3d}%  "
            f"{done / 1e6:.1f} / {total / 1e6:.1f} MB"
        )
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
