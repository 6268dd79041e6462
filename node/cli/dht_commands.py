"""``hypermesh dht …`` and ``hypermesh service …``: records in the DHT."""

from __future__ import annotations

from hypermesh.dht.records import MAX_SERVICE_WEIGHT

from .. import control
from .common import add_bootstrap_option, add_command, key_value_lines, node_command, positive, seconds, whole_number

# The control socket gives a request this long; a wait must end before it.
MAX_WAIT_SECONDS = control.REQUEST_TIMEOUT - 10
KEY_HELP = "a CID, or any string (then the CIDv1, raw, of its UTF-8 bytes)"


def _providers_lines(result):
    yield f"{result['cid']}: {len(result['providers'])} provider(s)"
    for provider in result["providers"]:
        yield f"  {provider['peer_id']}  {' '.join(provider['addrs'])}"


def _instances_lines(result):
    if not result["instances"]:
        yield f"no instances of {result['name']}"
    for instance in result["instances"]:
        yield f"{instance['peer_id']}  {instance['protocol']}  weight {instance['weight']}  {' '.join(instance['addrs'])}"


def register(commands) -> None:
    dht = commands.add_parser("dht", help="provider records in the DHT",
                              description="provider records in the DHT").add_subparsers(
        dest="dht_command", required=True, metavar="COMMAND")
    wait = add_command(dht, "wait", node_command("dht.wait", key_value_lines, short_lived=False,
                                                 peers="peers", timeout="timeout"),
                       "wait until the running node's routing table holds --peers peers")
    wait.add_argument("--peers", type=positive, default=1, metavar="N", help="peers to wait for (default 1)")
    wait.add_argument("--timeout", type=seconds(0, MAX_WAIT_SECONDS), default=10.0, metavar="SECONDS",
                      help=f"give up after this long, 0 to {MAX_WAIT_SECONDS:g} (default 10)")
    provide = add_command(dht, "provide", node_command(
        "dht.provide", key_value_lines, short_lived=False,
        why="it keeps the provider record published", key="key"),
        "announce the running node as a provider of KEY")
    provide.add_argument("key", help=KEY_HELP)
    find = add_bootstrap_option(add_command(dht, "find-providers",
                                            node_command("dht.find_providers", _providers_lines, key="key"),
                                            "find the providers of KEY"))
    find.add_argument("key", help=KEY_HELP)

    service = commands.add_parser("service", help="named services in the DHT",
                                  description="named services in the DHT").add_subparsers(
        dest="service_command", required=True, metavar="COMMAND")
    register_service = add_command(service, "register", node_command(
        "service.register", key_value_lines, short_lived=False,
        why="the service record points at it and it keeps the record published",
        name="name", protocol="protocol", weight="weight"),
        "announce that the running node offers service NAME")
    register_service.add_argument("name", help="the service's name, as clients resolve it")
    register_service.add_argument("--protocol", required=True, metavar="PROTOCOL_ID",
                                  help="protocol ID clients should open, e.g. /hm/echo/1.0.0")
    register_service.add_argument("--weight", type=whole_number(0, MAX_SERVICE_WEIGHT), default=100, metavar="N",
                                  help=f"share of clients relative to other instances, 0 to {MAX_SERVICE_WEIGHT} "
                                       "(default 100)")
    resolve = add_bootstrap_option(add_command(service, "resolve",
                                               node_command("service.resolve", _instances_lines, name="name"),
                                               "find the instances of service NAME"))
    resolve.add_argument("name", help="the service's name")
