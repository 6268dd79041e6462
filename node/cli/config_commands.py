"""``hypermesh config show``: the effective configuration and where each value came from."""

from __future__ import annotations

from ..config import toml_value
from .common import add_command, show


def _config_lines(document):
    yield f"# {document['file']}"
    for key, entry in document["settings"].items():
        yield f"{key} = {toml_value(entry['value'])}  # {entry['source']}"


def cmd_config_show(args) -> int:
    return show(args, args.config.to_json(), _config_lines)


def register(commands) -> None:
    config_help = "the node's configuration (config.toml, HYPERMESH_* variables, flags)"
    config = commands.add_parser("config", help=config_help, description=config_help).add_subparsers(
        dest="config_command", required=True, metavar="COMMAND")
    add_command(config, "show", cmd_config_show,
                "print the effective value of every setting and where it came from "
                "(flag, environment, config.toml line, default)")
