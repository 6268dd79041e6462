"""Consensus signatures: Ed25519 against ML-DSA-65 validator keys, in one run.

Prints one JSON object. Per scheme (consensus/signing.py):

- ``sign_us`` / ``verify_us``: one precommit signed (``wire.sign_vote``) and
  one verified (the scheme's check, without the cache of verified votes),
  ``--votes`` times, each for another height (another message);
- ``vote_bytes``: a precommit as it travels (ML-DSA: version 2, the
  signature length-prefixed);
- ``certificates``: for each set size in ``--sizes`` (every validator in that
  scheme; ML-DSA-65 sets of at most ``MAX_ML_DSA_VALIDATORS``), the encoded
  commit certificate of every validator's precommit and the time to verify
  it (cache cleared first: what a node checking a commit from a peer pays);
- ``simulator_ms_per_height``: wall time per decided height of the
  deterministic simulator (``consensus/sim.py``, 4 validators, virtual
  network time, so the figure is the CPU the cores spend, signing and
  verifying included) for ``--heights`` heights.

    python bench/consensus_signing.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import check, machine, summary  # noqa: E402

from hypermesh.consensus.signing import Scheme, Signer, ml_dsa_key_from_seed, verify_signature  # noqa: E402
from hypermesh.consensus.sim import ConsensusSim  # noqa: E402
from hypermesh.consensus.validators import MAX_ML_DSA_VALIDATORS, Validator, ValidatorSet  # noqa: E402
from hypermesh.consensus.wire import (  # noqa: E402
    Kind,
    encode_certificate,
    encode_message,
    make_certificate,
    sign_vote,
    verify_certificate,
)
from hypermesh.transport.identity import Identity  # noqa: E402

CHAIN_ID = "bench-signing"
BLOCK_ID = hashlib.sha256(b"a block").digest()


def signers(scheme: Scheme, count: int) -> list[Signer]:
    def ml_dsa(i: int):
        return ml_dsa_key_from_seed(hashlib.sha256(b"bench-ml-dsa-%d" % i).digest())

    return [Signer(Identity.from_seed(b"bench-validator-%d" % i), ml_dsa(i) if scheme is Scheme.ML_DSA_65 else None)
            for i in range(count)]


def per_vote(signer: Signer, votes: int) -> dict:
    unchecked = verify_signature.__wrapped__  # the check itself, not the cache of verified votes
    key = signer.name if signer.consensus_key is None else signer.consensus_key.public_key
    sign_us, verify_us = [], []
    vote = None
    for height in range(1, votes + 1):
        started = time.perf_counter()
        vote = sign_vote(signer, CHAIN_ID, Kind.PRECOMMIT, height, 0, BLOCK_ID)
        signed = time.perf_counter()
        assert unchecked(signer.scheme, key, vote.signature, vote.sign_bytes(CHAIN_ID))
        sign_us.append((signed - started) * 1e6)
        verify_us.append((time.perf_counter() - signed) * 1e6)
    return {"sign_us": summary(sign_us), "verify_us": summary(verify_us), "signature_bytes": len(vote.signature),
            "vote_bytes": len(encode_message(vote))}


def certificate(scheme: Scheme, size: int, repeats: int) -> dict:
    members = signers(scheme, size)
    validators = ValidatorSet([Validator(s.name, 1, s.consensus_key) for s in members])
    cert = make_certificate([sign_vote(s, CHAIN_ID, Kind.PRECOMMIT, 1, 0, BLOCK_ID) for s in members], validators)
    verify_ms = []
    for _ in range(repeats):
        verify_signature.cache_clear()
        started = time.perf_counter()
        verify_certificate(cert, CHAIN_ID, validators)
        verify_ms.append((time.perf_counter() - started) * 1e3)
    return {"validators": size, "bytes": len(encode_certificate(cert)), "verify_ms": summary(verify_ms)}


def simulator_ms_per_height(scheme: Scheme, heights: int) -> float:
    verify_signature.cache_clear()
    sim = ConsensusSim(1, [1, 1, 1, 1], ml_dsa=frozenset(range(4)) if scheme is Scheme.ML_DSA_65 else frozenset())
    started = time.perf_counter()
    sim.start()
    if not sim.run_until_height(heights, 10.0 * heights):
        raise RuntimeError(f"the simulator decided no {heights} heights: {sim.describe()}")
    return round((time.perf_counter() - started) * 1e3 / heights, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer votes, small sets")
    parser.add_argument("--votes", type=int, default=None, help="votes signed and verified per scheme "
                                                                "(default 2000; quick 200)")
    parser.add_argument("--sizes", default=None, help="certificate set sizes, comma-separated "
                                                      "(default 4,7,100,128; quick 4,100)")
    parser.add_argument("--heights", type=int, default=None, help="simulated heights (default 50; quick 10)")
    args = parser.parse_args()
    votes = args.votes or (200 if args.quick else 2000)
    sizes = [int(s) for s in (args.sizes or ("4,100" if args.quick else "4,7,100,128")).split(",")]
    heights = args.heights or (10 if args.quick else 50)
    repeats = 3 if args.quick else 10
    load_before = os.getloadavg()
    schemes = {}
    for scheme in Scheme:
        schemes[scheme.label] = {
            **per_vote(signers(scheme, 1)[0], votes),
            "certificates": [certificate(scheme, size, repeats) for size in sizes
                             if scheme is not Scheme.ML_DSA_65 or size <= MAX_ML_DSA_VALIDATORS],
            "simulator_ms_per_height": simulator_ms_per_height(scheme, heights),
        }
    ed25519, ml_dsa = schemes["ed25519"], schemes["ml-dsa-65"]
    largest = max((c for c in ml_dsa["certificates"]), key=lambda c: c["validators"])
    checks = [
        check("ml_dsa_65_verify_p50_us", ml_dsa["verify_us"]["p50"], "us", "< 1000 (a vote per validator per step)",
              ed25519["verify_us"]["p50"], ml_dsa["verify_us"]["p50"] / ed25519["verify_us"]["p50"],
              ml_dsa["verify_us"]["p50"] < 1000),
        check("ml_dsa_65_sign_p50_us", ml_dsa["sign_us"]["p50"], "us", "< 5000",
              ed25519["sign_us"]["p50"], ml_dsa["sign_us"]["p50"] / ed25519["sign_us"]["p50"],
              ml_dsa["sign_us"]["p50"] < 5000),
        check(f"ml_dsa_65_certificate_bytes_n{largest['validators']}", largest["bytes"], "bytes",
              "< 512 KiB (half a block)", None, None, largest["bytes"] < 512 * 1024),
    ]
    print(json.dumps({
        "bench": "consensus_signing", "quick": args.quick, "votes": votes, "heights": heights,
        "machine": {**machine(), "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "schemes": schemes, "checks": checks,
    }))


if __name__ == "__main__":
    main()
