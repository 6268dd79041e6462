"""A running node process runs capsules for its user: `hypermesh capsule run | ls | inspect | trust | swap | rollback`
go through its control socket, with paths given relative to the caller's directory."""

import json
import shutil
import subprocess

import pytest

from hypermesh.node.processes import hypermesh_command, start_node

TIMEOUT = 60


def hm(*args, cwd, check=True):
    result = subprocess.run(hypermesh_command(*map(str, args)), cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert result.returncode == 0, f"hypermesh {' '.join(map(str, args))}: {result.stderr}"
    return result


def hm_json(*args, cwd):
    return json.loads(hm(*args, "--json", cwd=cwd).stdout)


def new_version(work, source: str, version: str, data_dir) -> str:
    """A copy of the capsule ``source`` at ``version``, signed with ``data_dir``'s key; returns its CID."""
    target = f"{source}-{version}"
    shutil.copytree(work / source, work / target)
    manifest = json.loads((work / target / "manifest.json").read_text())
    (work / target / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    return hm_json("capsule", "sign", target, "--data-dir", data_dir, cwd=work)["cid"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node process and a working directory holding the signed example capsule ``echo``."""
    root = tmp_path_factory.mktemp("capsule-node")
    work = root / "work"
    work.mkdir()
    with start_node(root / "node") as node:
        hm("capsule", "new", "demo.echo", cwd=work)
        hm("capsule", "build", "echo", cwd=work)
        hm("capsule", "sign", "echo", "--data-dir", node.data_dir, cwd=work)
        yield node, work


def states(node, work) -> dict:
    """CID -> lifecycle state, as only the running node knows it."""
    rows = hm_json("capsule", "ls", "--data-dir", node.data_dir, cwd=work)["capsules"]
    return {row["cid"]: row.get("state") for row in rows}


def test_publish_and_run_take_paths_relative_to_the_caller(node):
    node, work = node
    published = hm_json("capsule", "publish", "echo", "--data-dir", node.data_dir, cwd=work)
    assert published["provider"] == node.peer_id
    (work / "input.txt").write_text("from a file")
    ran = hm_json("capsule", "run", "echo", "reverse", "--input-file", "input.txt", "--data-dir", node.data_dir, cwd=work)
    assert ran["output"] == "elif a morf" and ran["receipt"]["capsule"] == published["cid"]


def test_a_large_input_goes_by_file_to_a_running_node(node):
    node, work = node
    refused = hm("capsule", "run", "echo", "echo", "--input", "x" * 60_000, "--data-dir", node.data_dir, cwd=work,
                 check=False)
    assert refused.returncode == 1 and "give it with --input-file" in refused.stderr
    (work / "large.txt").write_text("x" * 60_000)
    ran = hm("capsule", "run", "echo", "echo", "--input-file", "large.txt", "--data-dir", node.data_dir, cwd=work)
    assert ran.stdout == "x" * 60_000 + "\n"
    # Without a node, the short-lived runtime takes it inline.
    hm("capsule", "trust", node.peer_id, "--data-dir", work / "alone", cwd=work)
    alone = hm("capsule", "run", "echo", "echo", "--input", "x" * 60_000, "--data-dir", work / "alone", cwd=work)
    assert alone.stdout == "x" * 60_000 + "\n"


def test_run_and_ls_go_through_the_running_node(node):
    node, work = node
    ran = hm("capsule", "run", "echo", "reverse", "--input", "hi", "--data-dir", node.data_dir, cwd=work)
    assert ran.stdout == "ih\n"
    cid = hm_json("capsule", "inspect", "echo", "--data-dir", node.data_dir, cwd=work)["admission"]["cid"]
    # A short-lived runtime would have left no trace in the node; the node serves the capsule now.
    assert states(node, work)[cid] == "active"
    assert hm_json("capsule", "run", cid, "echo", "--input", "again", "--data-dir", node.data_dir,
                   cwd=work)["receipt"]["node"] == node.peer_id


def test_trust_through_the_node_changes_what_it_admits(node, tmp_path):
    node, work = node
    stranger = tmp_path / "stranger"
    shutil.copytree(work / "echo", tmp_path / "echo")
    signer = hm_json("capsule", "sign", "echo", "--data-dir", stranger, cwd=tmp_path)["signer"]
    before = hm_json("capsule", "inspect", "echo", "--data-dir", node.data_dir, cwd=tmp_path)["admission"]
    assert before["status"] == "quarantined" and before["diagnostics"][0]["code"] == "untrusted_signer"
    trusted = hm("capsule", "trust", signer, "--zones", "tenant", "--data-dir", node.data_dir, cwd=tmp_path)
    assert trusted.stdout == f"{signer} may sign for tenant\n"
    after = hm_json("capsule", "inspect", "echo", "--data-dir", node.data_dir, cwd=tmp_path)["admission"]
    assert after["status"] == "verified" and after["signer"] == signer


def test_swap_and_rollback_change_the_version_the_node_serves(node):
    node, work = node
    hm("capsule", "run", "echo", "health", "--data-dir", node.data_dir, cwd=work)  # version 0.1.0 serves
    old = hm_json("capsule", "inspect", "echo", "--data-dir", node.data_dir, cwd=work)["admission"]["cid"]
    new = new_version(work, "echo", "0.2.0", node.data_dir)
    hm("capsule", "publish", "echo-0.2.0", "--data-dir", node.data_dir, cwd=work)  # installs nothing yet
    refused = hm("capsule", "run", "echo-0.2.0", "echo", "--data-dir", node.data_dir, cwd=work, check=False)
    assert refused.returncode == 1
    assert refused.stderr == f"error: demo.echo is served by {old}: `hypermesh capsule swap demo.echo {new}` replaces it\n"

    swapped = hm_json("capsule", "swap", "demo.echo", new, "--data-dir", node.data_dir, cwd=work)
    assert swapped == {**swapped, "outcome": "completed", "old_cid": old, "new_cid": new}
    assert (states(node, work)[old], states(node, work)[new]) == ("unloaded", "active")
    rolled_back = hm_json("capsule", "rollback", "demo.echo", "--data-dir", node.data_dir, cwd=work)
    assert rolled_back == {**rolled_back, "outcome": "completed", "old_cid": new, "new_cid": old}
    assert (states(node, work)[old], states(node, work)[new]) == ("active", "unloaded")


def test_swap_needs_a_running_node(tmp_path):
    result = hm("capsule", "swap", "demo.echo", "b" + "a" * 58, "--data-dir", tmp_path / "idle", cwd=tmp_path,
                check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no node is running in {tmp_path / 'idle'}: only a running node serves")
