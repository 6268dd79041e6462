"""Admission: verified capsules, and quarantine with a diagnostic for every kind of damage."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsule_testkit import BUILDER, LIMITS_WAT, STRANGER, manifest, write_capsule
from hypermesh.capsules.admission import Quarantined, Verified, admit
from hypermesh.capsules.cid import cid_from_digest, digest_from_cid
from hypermesh.capsules.errors import FormatError
from hypermesh.capsules.layout import check_relative_path, list_capsule_files
from hypermesh.capsules.trust import TrustPolicy


def trusting(*identities, zones=("system", "tenant", "session", "ephemeral")) -> TrustPolicy:
    policy = TrustPolicy()
    for identity in identities:
        policy.trust(identity.peer_id, zones)
    return policy


@pytest.fixture
def capsule(tmp_path) -> Path:
    return write_capsule(tmp_path / "capsule", manifest(), LIMITS_WAT)


def test_signed_capsule_is_verified_with_a_stable_cid(capsule):
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Verified), getattr(result, "reason", "")
    assert result.cid.startswith("bafkrei")
    assert cid_from_digest(digest_from_cid(result.cid)) == result.cid
    assert result.signer == BUILDER.peer_id
    assert admit(capsule, trusting(BUILDER)).cid == result.cid


def _files(capsule: Path) -> list[str]:
    return [item.path for item in list_capsule_files(capsule)] + ["receipt.json"]


# Tampering: flip one byte anywhere in any covered file, or in the receipt.
_TEMPLATE: dict[str, Path] = {}


def _template(tmp_root: Path) -> Path:
    if "dir" not in _TEMPLATE:
        _TEMPLATE["dir"] = write_capsule(tmp_root / "template", manifest(), LIMITS_WAT)
    return _TEMPLATE["dir"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipping_any_byte_of_any_file_quarantines(tmp_path_factory, data):
    template = _template(tmp_path_factory.mktemp("tamper-template"))
    target = tmp_path_factory.mktemp("tamper") / "capsule"
    shutil.copytree(template, target)
    path = data.draw(st.sampled_from(_files(target)), label="file")
    content = bytearray((target / path).read_bytes())
    offset = data.draw(st.integers(0, len(content) - 1), label="offset")
    content[offset] ^= data.draw(st.integers(1, 255), label="xor")
    (target / path).write_bytes(bytes(content))

    result = admit(target, trusting(BUILDER))

    assert isinstance(result, Quarantined)
    assert result.diagnostics and result.reason
    if path != "receipt.json":
        # A changed file is named, with the hash the receipt expects and the one found.
        mismatch = [d for d in result.diagnostics if d.code == "hash_mismatch"]
        assert mismatch and mismatch[0].path == path
        assert mismatch[0].expected != mismatch[0].found
    else:
        assert result.diagnostics[0].code in {
            "malformed", "hash_mismatch", "root_mismatch", "cid_mismatch", "bad_signature",
            "signer_mismatch", "bad_signer_key", "untrusted_signer", "unlisted_file", "missing_file"}


def test_unknown_signer_is_quarantined(tmp_path):
    capsule = write_capsule(tmp_path / "c", manifest(), LIMITS_WAT, signer=STRANGER)
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    (diagnostic,) = result.diagnostics
    assert diagnostic.code == "untrusted_signer"
    assert str(STRANGER.peer_id) in diagnostic.message
    assert "no zone" in diagnostic.found


def test_signer_trusted_for_another_zone_only(tmp_path):
    capsule = write_capsule(tmp_path / "c", manifest(zone="system"), LIMITS_WAT)
    result = admit(capsule, trusting(BUILDER, zones=("tenant",)))
    assert isinstance(result, Quarantined)
    assert result.diagnostics[0].code == "untrusted_signer"
    assert "system" in result.diagnostics[0].message


def test_capability_not_granted_by_zone(tmp_path):
    capsule = write_capsule(tmp_path / "c", manifest(zone="ephemeral", requires=["kv"]), LIMITS_WAT)
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    assert result.diagnostics[0].code == "capability_refused"
    assert "kv" in result.diagnostics[0].found


def test_receipt_signed_by_one_key_claiming_another(tmp_path, capsule):
    receipt = json.loads((capsule / "receipt.json").read_text())
    receipt["signer"]["peer_id"] = str(STRANGER.peer_id)
    (capsule / "receipt.json").write_text(json.dumps(receipt))
    result = admit(capsule, trusting(BUILDER, STRANGER))
    assert result.diagnostics[0].code == "signer_mismatch"


def test_added_file_is_unlisted(capsule):
    (capsule / "spec" / "extra.md").write_text("sneaky")
    result = admit(capsule, trusting(BUILDER))
    assert [d.code for d in result.diagnostics] == ["unlisted_file"]
    assert result.diagnostics[0].path == "spec/extra.md"


def test_removed_file_is_missing(capsule):
    (capsule / "spec" / "README.md").unlink()
    result = admit(capsule, trusting(BUILDER))
    assert [d.code for d in result.diagnostics] == ["missing_file"]


def test_symlink_is_refused(tmp_path, capsule):
    outside = tmp_path / "secret"
    outside.write_text("secret")
    os.symlink(outside, capsule / "spec" / "link.md")
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    assert "symlink" in result.reason


def test_symlinked_impl_directory_is_refused(tmp_path, capsule):
    shutil.move(capsule / "impl", tmp_path / "real-impl")
    os.symlink(tmp_path / "real-impl", capsule / "impl")
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined) and "symlink" in result.reason


def test_fifo_is_refused(capsule):
    os.mkfifo(capsule / "spec" / "pipe")
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined) and "regular file" in result.reason


def test_oversized_file_is_refused_before_reading(capsule, monkeypatch):
    from hypermesh.capsules import layout

    monkeypatch.setattr(layout, "MAX_FILE_BYTES", 100)
    (capsule / "spec" / "big.bin").write_bytes(b"x" * 101)
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined) and "over the 100-byte limit" in result.reason


@pytest.mark.parametrize("path", ["../etc/passwd", "spec/../../x", "spec/.hidden", "/abs", "spec//x", "other/file", "spec", "spec/a\\b"])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(FormatError):
        check_relative_path(path)


def test_receipt_listing_a_traversal_path_is_quarantined(capsule):
    receipt = json.loads((capsule / "receipt.json").read_text())
    receipt["files"]["../outside"] = "00" * 32
    (capsule / "receipt.json").write_text(json.dumps(receipt))
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    assert any(d.path == "../outside" for d in result.diagnostics)


def test_duplicate_json_keys_are_refused(capsule):
    text = (capsule / "receipt.json").read_text()
    (capsule / "receipt.json").write_text(text[:-1] + ',"cid":"x"}')
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined) and "duplicate key" in result.reason


def test_manifest_schema_violation_names_the_field(tmp_path):
    doc = manifest()
    doc["trust_zone"] = "galaxy"
    capsule = write_capsule(tmp_path / "c", doc, LIMITS_WAT)
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    assert result.diagnostics[0].path == "manifest.json" and "trust_zone" in result.reason


def test_component_declared_but_core_module_shipped(tmp_path):
    capsule = write_capsule(tmp_path / "c", manifest(kind="component", entries=("handle",)), LIMITS_WAT)
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined)
    assert result.diagnostics[0].code == "wrong_code_kind"
    assert result.diagnostics[0].expected == "0061736d0d000100"


def test_missing_receipt_is_quarantined(capsule):
    (capsule / "receipt.json").unlink()
    result = admit(capsule, trusting(BUILDER))
    assert isinstance(result, Quarantined) and "receipt.json is missing" in result.reason
