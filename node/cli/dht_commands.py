"""``hypermesh dht …`` and ``hypermesh service …``: records in the DHT."""

from __future__ import annotations

from .common import add_bootstrap_option, add_command, key_value_lines, node_command, positive


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
    dht = commands.add_parser("dht", help="provider records in the DHT").add_subparsers(
        dest="dht_command", required=True, metavar="COMMAND")
    wait = add_command(dht, "wait", node_command("dht.wait", key_value_lines, peers="peers", timeout="timeout"),
                       "wait until the running node's routing table holds --peers peers")
    wait.add_argument("--peers", type=positive, default=1)
    wait.add_argument("--timeout", type=float, default=10.0)
    provide = add_bootstrap_option(add_command(dht, "provide", node_command("dht.provide", key_value_lines, key="key"),
                                               "announce this node as a provider of KEY (a CID, or any string)"))
    provide.add_argument("key")
    find = add_bootstrap_option(add_command(dht, "find-providers",
                                            node_command("dht.find_providers", _providers_lines, key="key"),
                                            "find the providers of KEY"))
    find.add_argument("key")

    service = commands.add_parser("service", help="named services in the DHT").add_subparsers(
        dest="service_command", required=True, metavar="COMMAND")
    register_service = add_bootstrap_option(add_command(service, "register", node_command(
        "service.register", key_value_lines, name="name", protocol="protocol", weight="weight"),
        "announce that this node offers service NAME"))
    register_service.add_argument("name")
    register_service.add_argument("--protocol", required=True, help="protocol ID clients should open")
    register_service.add_argument("--weight", type=int, default=100)
    resolve = add_bootstrap_option(add_command(service, "resolve",
                                               node_command("service.resolve", _instances_lines, name="name"),
                                               "find the instances of service NAME"))
    resolve.add_argument("name")
