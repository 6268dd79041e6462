"""`hypermesh capsule …` end to end, through `python -m hypermesh.capsules.cli`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from hypermesh.capsules import cli


def run(*args, cwd, check=True, env=None):
    result = subprocess.run([sys.executable, "-m", "hypermesh.capsules.cli", "capsule", *map(str, args)],
                            cwd=cwd, capture_output=True, timeout=120, env=env)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def test_new_build_sign_verify_run_ls_inspect(tmp_path):
    data = tmp_path / "node"
    run("new", "acme.greeter", "--lang", "wat", cwd=tmp_path)
    run("build", "greeter", cwd=tmp_path)
    signed = json.loads(run("sign", "greeter", "--data-dir", data, "--json", cwd=tmp_path).stdout)
    assert signed["cid"].startswith("bafkrei") and signed["new_identity"]
    assert (data / "identity.key").stat().st_mode & 0o077 == 0

    verified = json.loads(run("verify", "greeter", "--data-dir", data, "--json", cwd=tmp_path).stdout)
    assert verified == {**verified, "status": "verified", "cid": signed["cid"], "name": "acme.greeter"}

    output = run("run", "greeter", "reverse", "--input", "abc", "--data-dir", data, cwd=tmp_path).stdout
    assert output == b"cba\n"
    by_cid = json.loads(run("run", signed["cid"], "echo", "--input", "hi", "--data-dir", data, "--json", cwd=tmp_path).stdout)
    assert by_cid["output"] == "hi" and by_cid["receipt"]["capsule"] == signed["cid"]
    hex_run = run("run", signed["cid"], "echo", "--input", "00ff", "--hex", "--data-dir", data, "--json", cwd=tmp_path)
    assert json.loads(hex_run.stdout)["output_base64"] == "AP8="

    listing = json.loads(run("ls", "--data-dir", data, "--json", cwd=tmp_path).stdout)["capsules"]
    assert listing == [{"cid": signed["cid"], "status": "installed", "name": "acme.greeter", "version": "0.1.0",
                        "kind": "module", "trust_zone": "tenant"}]
    inspected = json.loads(run("inspect", signed["cid"], "--data-dir", data, "--json", cwd=tmp_path).stdout)
    assert inspected["admission"]["status"] == "verified" and inspected["manifest"]["name"] == "acme.greeter"

    packed = json.loads(run("pack", "greeter", "--data-dir", data, "--json", cwd=tmp_path).stdout)
    assert packed["cid"] == signed["cid"]


def signed_greeter(tmp_path):
    """A built, signed and installed example capsule (source in ``tmp_path/greeter``); returns (data dir, CID)."""
    data = tmp_path / "node"
    run("new", "acme.greeter", cwd=tmp_path)
    run("build", "greeter", cwd=tmp_path)
    cid = json.loads(run("sign", "greeter", "--data-dir", data, "--json", cwd=tmp_path).stdout)["cid"]
    run("run", "greeter", "health", "--data-dir", data, cwd=tmp_path)  # installs it
    return data, cid


def test_json_output_is_one_object_on_one_line(tmp_path):
    data, cid = signed_greeter(tmp_path)
    ran = run("run", cid, "echo", "--input", "hi", "--data-dir", data, "--json", cwd=tmp_path).stdout
    (tmp_path / "ran.json").write_bytes(ran)
    outputs = [
        ran,
        run("inspect", cid, "--data-dir", data, "--json", cwd=tmp_path).stdout,
        run("verify-receipt", tmp_path / "ran.json", "--data-dir", data, "--json", cwd=tmp_path).stdout,
        run("ls", "--data-dir", data, "--json", cwd=tmp_path).stdout,
        run("verify", "greeter", "--data-dir", data, "--json", cwd=tmp_path).stdout,
    ]
    for output in outputs:
        assert output.endswith(b"\n") and output.count(b"\n") == 1, output
        assert isinstance(json.loads(output), dict)


def test_run_writes_the_execution_receipt_that_verify_receipt_accepts(tmp_path):
    data, cid = signed_greeter(tmp_path)
    run("run", cid, "reverse", "--input", "hi", "--receipt", "execution-receipt.json", "--data-dir", data, cwd=tmp_path)
    receipt = json.loads((tmp_path / "execution-receipt.json").read_text())
    assert receipt["capsule"] == cid and receipt["function"] == "reverse"
    checked = run("verify-receipt", "execution-receipt.json", cwd=tmp_path).stdout.decode()
    assert checked.startswith(f"valid receipt of {cid} by ")


def test_verify_receipt_tells_a_signing_receipt_from_an_execution_receipt(tmp_path):
    signed_greeter(tmp_path)
    result = run("verify-receipt", "greeter/receipt.json", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(b"error: greeter/receipt.json is a capsule's signing receipt (its receipt.json), "
                                    b"not an execution receipt")


def test_inspect_prints_text_without_json(tmp_path):
    data, cid = signed_greeter(tmp_path)
    text = run("inspect", cid, "--data-dir", data, cwd=tmp_path).stdout.decode()
    assert f"cid:          {cid}\n" in text and "admission:    verified\n" in text
    assert "name:         acme.greeter\n" in text and "entry points: echo, reverse, health\n" in text
    assert not text.lstrip().startswith("{")


def test_run_text_output_ends_with_a_newline(tmp_path):
    data, cid = signed_greeter(tmp_path)
    assert run("run", cid, "reverse", "--input", "hi", "--data-dir", data, cwd=tmp_path).stdout == b"ih\n"


def test_ls_says_a_capsule_is_malformed_instead_of_none(tmp_path):
    data, cid = signed_greeter(tmp_path)
    broken = data / "capsules" / "store" / ("b" + "a" * 58)
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    text = run("ls", "--data-dir", data, cwd=tmp_path).stdout.decode()
    assert "None" not in text
    assert f"{broken.name}  installed    malformed: manifest.json does not match its schema" in text
    assert f"{cid}  installed    acme.greeter@0.1.0" in text
    rows = json.loads(run("ls", "--data-dir", data, "--json", cwd=tmp_path).stdout)["capsules"]
    assert "malformed" in next(row for row in rows if row["cid"] == broken.name)


def test_sign_without_data_dir_announces_a_new_identity_on_stderr(tmp_path):
    run("new", "acme.greeter", cwd=tmp_path)
    run("build", "greeter", cwd=tmp_path)
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    first = run("sign", "greeter", cwd=tmp_path, env=env)
    created = tmp_path / "home" / ".hypermesh" / "identity.key"
    assert created.exists()
    assert b"created a new identity 12D3KooW" in first.stderr and str(created.parent).encode() in first.stderr
    again = run("sign", "greeter", cwd=tmp_path, env=env)
    assert again.stderr == b""  # the same key: nothing to announce


def test_verify_of_a_tampered_capsule_fails_with_the_reason(tmp_path):
    data = tmp_path / "node"
    run("new", "acme.t", cwd=tmp_path)
    run("build", "t", cwd=tmp_path)
    run("sign", "t", "--data-dir", data, cwd=tmp_path)
    wasm = tmp_path / "t" / "impl" / "capsule.wasm"
    wasm.write_bytes(wasm.read_bytes()[:-1] + b"\x01")
    result = run("verify", "t", "--data-dir", data, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert b"hash_mismatch: impl/capsule.wasm does not match" in result.stdout


def test_capsule_signed_by_another_node_is_untrusted_until_trusted(tmp_path):
    builder, runner = tmp_path / "builder", tmp_path / "runner"
    run("new", "acme.shared", cwd=tmp_path)
    run("build", "shared", cwd=tmp_path)
    signer = json.loads(run("sign", "shared", "--data-dir", builder, "--json", cwd=tmp_path).stdout)["signer"]
    result = run("verify", "shared", "--data-dir", runner, cwd=tmp_path, check=False)
    assert result.returncode == 1 and b"untrusted_signer" in result.stdout
    run("trust", signer, "--zones", "tenant", "--data-dir", runner, cwd=tmp_path)
    run("verify", "shared", "--data-dir", runner, cwd=tmp_path)


@pytest.mark.parametrize("args, message", [
    (["run", "nowhere", "f", "--data-dir", "{d}"], b"error: nowhere is neither an installed CID nor a capsule directory"),
    (["build", "missing"], b"error: "),
    (["new", "Bad Name"], b"error: invalid capsule name"),
    (["new", "acme.x", "--lang", "cobol"], b"invalid choice"),
])
def test_errors_are_one_line_and_nonzero(tmp_path, args, message):
    result = run(*[a.replace("{d}", str(tmp_path / "d")) for a in args], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


def test_register_adds_the_capsule_tree_to_a_parent_cli():
    parser = argparse.ArgumentParser(prog="hypermesh")
    subparsers = parser.add_subparsers(dest="command")
    cli.register(subparsers)
    args = parser.parse_args(["capsule", "ls", "--json", "--data-dir", "/nonexistent"])
    assert args.command == "capsule" and args.capsule_command == "ls" and callable(args.func)


def test_new_scaffolds_python_and_js(tmp_path):
    run("new", "acme.py-thing", "--lang", "python", cwd=tmp_path)
    run("new", "acme.js-thing", "--lang", "js", cwd=tmp_path)
    assert (tmp_path / "py-thing" / "src" / "app.py").exists()
    assert (tmp_path / "js-thing" / "src" / "app.js").exists()
    manifest = json.loads((tmp_path / "js-thing" / "manifest.json").read_text())
    assert manifest["name"] == "acme.js-thing" and manifest["kind"] == "component"


def test_python_scaffold_builds_signs_and_runs(tmp_path, shared_cache):
    data = tmp_path / "node"
    # The node's compiled-code cache is the session's: the component compiles
    # once (~20 s) across sessions instead of in every run.
    data.mkdir()
    (shared_cache / "artifacts").mkdir(mode=0o700, exist_ok=True)
    (data / "artifacts").symlink_to(shared_cache / "artifacts", target_is_directory=True)
    run("new", "acme.pyecho", "--lang", "python", cwd=tmp_path)
    run("build", "pyecho", cwd=tmp_path)
    run("sign", "pyecho", "--data-dir", data, cwd=tmp_path)
    run("verify", "pyecho", "--data-dir", data, cwd=tmp_path)
    assert run("run", "pyecho", "handle", "--input", "from python", "--data-dir", data, cwd=tmp_path).stdout == b"from python\n"
