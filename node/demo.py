"""``make demo``: a local mesh on [::1].

Starts two nodes as separate processes, has the second ping and identify
the first through its control socket (exactly what `hypermesh ping
--data-dir …` does), prints what happened and exits 0 on success.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .processes import run_cli, start_node


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def cli_json(*args: str) -> dict:
    result = run_cli(*args, "--json")
    if result.returncode != 0:
        raise SystemExit(f"demo failed: hypermesh {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hypermesh-demo-") as tmp:
        root = Path(tmp)
        step("starting two nodes on [::1]")
        with start_node(root / "alice") as alice, start_node(root / "bob") as bob:
            print(f"alice {alice.peer_id} at {alice.addr()}")
            print(f"bob   {bob.peer_id} at {bob.addr()}")

            step("bob pings alice")
            ping = cli_json("ping", alice.addr(), "--count", "5", "--data-dir", str(bob.data_dir))
            print(f"connected in {ping['connect_ms']:.2f} ms; round trips (ms): {ping['rtts_ms']}")

            step("bob identifies alice")
            record = cli_json("id", alice.addr(), "--data-dir", str(bob.data_dir))
            print(f"agent {record['agent_version']}, protocols {', '.join(record['protocols'])}")
            print(f"alice sees bob at {record['observed_addr']}")

            step("bob's peers")
            peers = cli_json("peers", "--data-dir", str(bob.data_dir))
            for peer in peers:
                print(f"{peer['peer_id']} via {', '.join(peer['addrs'])}")
            if alice.peer_id not in {peer["peer_id"] for peer in peers}:
                raise SystemExit("demo failed: alice is not among bob's peers")

            step("a wrong /p2p/ ID is refused")
            wrong = alice.addr().rsplit("/p2p/", 1)[0] + "/p2p/" + bob.peer_id
            refused = run_cli("ping", wrong, "--data-dir", str(bob.data_dir))
            print(refused.stderr.strip())
            if refused.returncode == 0:
                raise SystemExit("demo failed: a wrong peer ID was accepted")
        step("done: both nodes shut down cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
