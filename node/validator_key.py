"""The validator's consensus signing key in the data directory (consensus/signing.py has the schemes).

``consensus-ml-dsa-65.key`` beside ``identity.key``: the ML-DSA-65 private
key as unencrypted PKCS#8 PEM (its 32-byte seed form), mode 0600, written
atomically (a temporary file, fsync, rename, fsync of the directory) so a
kill -9 leaves either no file or the whole key. Created on demand by
``hypermesh validator key --scheme ml-dsa-65``, and read when a validator
node starts (``hypermesh run --validator``), so make it before. Which key
the node signs with is the current validator set's: the one declared at
genesis or by a bond (``hypermesh stake bond --consensus-key``, from the
next epoch on); its identity key (Ed25519) while the set declares none; and
nothing (it follows) if the set declares a key the node does not hold.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from hypermesh.transport.identity import IdentityError, read_private_file, write_private_file

ML_DSA_KEY_FILE = "consensus-ml-dsa-65.key"


class ValidatorKeyError(Exception):
    """A consensus key file that cannot be used (unreadable, malformed, readable by others)."""


def ml_dsa_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / ML_DSA_KEY_FILE


def load_ml_dsa_key(data_dir: Path) -> MLDSA65PrivateKey | None:
    """The node's ML-DSA-65 key, or None if it has none; ValidatorKeyError if the file is unusable."""
    path = ml_dsa_key_path(data_dir)
    try:
        pem = read_private_file(path)
    except FileNotFoundError:
        return None
    except IdentityError as exc:  # readable by other users
        raise ValidatorKeyError(str(exc)) from None
    except OSError as exc:
        raise ValidatorKeyError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValidatorKeyError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, MLDSA65PrivateKey):
        raise ValidatorKeyError(f"{path} holds a {type(key).__name__}, not an ML-DSA-65 key")
    return key


def init_ml_dsa_key(data_dir: Path) -> tuple[MLDSA65PrivateKey, bool]:
    """The node's ML-DSA-65 key, created if it has none: (key, created)."""
    key = load_ml_dsa_key(data_dir)
    if key is not None:
        return key, False
    key = MLDSA65PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private_file(ml_dsa_key_path(data_dir), pem)
    return key, True


__all__ = ["ML_DSA_KEY_FILE", "ValidatorKeyError", "init_ml_dsa_key", "load_ml_dsa_key", "ml_dsa_key_path"]
