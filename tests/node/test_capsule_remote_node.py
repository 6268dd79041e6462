"""Two node processes on [::1], driven as a new user would: B runs A's published capsule on A
(`capsule run --on`), keeps the execution receipt and verifies it; A refuses an untrusted signer's capsule."""

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


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-run")
    with start_node(root / "a") as a:
        with start_node(root / "b", extra=["--bootstrap", a.addr()]) as b:
            hm("dht", "wait", "--peers", "1", "--data-dir", b.data_dir, cwd=root)
            yield root, a, b


def test_b_runs_as_published_capsule_on_a_and_verifies_the_receipt(pair):
    root, a, b = pair
    hm("capsule", "new", "demo.echo", cwd=root)
    hm("capsule", "build", "echo", cwd=root)
    hm("capsule", "sign", "echo", "--data-dir", a.data_dir, cwd=root)
    cid = json.loads(hm("capsule", "publish", "echo", "--data-dir", a.data_dir, "--json", cwd=root).stdout)["cid"]

    ran = hm("capsule", "run", "--on", a.addr(), cid, "reverse", "--input", "hi", "--receipt", "execution-receipt.json",
             "--data-dir", b.data_dir, cwd=root)
    assert ran.stdout == "ih\n"
    receipt = json.loads((root / "execution-receipt.json").read_text())
    assert receipt["node"] == a.peer_id and receipt["capsule"] == cid and receipt["function"] == "reverse"
    checked = hm("capsule", "verify-receipt", "execution-receipt.json", cwd=root)
    assert checked.stdout == f"valid receipt of {cid} by {a.peer_id}\n"

    # Without a node of its own, a short-lived host asks A the same way.
    again = json.loads(hm("capsule", "run", "--on", a.addr(), cid, "echo", "--input", "x", "--json",
                          "--data-dir", root / "no-node", cwd=root).stdout)
    assert again["output"] == "x" and again["receipt"]["node"] == a.peer_id


def test_a_refuses_an_untrusted_signers_capsule_with_a_clear_message(pair):
    root, a, b = pair
    hm("capsule", "new", "demo.other", cwd=root)
    hm("capsule", "build", "other", cwd=root)
    signed = json.loads(hm("capsule", "sign", "other", "--data-dir", b.data_dir, "--json", cwd=root).stdout)
    hm("capsule", "publish", "other", "--data-dir", b.data_dir, cwd=root)
    shutil.rmtree(root / "other")  # A can get it only from B, through the DHT
    refused = hm("capsule", "run", "--on", a.addr(), signed["cid"], "echo", "--data-dir", b.data_dir, cwd=root,
                 check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: the node refused (untrusted_signer): capsule {signed['cid']} failed "
                                     f"admission here: untrusted_signer: signer {b.peer_id} may not sign for trust "
                                     "zone 'tenant'")
    assert refused.stderr.count("\n") == 1
