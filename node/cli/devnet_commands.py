"""``hypermesh devnet``: a local mesh of real nodes, until Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from ..devnet import open_devnet
from .common import EXIT_OK, CommandError, add_command, print_json, whole_number

MAX_DEVNET_NODES = 64
# How often we look whether a node died while we wait for Ctrl-C.
WATCH_INTERVAL = 1.0


def _devnet_lines(devnet):
    yield f"devnet of {len(devnet.nodes)} nodes in {devnet.root}; Ctrl-C stops them all"
    for node in devnet.nodes:
        yield f"{node.data_dir.name}  {node.addr()}  --data-dir {node.data_dir}"


def cmd_devnet(args) -> int:
    with open_devnet(args.nodes, args.dir) as devnet, _stop_requests() as stop:
        # The handlers are in place before anyone can read where the nodes are
        # (and so before anyone could ask us to stop them).
        if args.json:
            print_json(devnet.to_json())
        else:
            for line in _devnet_lines(devnet):
                print(line, flush=True)
        _wait_for_stop(devnet, stop)
    if not args.json:
        print(f"stopped all {len(devnet.nodes)} nodes")
    return EXIT_OK


@contextlib.contextmanager
def _stop_requests():
    """An event set by SIGINT or SIGTERM while the block runs."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_for_stop(devnet, stop: threading.Event) -> None:
    """Until ``stop`` is set; a node that dies meanwhile is a failure."""
    while not stop.wait(WATCH_INTERVAL):
        for node in devnet.nodes:
            if node.process.poll() is not None:
                raise CommandError(f"the node in {node.data_dir} exited with status {node.process.returncode}; "
                                   f"see {node.data_dir / 'node.log'}")


def register(commands) -> None:
    devnet = add_command(commands, "devnet", cmd_devnet,
                         "run a local mesh of N node processes on [::1], each bootstrapping from the first, "
                         "until Ctrl-C")
    devnet.add_argument("--nodes", type=whole_number(1, MAX_DEVNET_NODES), default=4, metavar="N",
                        help=f"how many nodes, 1 to {MAX_DEVNET_NODES} (default 4)")
    devnet.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="keep the nodes' data directories (DIR/node-0 …) there, to reuse their identities "
                             "(default: a temporary directory, removed at the end)")
