"""The chain in real `hypermesh run` processes on [::1]: a genesis, four validators, a follower that joins
by state sync, and the chain commands through the running node's control socket."""

import functools
import json

import pytest
import trio

from cli_testkit import hm
from hypermesh.node import control
from hypermesh.node.cli import main
from hypermesh.transport.identity import init_identity
from hypermesh.node.processes import start_node, start_nodes, stop_all

VALIDATORS = 4
ALLOCATION = 100_000
# Short rounds and frequent snapshots: a test chain moves fast and a follower finds a snapshot soon.
PEER = "12D3KooWAdB5DkwdBVZUbP9RonHRVwT6yxu6mBn1tZG3vSowry2Z"
CHAIN_FLAGS = ["--chain-timeout", "0.5", "--snapshot-interval", "5"]


def hm_json(*args, cwd):
    result = hm(*args, "--json", cwd=cwd)
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
    result = hm(*args, cwd=cwd, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Four validators of one genesis (each with an allocation), the first the others' bootstrap peer."""
    root = tmp_path_factory.mktemp("chain")
    dirs = [root / f"v{i}" for i in range(VALIDATORS)]
    peers = [str(init_identity(d)[0].peer_id) for d in dirs]
    genesis = hm("genesis", "new", *[f"--validator={peer}" for peer in peers],
                 *[f"--allocation={peer}:{ALLOCATION}" for peer in peers], "--chain-id", "test-chain", cwd=root)
    (root / "genesis.json").write_text(genesis.stdout)
    flags = ["--genesis", str(root / "genesis.json"), "--validator", *CHAIN_FLAGS]
    first = start_node(dirs[0], extra=flags)
    try:
        others = start_nodes(dirs[1:], extra=[*flags, "--bootstrap", first.addr()])
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
        ask(node, "chain.wait", height=3)
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


def test_a_transfer_shows_in_the_balances_on_another_node(chain):
    root, nodes = chain
    sent = hm_json("transfer", nodes[1].peer_id, 1_234, "--data-dir", nodes[0].data_dir, cwd=root)
    assert sent["height"] >= 1 and sent["nonce"] == 0 and sent["to"] == nodes[1].peer_id
    ask(nodes[3], "chain.wait", height=sent["height"])
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
    account = ask(node, "chain.account")
    assert account["balance"] == ALLOCATION and account["nonce"] == 0  # nothing refused moved a unit


def test_a_follower_joins_by_state_sync_and_answers_queries(chain, tmp_path):
    root, nodes = chain
    ask(nodes[0], "chain.wait", height=12)  # past two snapshots
    flags = ["--genesis", str(root / "genesis.json"), "--state-sync", *CHAIN_FLAGS]
    with start_node(tmp_path / "follower", extra=[*flags, "--bootstrap", nodes[0].addr()]) as follower:
        status = ask(follower, "chain.wait", height=13)
        assert status["origin"].startswith("state sync from ") and status["validator"] is False
        assert status["signing"] is False
        synced = ask(follower, "chain.account", peer=nodes[0].peer_id)
        assert synced["balance"] == ask(nodes[0], "chain.account")["balance"]
        assert "holds no block 1 " in ask_refused(follower, "chain.block", height=1)


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
