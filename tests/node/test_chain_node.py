"""The chain in real `hypermesh run` processes on [::1]: a genesis, four validators (two of them signing with
ML-DSA-65 keys made by `hypermesh validator key`), a follower that joins by state sync, and the chain commands
through the running node's control socket."""

import functools
import json
import signal

import pytest
import trio

from cli_testkit import hm
from hypermesh.consensus.genesis import account_of
from hypermesh.consensus.signing import ConsensusKey, Scheme
from hypermesh.consensus.ledger_query import verify_answer
from hypermesh.consensus.locks import Lease, lock_entry_key
from hypermesh.consensus.validators import Validator, ValidatorSet
from hypermesh.node import control
from hypermesh.node.cli import main
from hypermesh.transport.identity import init_identity
from hypermesh.node.processes import start_node, start_nodes, stop_all

# Four validator processes (and a follower) share two cores with the rest of the suite: starting them and
# waiting for their blocks takes tens of seconds when the machine is busy.
pytestmark = pytest.mark.timeout(300)
STARTUP = 150
# A command's process imports the whole node before it asks (tens of seconds on a busy machine).
CLI_TIMEOUT = 150
VALIDATORS = 4
# Validators 2 and 3 sign with ML-DSA-65 keys (3 is the one killed with SIGKILL and restarted).
ML_DSA_VALIDATORS = (2, 3)
ALLOCATION = 100_000
# Short rounds and frequent snapshots: a test chain moves fast and a follower finds a snapshot soon.
# Bounds a wait for the chain: two cores shared with other tests; a restarted node replays hundreds of blocks.
WAIT = 120
PEER = "12D3KooWAdB5DkwdBVZUbP9RonHRVwT6yxu6mBn1tZG3vSowry2Z"
CHAIN_FLAGS = ["--chain-timeout", "0.5", "--snapshot-interval", "5"]


def hm_json(*args, cwd):
    result = hm(*args, "--json", cwd=cwd, timeout=CLI_TIMEOUT)
    assert result.stdout.count("\n") == 1, result.stdout
    return json.loads(result.stdout)


def ask(node, command, **params):
    """A control-socket request to a running node, as the CLI makes it (without a process's start-up)."""
    return trio.run(functools.partial(control.call, node.data_dir, command, **params))


def ask_refused(node, command, **params) -> str:
    with pytest.raises(control.ControlError) as refusal:
        ask(node, command, **params)
    return str(refusal.value)


def refused(*args, cwd) -> str:
    """The one ``error:`` line of a command that must fail with exit status 1."""
    result = hm(*args, cwd=cwd, check=False, timeout=CLI_TIMEOUT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Four validators of one genesis (each with an allocation), the first the others' bootstrap peer."""
    root = tmp_path_factory.mktemp("chain")
    dirs = [root / f"v{i}" for i in range(VALIDATORS)]
    peers = [str(init_identity(d)[0].peer_id) for d in dirs]
    keys = {}
    for i in ML_DSA_VALIDATORS:
        keys[i] = root / f"v{i}-key.json"
        keys[i].write_text(hm("validator", "key", "--data-dir", dirs[i], "--json", cwd=root).stdout)
    entries = [f"{peer}::ml-dsa-65=@{keys[i]}" if i in keys else peer for i, peer in enumerate(peers)]
    genesis = hm("genesis", "new", *[f"--validator={entry}" for entry in entries],
                 *[f"--allocation={peer}:{ALLOCATION}" for peer in peers], "--chain-id", "test-chain", cwd=root)
    (root / "genesis.json").write_text(genesis.stdout)
    flags = ["--genesis", str(root / "genesis.json"), "--validator", *CHAIN_FLAGS]
    (root / "flags.json").write_text(json.dumps(flags))
    first = start_node(dirs[0], extra=flags, startup_timeout=STARTUP)
    try:
        others = start_nodes(dirs[1:], extra=[*flags, "--bootstrap", first.addr()], startup_timeout=STARTUP)
    except BaseException:
        first.stop()
        raise
    nodes = [first, *others]
    try:
        yield root, nodes
    finally:
        stop_all(nodes)


def test_four_validators_from_a_genesis_commit_the_same_blocks(chain):
    root, nodes = chain
    for node in nodes:
        ask(node, "chain.wait", height=3, timeout=WAIT)
    status = hm_json("chain", "status", "--data-dir", nodes[1].data_dir, cwd=root)
    assert set(status) == {"chain_id", "height", "state_root", "last_block_id", "round", "validator", "signing",
                           "validators", "total_power", "mempool", "origin"}
    assert status["chain_id"] == "test-chain" and status["height"] >= 3 and status["validator"] is True
    assert (status["validators"], status["total_power"], status["origin"]) == (4, 40_000, "genesis")
    blocks = [ask(node, "chain.block", height=2) for node in (nodes[0], nodes[3])]
    assert blocks[0]["block_id"] == blocks[1]["block_id"] and blocks[0]["certificate"]["signatures"] >= 3
    validators = ask(nodes[2], "chain.validators")
    assert sorted(v["peer_id"] for v in validators["validators"]) == sorted(node.peer_id for node in nodes)
    assert all(v["power"] == 10_000 for v in validators["validators"])
    schemes = {v["peer_id"]: v["scheme"] for v in validators["validators"]}
    assert schemes == {node.peer_id: "ml-dsa-65" if i in ML_DSA_VALIDATORS else "ed25519"
                       for i, node in enumerate(nodes)}
    # Block 3 carries block 2's certificate: any quorum (3 of 4) holds an ML-DSA-65 signature, 3,309 bytes.
    assert ask(nodes[0], "chain.block", height=3)["size"] > Scheme.ML_DSA_65.signature_size


def test_a_transfer_shows_in_the_balances_on_another_node(chain):
    root, nodes = chain
    sent = hm_json("transfer", nodes[1].peer_id, 1_234, "--timeout", WAIT, "--data-dir", nodes[0].data_dir, cwd=root)
    assert sent["height"] >= 1 and sent["nonce"] == 0 and sent["to"] == nodes[1].peer_id
    ask(nodes[3], "chain.wait", height=sent["height"], timeout=WAIT)
    receiver = hm_json("account", "show", nodes[1].peer_id, "--data-dir", nodes[3].data_dir, cwd=root)
    sender = ask(nodes[3], "chain.account", peer=nodes[0].peer_id)
    assert receiver["balance"] == ALLOCATION + 1_234 and sender["balance"] == ALLOCATION - 1_234
    assert sender["nonce"] == 1 and sender["bonded"] == {"validator": 10_000, "provider": 0}
    own = ask(nodes[1], "chain.account")
    assert own["peer_id"] == nodes[1].peer_id and own["validator_power"] == 10_000


def test_the_ledger_refusals_name_their_reason_and_move_nothing(chain):
    root, nodes = chain
    node = nodes[2]
    line = refused("transfer", nodes[0].peer_id, 10 * ALLOCATION, "--data-dir", node.data_dir, cwd=root)
    assert line.startswith("error: refused: insufficient funds: needs 1000000")
    assert "below the minimum" in ask_refused(node, "chain.bond", amount=5, role="provider")
    assert "insufficient bond" in ask_refused(node, "chain.unbond", amount=20_000)
    assert "amount out of range" in ask_refused(node, "chain.transfer", to=nodes[0].peer_id, amount=1 << 63)
    assert "not a provider" in ask_refused(node, "chain.escrow_open", provider=nodes[0].peer_id, amount=5,
                                           deadline=10_000, task="job")
    assert "unknown escrow" in ask_refused(node, "chain.escrow_refund", escrow_id="ab" * 32)
    assert "not an account" in ask_refused(node, "chain.account", peer="nobody")
    assert "holds no block 100000000" in ask_refused(node, "chain.block", height=100_000_000)
    assert "has no ML-DSA-65 key" in ask_refused(nodes[0], "chain.bond", amount=10_000, consensus_key=True)
    assert "only a validator bond" in ask_refused(node, "chain.bond", amount=10_000, role="provider",
                                                  consensus_key=True)
    account = ask(node, "chain.account")
    assert account["balance"] == ALLOCATION and account["nonce"] == 0  # nothing refused moved a unit


def test_two_nodes_contend_for_a_lock_and_its_proof_checks_offline(chain):
    root, nodes = chain
    first = hm_json("lock", "acquire", "job", "--ttl", 600, "--timeout", WAIT, "--data-dir", nodes[0].data_dir,
                    cwd=root)
    assert (first["ok"], first["outcome"], first["holder"]) == (True, "granted", nodes[0].peer_id)
    line = refused("lock", "acquire", "job", "--timeout", WAIT, "--data-dir", nodes[1].data_dir, cwd=root)
    assert f"held by {nodes[0].peer_id} with token {first['token']}" in line
    ask(nodes[2], "chain.wait", height=first["height"] + 1, timeout=WAIT)  # certified by the next block's commit
    shown = ask(nodes[2], "lock.show", name="job", proof=True)
    assert (shown["held"], shown["holder"], shown["token"]) == (True, nodes[0].peer_id, first["token"])
    trusted = ValidatorSet([Validator(account_of(v["peer_id"]), v["power"],
                                      ConsensusKey.from_json(v["consensus_key"]) if "consensus_key" in v else None)
                            for v in shown["validators"]])
    assert sum("consensus_key" in v for v in shown["validators"]) == len(ML_DSA_VALIDATORS)
    height, value = verify_answer(bytes.fromhex(shown["proof"]), lock_entry_key(b"job"), "test-chain", trusted)
    assert height == shown["height"] and Lease.decode(value).token == first["token"]
    assert "holds no live lease" in ask_refused(nodes[1], "lock.release", name="job", timeout=WAIT)
    released = ask(nodes[0], "lock.release", name="job", timeout=WAIT)
    assert (released["outcome"], released["token"]) == ("released", first["token"])
    second = ask(nodes[1], "lock.acquire", name="job", ttl=5, timeout=WAIT)
    assert second["outcome"] == "granted" and second["token"] > first["token"]
    assert "a lease lasts more than 0" in ask_refused(nodes[1], "lock.acquire", name="other", ttl=-1)


def test_a_follower_joins_by_state_sync_and_answers_queries(chain, tmp_path):
    root, nodes = chain
    ask(nodes[0], "chain.wait", height=12, timeout=WAIT)  # past two snapshots
    flags = ["--genesis", str(root / "genesis.json"), "--state-sync", *CHAIN_FLAGS]
    with start_node(tmp_path / "follower", extra=[*flags, "--bootstrap", nodes[0].addr()],
                    startup_timeout=STARTUP) as follower:
        status = ask(follower, "chain.wait", height=13, timeout=WAIT)
        assert status["origin"].startswith("state sync from ") and status["validator"] is False
        assert status["signing"] is False
        synced = ask(follower, "chain.account", peer=nodes[0].peer_id)
        assert synced["balance"] == ask(nodes[0], "chain.account")["balance"]
        assert "holds no block 1 " in ask_refused(follower, "chain.block", height=1)


def test_a_validator_killed_with_sigkill_restarts_from_its_chain_data(chain):
    root, nodes = chain
    victim = nodes[3]
    before = ask(victim, "chain.wait", height=2, timeout=WAIT)["height"]  # started, with blocks of its own
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    flags = json.loads((root / "flags.json").read_text())
    with start_node(victim.data_dir, extra=[*flags, "--bootstrap", nodes[0].addr()],
                    startup_timeout=STARTUP) as restarted:
        # From its own store (nothing replayed from others up to `before`), then on with the others.
        status = ask(restarted, "chain.wait", height=before + 1, timeout=WAIT)
        assert status["origin"] == "store" and status["validator"] is True
        blocks = [ask(node, "chain.block", height=before) for node in (restarted, nodes[1])]
        assert blocks[0]["block_id"] == blocks[1]["block_id"]
        assert ask(nodes[0], "chain.status")["height"] > before  # the others went on meanwhile


def refused_in_process(argv, capsys) -> str:
    assert main([str(arg) for arg in argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_chain_commands_need_a_node_running_a_chain(tmp_path, capsys):
    line = refused_in_process(["chain", "status", "--data-dir", tmp_path], capsys)
    assert f"start one with `hypermesh run --data-dir {tmp_path}`" in line and "--genesis" in line
    with start_node(tmp_path / "plain") as plain:
        line = ask_refused(plain, "chain.account")
        assert "runs no chain" in line and "hypermesh run --genesis FILE" in line


def test_a_bad_genesis_or_chain_flag_is_refused_before_the_node_starts(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"chain_id": "x", "bonds": []}')
    run = ["run", "--data-dir", tmp_path / "n"]
    assert "needs at least one validator" in refused_in_process([*run, "--genesis", tmp_path / "bad.json"], capsys)
    assert "cannot read the genesis file" in refused_in_process([*run, "--genesis", tmp_path / "none.json"], capsys)
    assert "--validator needs --genesis" in refused_in_process([*run, "--validator"], capsys)
    new = ["genesis", "new", "--validator"]
    assert "below the validator minimum" in refused_in_process([*new, f"{PEER}:9999"], capsys)
    assert f"--allocation: '{PEER}' is not PEER_ID:AMOUNT" in refused_in_process([*new, PEER, "--allocation", PEER],
                                                                                 capsys)
    assert "--validator: peer ID" in refused_in_process([*new, "nobody"], capsys)
    assert not (tmp_path / "n").exists()


def test_a_node_refuses_to_run_another_genesis_on_its_chain_data(tmp_path, capsys):
    def genesis(chain_id):
        path = tmp_path / f"{chain_id}.json"
        assert main(["genesis", "new", "--validator", PEER, "--chain-id", chain_id]) == 0
        path.write_text(capsys.readouterr().out)
        return path

    first, second = genesis("first"), genesis("second")
    (tmp_path / "n" / "chain").mkdir(parents=True)
    (tmp_path / "n" / "chain" / "genesis.json").write_text(first.read_text())
    line = refused_in_process(["run", "--genesis", second, "--data-dir", tmp_path / "n"], capsys)
    assert "holds the chain of another genesis" in line
    assert not (tmp_path / "n" / "identity.key").exists()
