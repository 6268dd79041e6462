"""The validator's ML-DSA-65 consensus key in the data directory, `hypermesh validator key`, and a genesis
that declares it (`hypermesh genesis new --validator PEER_ID[:POWER][:ml-dsa-65=KEY]`)."""

import base64
import json
import stat

import pytest

from hypermesh.consensus.genesis import account_of, parse_genesis
from hypermesh.consensus.signing import Scheme, ml_dsa_public_key
from hypermesh.node.cli import main
from hypermesh.node.validator_key import (
    ML_DSA_KEY_FILE,
    ValidatorKeyError,
    init_ml_dsa_key,
    load_ml_dsa_key,
    ml_dsa_key_path,
)
from hypermesh.transport.identity import init_identity


def run_json(argv, capsys) -> dict:
    assert main([str(arg) for arg in argv]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return json.loads(out)


def refused(argv, capsys) -> str:
    assert main([str(arg) for arg in argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_the_key_file_round_trips_private_and_whole(tmp_path):
    assert load_ml_dsa_key(tmp_path) is None
    key, created = init_ml_dsa_key(tmp_path)
    path = ml_dsa_key_path(tmp_path)
    assert created and path.name == ML_DSA_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ML_DSA_KEY_FILE]  # no temporary file left behind
    assert ml_dsa_public_key(load_ml_dsa_key(tmp_path)) == ml_dsa_public_key(key)
    again, created = init_ml_dsa_key(tmp_path)
    assert not created and ml_dsa_public_key(again) == ml_dsa_public_key(key)
    # The seed is what is kept: the same key signs what the loaded one verifies.
    signature = load_ml_dsa_key(tmp_path).sign(b"vote")
    key.public_key().verify(signature, b"vote")


def test_a_key_file_readable_by_others_or_not_an_ml_dsa_key_is_refused(tmp_path):
    init_ml_dsa_key(tmp_path)
    path = ml_dsa_key_path(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ValidatorKeyError, match="readable by other users"):
        load_ml_dsa_key(tmp_path)
    path.chmod(0o600)
    identity_pem = init_identity(tmp_path / "other")[0].private_key_pem()
    path.write_bytes(identity_pem)
    with pytest.raises(ValidatorKeyError, match="not an ML-DSA-65 key"):
        load_ml_dsa_key(tmp_path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValidatorKeyError, match="not a PEM private key"):
        load_ml_dsa_key(tmp_path)


def test_validator_key_makes_the_key_once_and_prints_what_a_genesis_bond_takes(tmp_path, capsys):
    data_dir = tmp_path / "n"
    shown = run_json(["validator", "key", "--data-dir", data_dir, "--json"], capsys)
    assert shown["scheme"] == "ml-dsa-65" and shown["created"] is True
    assert shown["public_key"] == ml_dsa_public_key(load_ml_dsa_key(data_dir)).to_json()["public_key"]
    again = run_json(["validator", "key", "--scheme", "ml-dsa-65", "--data-dir", data_dir, "--json"], capsys)
    assert again["public_key"] == shown["public_key"] and again["created"] is False
    ml_dsa_key_path(data_dir).chmod(0o640)
    assert "readable by other users" in refused(["validator", "key", "--data-dir", data_dir], capsys)


def test_validator_key_ed25519_is_the_identity_key_and_needs_one(tmp_path, capsys):
    assert "run `hypermesh init" in refused(["validator", "key", "--scheme", "ed25519", "--data-dir", tmp_path],
                                            capsys)
    identity, _ = init_identity(tmp_path)
    shown = run_json(["validator", "key", "--scheme", "ed25519", "--data-dir", tmp_path, "--json"], capsys)
    assert shown["scheme"] == "ed25519"
    assert base64.b64decode(shown["public_key"]) == account_of(str(identity.peer_id))


def test_genesis_new_declares_a_validators_ml_dsa_key_from_its_printed_key(tmp_path, capsys):
    peers = [str(init_identity(tmp_path / f"v{i}")[0].peer_id) for i in range(2)]
    shown = run_json(["validator", "key", "--data-dir", tmp_path / "v1", "--json"], capsys)
    (tmp_path / "v1.json").write_text(json.dumps(shown))
    (tmp_path / "v1.b64").write_text(shown["public_key"] + "\n")
    for key in (f"@{tmp_path / 'v1.json'}", f"@{tmp_path / 'v1.b64'}", shown["public_key"]):
        genesis = parse_genesis(json.dumps(run_json(["genesis", "new", "--validator", peers[0],
                                                     "--validator", f"{peers[1]}:20000:ml-dsa-65={key}",
                                                     "--json"], capsys)))
        bonds = {bond.owner: bond for bond in genesis.bonds}
        declared = bonds[account_of(peers[1])]
        assert declared.amount == 20_000 and declared.consensus_key.scheme is Scheme.ML_DSA_65
        assert declared.consensus_key.to_json()["public_key"] == shown["public_key"]
        assert bonds[account_of(peers[0])].consensus_key is None


@pytest.mark.parametrize("entry, message", [
    ("{peer}:ml-dsa-65=QUJD", "1952 bytes, not 3"),
    ("{peer}:ml-dsa-87=QUJD", "unknown signature scheme 'ml-dsa-87'"),
    ("{peer}:ml-dsa-65=@{missing}", "cannot read"),
    ("{peer}:10000:20000", "is not PEER_ID[:POWER][:ml-dsa-65=BASE64|@FILE]"),
])
def test_genesis_new_refuses_a_bad_key_in_one_line(tmp_path, capsys, entry, message):
    peer = str(init_identity(tmp_path)[0].peer_id)
    line = refused(["genesis", "new", "--validator", entry.format(peer=peer, missing=tmp_path / "none")], capsys)
    assert line.startswith("error: --validator") and message in line


def test_a_validator_with_a_broken_key_file_is_refused_before_the_node_starts(tmp_path, capsys):
    peer = str(init_identity(tmp_path / "n")[0].peer_id)
    assert main(["genesis", "new", "--validator", peer]) == 0
    (tmp_path / "genesis.json").write_text(capsys.readouterr().out)
    ml_dsa_key_path(tmp_path / "n").write_bytes(b"garbage")
    ml_dsa_key_path(tmp_path / "n").chmod(0o600)
    line = refused(["run", "--data-dir", tmp_path / "n", "--genesis", tmp_path / "genesis.json", "--validator"],
                   capsys)
    assert "consensus key:" in line and "not a PEM private key" in line
