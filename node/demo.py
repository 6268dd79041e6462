"""``make demo``: a local mesh on [::1], then a chain.

Drives node processes only through the `hypermesh` CLI, which reaches each
node through its control socket. First a devnet of two nodes (bob
bootstraps from alice): bob pings and identifies alice, alice registers a
service that bob resolves through the DHT, and a capsule that alice
publishes is fetched, verified and run by bob, whose signed execution
receipt alice then verifies. Then a chain: four validators start from a
genesis (`hypermesh genesis new`, `hypermesh run --genesis --validator`;
one signs its votes with an ML-DSA-65 key, `hypermesh validator key`) and
commit blocks; two of them contend for a lock; one pays a fifth node, which
bonds that stake and becomes a validator at the next epoch boundary. Prints
what happened; exits 0 on success.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .devnet import open_devnet
from .processes import NodeStartError, run_cli, start_nodes, stop_all

# The chain's validator-set changes take effect every EPOCH blocks: short, so the fifth node joins soon.
EPOCH = 5
STAKE = 10_000
LOCK_TTL = "30"  # seconds of block time
# Short rounds: loopback needs no more, and the demo stays quick.
CHAIN_FLAGS = ["--chain-timeout", "0.5"]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def cli_json(*args: str) -> dict:
    result = run_cli(*args, "--json")
    if result.returncode != 0:
        raise SystemExit(f"demo failed: hypermesh {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def mesh_demo(root: Path) -> None:
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
    step("both nodes shut down cleanly")


def chain_demo(root: Path) -> None:
    names = ["val-0", "val-1", "val-2", "val-3", "erin"]
    dirs = [root / name for name in names]
    peers = [cli_json("init", "--data-dir", str(d))["peer_id"] for d in dirs]
    step(f"a genesis (hypermesh genesis new): {', '.join(names[:4])} are validators with {STAKE} units "
         f"of stake each; epochs of {EPOCH} blocks; val-3 signs its votes with a post-quantum ML-DSA-65 key "
         f"(hypermesh validator key), the others with their Ed25519 node keys")
    ml_dsa_key = root / "val-3-consensus-key.json"
    ml_dsa_key.write_text(json.dumps(cli_json("validator", "key", "--data-dir", str(dirs[3]))))
    entries = [f"{peer}:{STAKE}" for peer in peers[:3]] + [f"{peers[3]}:{STAKE}:ml-dsa-65=@{ml_dsa_key}"]
    made = run_cli("genesis", "new", *[f"--validator={entry}" for entry in entries],
                   *[f"--allocation={peer}:100000" for peer in peers[:4]],
                   "--param", f"epoch_length={EPOCH}", "--chain-id", "demo-chain")
    if made.returncode != 0:
        raise SystemExit(f"demo failed: hypermesh genesis new: {made.stderr.strip()}")
    genesis = root / "genesis.json"
    genesis.write_text(made.stdout)

    step("five nodes on [::1] run it (hypermesh run --genesis genesis.json --validator); "
         "erin is not a validator yet: she follows the chain")
    logs = [open(d / "node.log", "ab") for d in dirs]
    flags = ["--genesis", str(genesis), "--validator", *CHAIN_FLAGS]
    nodes = []
    try:
        try:
            nodes += start_nodes(dirs[:1], extra=flags, stderr=logs[:1])
            nodes += start_nodes(dirs[1:], extra=[*flags, "--bootstrap", nodes[0].addr()], stderr=logs[1:])
        except NodeStartError as exc:
            raise SystemExit(f"demo failed: a chain node did not start: {exc}") from None
        val0, val1, val2, erin = dirs[0], dirs[1], dirs[2], dirs[4]

        step("blocks commit, and every node holds the same ones (hypermesh chain block 3 on each)")
        status = cli_json("chain", "wait", "--height", "3", "--data-dir", str(val0))
        print(f"chain {status['chain_id']} at height {status['height']}, {status['validators']} validators")
        blocks = [cli_json("chain", "block", "3", "--data-dir", str(d)) for d in dirs]
        for name, block in zip(names, blocks):
            print(f"{name:6} block 3 = {block['block_id'][:16]}…, certified by {block['certificate']['signatures']} "
                  f"of 4 validators")
        if len({block["block_id"] for block in blocks}) != 1:
            raise SystemExit("demo failed: the nodes hold different blocks at height 3")

        step("val-1 and val-2 contend for the lock 'printer' (hypermesh lock acquire|show|release): "
             "the chain grants it to one at a time, with a fencing token that only grows")
        first = cli_json("lock", "acquire", "printer", "--ttl", LOCK_TTL, "--data-dir", str(val1))
        print(f"val-1 acquires: {first['outcome']} at height {first['height']}, token {first['token']}, "
              f"for {LOCK_TTL} s of block time")
        refused = run_cli("lock", "acquire", "printer", "--ttl", LOCK_TTL, "--data-dir", str(val2))
        print(f"val-2 acquires: {refused.stderr.strip()}")
        # val-2's node has decided its refusal, so its last certified state (a block behind) has val-1's lease.
        shown = cli_json("lock", "show", "printer", "--data-dir", str(val2))
        holder = names[peers.index(shown["holder"])] if shown["held"] else "nobody"
        print(f"val-2 reads who holds it, checked against its proof: at height {shown['height']}, {holder} "
              f"(token {shown['token']})")
        released = cli_json("lock", "release", "printer", "--data-dir", str(val1))
        print(f"val-1 releases: {released['outcome']} at height {released['height']}")
        second = cli_json("lock", "acquire", "printer", "--ttl", LOCK_TTL, "--data-dir", str(val2))
        print(f"val-2 acquires again: {second['outcome']} at height {second['height']}, token {second['token']}")
        if refused.returncode != 1 or holder != "val-1" or not second["token"] > first["token"]:
            raise SystemExit("demo failed: the lock was not granted to one node at a time")

        step("val-0 pays erin 20000 units (hypermesh transfer)")
        paid = cli_json("transfer", peers[4], "20000", "--data-dir", str(val0))
        # erin's own node reads her balance once it has executed that block (a follower may be a few blocks behind).
        cli_json("chain", "wait", "--height", str(paid["height"]), "--data-dir", str(erin))
        account = cli_json("account", "show", "--data-dir", str(erin))
        print(f"committed at height {paid['height']}; erin's balance: {account['balance']} units")

        step(f"erin bonds {STAKE} units as a validator (hypermesh stake bond) and joins at the next epoch boundary")
        bonded = cli_json("stake", "bond", str(STAKE), "--data-dir", str(erin))
        boundary = -(-bonded["height"] // EPOCH) * EPOCH
        print(f"bond committed at height {bonded['height']}; the validator set changes after block {boundary}")
        status = cli_json("chain", "wait", "--height", str(boundary + 2), "--data-dir", str(erin))
        validators = cli_json("validators", "--data-dir", str(erin))["validators"]
        for validator in validators:
            print(f"{names[peers.index(validator['peer_id'])]:6} {validator['peer_id']}  power {validator['power']}, "
                  f"signs with {validator['scheme']}")
        if not status["validator"] or peers[4] not in {validator["peer_id"] for validator in validators}:
            raise SystemExit("demo failed: erin did not become a validator")
        block = cli_json("chain", "block", str(boundary + 2), "--data-dir", str(erin))
        print(f"erin is a validator from block {boundary + 1} on: block {boundary + 2} is certified by "
              f"{block['certificate']['signatures']} of the 5 (a quorum: more than two thirds of the power)")
    finally:
        stop_all(nodes)
        for log in logs:
            log.close()
    step("the five chain nodes shut down cleanly")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hypermesh-demo-") as tmp:
        root = Path(tmp)
        mesh_demo(root)
        chain_demo(root / "chain")
        step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
