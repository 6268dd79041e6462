"""`capsule sign`, `verify` and `publish` accept only what admission and loading would accept."""

from __future__ import annotations

import json

import pytest
import trio

from capsule_testkit import BUILDER, LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules import cli
from hypermesh.capsules.chunks import ChunkStore
from hypermesh.capsules.distribution import CapsuleDistribution
from hypermesh.capsules.errors import CapsuleError

NOT_COMPILING = b"\x00asm\x01\x00\x00\x00\xff\xff\xff"  # core-module header, garbage body


def unsigned(tmp_path, code=LIMITS_WAT, doc=None):
    return write_capsule(tmp_path / "c", doc or manifest(), code, signer=None)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = cli.main(["capsule", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("breakage", ["invalid_json", "wrong_schema", "not_compiling", "missing_export"])
def test_sign_refuses_what_would_not_be_admitted(tmp_path, capsys, breakage):
    directory = unsigned(tmp_path)
    if breakage == "invalid_json":
        (directory / "manifest.json").write_text('{"format": "hypermesh-capsule/1",')
    elif breakage == "wrong_schema":
        (directory / "manifest.json").write_text(json.dumps({**manifest(), "trust_zone": "root"}))
    elif breakage == "not_compiling":
        (directory / "impl" / "code.wasm").write_bytes(NOT_COMPILING)
    else:
        (directory / "manifest.json").write_text(json.dumps(manifest(entries=("echo", "absent"))))
    status, out, err = run_cli(capsys, "sign", directory, "--data-dir", tmp_path / "node")
    assert status == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (directory / "receipt.json").exists()


def test_sign_accepts_a_good_capsule(tmp_path, capsys):
    status, out, err = run_cli(capsys, "sign", unsigned(tmp_path), "--data-dir", tmp_path / "node", "--json")
    assert status == 0, err
    assert json.loads(out)["cid"].startswith("bafkrei")


def test_verify_refuses_a_signed_capsule_whose_code_does_not_compile(tmp_path, capsys):
    directory = write_capsule(tmp_path / "c", manifest(), NOT_COMPILING, signer=BUILDER)
    # A node trusting the builder: admission alone would pass.
    (tmp_path / "node").mkdir()
    assert run_cli(capsys, "trust", BUILDER.peer_id, "--data-dir", tmp_path / "node")[0] == 0
    status, out, _ = run_cli(capsys, "verify", directory, "--data-dir", tmp_path / "node", "--json")
    assert status == 1
    document = json.loads(out)
    assert document["status"] == "quarantined" and document["diagnostics"][0]["code"] == "link_error"
    assert "does not compile" in document["diagnostics"][0]["message"]


async def test_publish_refuses_a_signed_capsule_that_does_not_link(runtime, tmp_path):
    code = LIMITS_WAT.replace("(module", '(module (import "hypermesh" "kv_get" (func (param i32 i32 i32 i32) (result i32)))', 1)
    directory = write_capsule(tmp_path / "c", manifest(), code, signer=BUILDER)
    store = ChunkStore(tmp_path / "chunks")
    distribution = CapsuleDistribution(None, None, store, runtime)
    with pytest.raises(CapsuleError, match="link_error: .*kv_get"):
        await distribution.publish(directory)
    assert distribution.published.cids == []
    await trio.lowlevel.checkpoint()
