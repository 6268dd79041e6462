"""``make demo``: a local mesh on [::1].

Starts a devnet of two node processes (bob bootstraps from alice) and
drives them only through the `hypermesh` CLI, which reaches each node
through its control socket: bob pings and identifies alice, alice registers
a service that bob resolves through the DHT, and a capsule that alice
publishes is fetched, verified and run by bob, whose signed execution
receipt alice then verifies. Prints what happened; exits 0 on success.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .devnet import open_devnet
from .processes import run_cli


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
        step("starting a devnet of two nodes on [::1] (hypermesh devnet --nodes 2); bob bootstraps from alice")
        with open_devnet(2, root / "devnet") as devnet:
            alice, bob = devnet.nodes
            print(f"alice {alice.peer_id} at {alice.addr()}")
            print(f"bob   {bob.peer_id} at {bob.addr()}")

            step("bob pings alice")
            ping = cli_json("ping", alice.addr(), "--count", "5", "--data-dir", str(bob.data_dir))
            how = f"connected in {ping['connect_ms']:.2f} ms" if ping["new_connection"] else "over bob's bootstrap connection"
            print(f"{how}; round trips (ms): {ping['rtts_ms']}")

            step("bob identifies alice")
            record = cli_json("id", alice.addr(), "--data-dir", str(bob.data_dir))
            print(f"agent {record['agent_version']}, protocols {', '.join(record['protocols'])}")
            print(f"alice sees bob at {record['observed_addr']}")

            step("bob's peers")
            peers = cli_json("peers", "--data-dir", str(bob.data_dir))["peers"]
            for peer in peers:
                print(f"{peer['peer_id']} via {', '.join(peer['addrs'])}")
            if alice.peer_id not in {peer["peer_id"] for peer in peers}:
                raise SystemExit("demo failed: alice is not among bob's peers")

            step("alice registers service 'echo'; bob resolves it through the DHT")
            cli_json("service", "register", "echo", "--protocol", "/hm/echo/1.0.0", "--data-dir", str(alice.data_dir))
            resolved = cli_json("service", "resolve", "echo", "--data-dir", str(bob.data_dir))
            for instance in resolved["instances"]:
                print(f"echo at {instance['peer_id']} ({instance['protocol']}) via {', '.join(instance['addrs'])}")
            if alice.peer_id not in {instance["peer_id"] for instance in resolved["instances"]}:
                raise SystemExit("demo failed: bob did not find alice's service")
            again = cli_json("service", "resolve", "echo", "--data-dir", str(bob.data_dir))
            print(f"resolved again from bob's cache in {again['resolve_ms']:.3f} ms")

            step("alice builds, signs and publishes a capsule; bob fetches it by CID and runs it")
            source = root / "echo"
            for args in (("new", "demo.echo", "--dir", str(root)), ("build", str(source)), ("sign", str(source))):
                cli_json("capsule", *args, "--data-dir", str(alice.data_dir))
            cid = cli_json("capsule", "publish", str(source), "--data-dir", str(alice.data_dir))["cid"]
            print(f"published {cid}")
            cli_json("capsule", "trust", alice.peer_id, "--data-dir", str(bob.data_dir))
            fetched = cli_json("capsule", "fetch", cid, "--data-dir", str(bob.data_dir))
            print(f"bob fetched and admitted {fetched['name']} {fetched['version']} ({fetched['state']})")
            ran = cli_json("capsule", "run", cid, "reverse", "--input", "hello mesh", "--data-dir", str(bob.data_dir))
            print(f"bob ran reverse('hello mesh') = {ran['output']!r}, fuel {ran['receipt']['fuel_used']}, "
                  f"{ran['receipt']['duration_us']} µs")
            receipt_file = root / "execution-receipt.json"
            receipt_file.write_text(json.dumps(ran["receipt"]))
            checked = cli_json("capsule", "verify-receipt", str(receipt_file), "--data-dir", str(alice.data_dir))
            print(f"alice checks bob's signed receipt: {'valid' if checked['valid'] else 'INVALID'}")
            if not checked["valid"]:
                raise SystemExit("demo failed: bob's receipt did not verify")

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
