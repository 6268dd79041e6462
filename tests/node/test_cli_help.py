"""Every command and option explains itself in --help; --version says what this build is."""

import json
import re

from hypermesh.node.cli import build_parser
from hypermesh.node.cli.common import GLOBAL_OPTIONS, JSON_HELP
from hypermesh.node.processes import run_cli

# An option or positional line in a help text: two spaces, then the invocation.
INVOCATION = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")


def commands(parser, path=("hypermesh",)):
    yield path, parser
    subcommands = getattr(parser, "subcommands", None)
    if subcommands is not None:
        for name, child in subcommands.choices.items():
            yield from commands(child, (*path, name))


def undocumented_arguments(help_text: str) -> list[str]:
    """Invocations (``--count N``, ``maddr``) with no description after them."""
    lines = help_text.splitlines()
    missing = []
    for index, line in enumerate(lines):
        match = INVOCATION.match(line)
        if not match or line.startswith("  -h, --help") or line.rstrip().endswith(":"):
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        described_below = len(following) - len(following.lstrip()) > 2
        if match.group(2) is None and not described_below:
            missing.append(match.group(1))
    return missing


def test_every_command_and_option_has_a_description():
    missing = []
    for path, parser in commands(build_parser()):
        name = " ".join(path)
        if not parser.description:
            missing.append(f"{name}: no description")
        missing += [f"{name}: {argument}" for argument in undocumented_arguments(parser.format_help())]
    assert missing == []


def test_shared_options_have_one_wording():
    data_dir = "--data-dir DIR " + GLOBAL_OPTIONS["--data-dir"]["help"]
    for path, parser in commands(build_parser()):
        text = " ".join(parser.format_help().split())  # as one line, whatever the wrapping
        assert data_dir in text, path
        if getattr(parser, "subcommands", None) is None:  # a command, not a group
            assert f"--json {JSON_HELP}" in text, path


def test_the_walk_sees_every_command():
    names = {" ".join(path[1:]) for path, _ in commands(build_parser())}
    assert {"run", "ping", "dht wait", "service register", "capsule run", "capsule fetch"} <= names
    assert {"genesis new", "chain status", "chain block", "chain wait", "account show", "transfer", "stake bond",
            "stake unbond", "escrow open", "escrow release", "escrow refund", "validators", "lock acquire",
            "lock renew", "lock release", "lock show"} <= names


def test_version_names_the_build_its_libraries_and_protocols():
    text = run_cli("--version")
    assert text.returncode == 0 and text.stdout.startswith("hypermesh 0.")
    result = run_cli("--version", "--json")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    info = json.loads(result.stdout)
    assert info["aioquic"] and info["wasmtime"] and info["hypermesh"]
    assert {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/ipfs/kad/1.0.0"} <= set(info["protocols"])
