"""Two node processes on [::1]: services, provider records and capsules
travel through the DHT and the transport, driven only through the CLI."""

import json
import shutil

import pytest

from hypermesh.node.processes import run_cli, start_node

TIMEOUT = 60


def cli(*args):
    result = run_cli(*args, "--json", timeout=TIMEOUT)
    assert result.returncode == 0, f"hypermesh {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    with start_node(root / "alice") as alice:
        with start_node(root / "bob", extra=["--bootstrap", alice.addr()]) as bob:
            for node in (alice, bob):
                assert cli("dht", "wait", "--peers", "1", "--data-dir", str(node.data_dir))["routing_table_peers"] >= 1
            yield root, alice, bob


def test_service_registered_on_one_node_resolves_on_the_other(mesh):
    _, alice, bob = mesh
    registered = cli("service", "register", "echo", "--protocol", "/hm/echo/1.0.0", "--data-dir", str(alice.data_dir))
    assert registered["stored_on_peers"] >= 1
    resolved = cli("service", "resolve", "echo", "--data-dir", str(bob.data_dir))
    (instance,) = resolved["instances"]
    assert instance["peer_id"] == alice.peer_id and instance["protocol"] == "/hm/echo/1.0.0"
    # The second resolution is served from the cache.
    assert cli("service", "resolve", "echo", "--data-dir", str(bob.data_dir))["resolve_ms"] < 1


def test_provider_record_is_found_by_plain_string_key(mesh):
    _, alice, bob = mesh
    provided = cli("dht", "provide", "hello mesh", "--data-dir", str(alice.data_dir))
    found = cli("dht", "find-providers", "hello mesh", "--data-dir", str(bob.data_dir))
    assert found["cid"] == provided["cid"] and found["cid"].startswith("bafkrei")
    assert alice.peer_id in {provider["peer_id"] for provider in found["providers"]}


def test_capsule_published_on_one_node_runs_on_the_other_with_a_receipt_the_first_verifies(mesh, tmp_path):
    root, alice, bob = mesh
    source = tmp_path / "echo"
    assert run_cli("capsule", "new", "demo.echo", "--dir", str(tmp_path)).returncode == 0
    for step in ("build", "sign"):
        result = run_cli("capsule", step, str(source), "--data-dir", str(alice.data_dir))
        assert result.returncode == 0, result.stderr
    published = cli("capsule", "publish", str(source), "--data-dir", str(alice.data_dir))
    shutil.rmtree(source)  # bob can only get it from the mesh
    # Bob accepts capsules signed by alice.
    assert run_cli("capsule", "trust", alice.peer_id, "--data-dir", str(bob.data_dir)).returncode == 0
    fetched = cli("capsule", "fetch", published["cid"], "--data-dir", str(bob.data_dir))
    assert fetched["name"] == "demo.echo"
    ran = cli("capsule", "run", published["cid"], "reverse", "--input", "mesh", "--data-dir", str(bob.data_dir))
    assert ran["output"] == "hsem" and ran["receipt"]["node"] == bob.peer_id
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(ran["receipt"]))
    assert cli("capsule", "verify-receipt", str(receipt_file), "--data-dir", str(alice.data_dir))["valid"]
    tampered = dict(ran["receipt"], output_hash="00" * 32)
    receipt_file.write_text(json.dumps(tampered))
    assert run_cli("capsule", "verify-receipt", str(receipt_file)).returncode == 1


def test_a_short_lived_node_resolves_through_a_bootstrap_peer_without_making_an_identity(mesh, tmp_path):
    _, alice, _ = mesh
    cli("service", "register", "lookup-echo", "--protocol", "/hm/echo/1.0.0", "--data-dir", str(alice.data_dir))
    resolved = cli("service", "resolve", "lookup-echo", "--bootstrap", alice.addr(), "--data-dir", str(tmp_path))
    assert alice.peer_id in {instance["peer_id"] for instance in resolved["instances"]}
    assert not (tmp_path / "identity.key").exists()
