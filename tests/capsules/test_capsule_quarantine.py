"""Quarantine is keyed by what was actually hashed, and stays consistent across restarts."""

from __future__ import annotations

import json
import shutil

import pytest

from capsule_testkit import BUILDER, LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.errors import LinkError
from hypermesh.capsules.lifecycle import State
from hypermesh.capsules.runtime import CapsuleRuntime


def test_corrupted_copy_does_not_quarantine_the_cid_it_claims(runtime, tmp_path):
    good = write_capsule(tmp_path / "good", manifest(), LIMITS_WAT)
    corrupted = shutil.copytree(good, tmp_path / "corrupted")
    wasm = corrupted / "impl" / "code.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\x00")
    real_cid = json.loads((good / "receipt.json").read_text())["cid"]

    bad = runtime.install(corrupted)
    assert bad.state == State.QUARANTINED and bad.diagnostics[0].code == "hash_mismatch"
    # Named after its own content; the CID its receipt claims is recorded, not taken.
    assert bad.cid != real_cid and bad.cid.startswith("bafkrei")
    assert not (runtime.quarantine_dir / real_cid).exists()
    report = json.loads((runtime.quarantine_dir / bad.cid / "diagnostics.json").read_text())
    assert report["cid"] == bad.cid and report["claimed_cid"] == real_cid

    capsule = runtime.install(good)
    assert capsule.cid == real_cid and capsule.state == State.VERIFIED
    runtime.activate(real_cid)
    assert runtime.call(real_cid, "echo", b"fine").output == b"fine"


def test_link_error_quarantine_is_moved_described_and_kept_after_restart(tmp_path, engine, policy):
    code = LIMITS_WAT.replace("(module", '(module (import "hypermesh" "kv_get" (func (param i32 i32 i32 i32) (result i32)))', 1)
    directory = write_capsule(tmp_path / "c", manifest(), code)
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    try:
        capsule = runtime.install(directory)
        stored = capsule.directory
        with pytest.raises(LinkError):
            runtime.activate(capsule.cid)
        kept = runtime.quarantine_dir / capsule.cid
        assert not stored.exists() and capsule.directory == kept
        report = json.loads((kept / "diagnostics.json").read_text())
        assert report["diagnostics"][0]["code"] == "link_error" and "kv_get" in report["diagnostics"][0]["message"]
    finally:
        runtime.close()

    restarted = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    try:
        assert restarted.install_stored() == []
        again = restarted.get(capsule.cid)
        assert again.state == State.QUARANTINED and again.diagnostics[0].code == "link_error"
    finally:
        restarted.close()


def test_tampered_store_copy_is_known_as_quarantined_after_restart(tmp_path, engine, policy):
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(), LIMITS_WAT))
    runtime.close()
    (capsule.directory / "spec" / "README.md").write_text("changed at rest\n")
    for _ in range(2):  # the first restart finds the damage, the second remembers it
        restarted = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
        try:
            restarted.install_stored()
            assert all(c.state == State.QUARANTINED for c in restarted.capsules())
            assert [c.diagnostics[0].code for c in restarted.capsules()] == ["hash_mismatch"]
        finally:
            restarted.close()


def test_cli_run_of_a_quarantined_cid_says_so(tmp_path, engine, policy):
    import subprocess
    import sys

    code = LIMITS_WAT.replace("(module", '(module (import "hypermesh" "kv_get" (func (param i32 i32 i32 i32) (result i32)))', 1)
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    try:
        capsule = runtime.install(write_capsule(tmp_path / "c", manifest(), code))
        with pytest.raises(LinkError):
            runtime.activate(capsule.cid)
    finally:
        runtime.close()
    result = subprocess.run([sys.executable, "-m", "hypermesh.capsules.cli", "capsule", "run", capsule.cid, "echo", "--input", "x",
                             "--data-dir", str(tmp_path / "node")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: capsule {capsule.cid} is quarantined; why: {capsule.directory / 'diagnostics.json'}"
