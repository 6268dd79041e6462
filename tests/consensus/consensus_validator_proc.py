"""A validator process for the kill -9 test: one real core on a real SQLite store.

Usage: consensus_validator_proc.py DATA_DIR SEED

The other three validators are played here, from keys every run shares, as
an adversary that equivocates: each incarnation of the process (SEED differs
per start) shows it different proposals and votes for the same heights and
rounds, so a restarted validator that forgot what it signed would sign
something else. Every message the core hands out is written to stdout as one
hex line, flushed, in the order the core produced it; the test kills the
process at random moments and checks that no two lines conflict.
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from consensus_testkit import CHAIN, CONFIG, IDENTITIES, KEYS, VALIDATORS, CountingApp, proposal, votes  # noqa: E402
from hypermesh.consensus.sqlite_store import SqliteConsensusStore  # noqa: E402
from hypermesh.consensus.tendermint import TendermintCore  # noqa: E402
from hypermesh.consensus.wire import Kind, RejectedMessage, encode_message  # noqa: E402

ME = 0
STEPS = 100_000


def main() -> None:
    data_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    store = SqliteConsensusStore(data_dir)
    core = TendermintCore(CHAIN, VALIDATORS, IDENTITIES[ME], CountingApp(b"proc-%d" % seed), store, CONFIG)
    others = [i for i in IDENTITIES if i is not IDENTITIES[ME]]
    now = 0.0
    core.start(now)
    for step in range(STEPS):
        for out in core.take_outbound():
            sys.stdout.write(encode_message(out.message).hex() + "\n")
        sys.stdout.flush()
        height, round_ = core.height, core.round
        values = [b"value %d/%d %s" % (height, round_, side) for side in (b"a", b"b")]
        # A new incarnation is first tempted to sign again where it stopped:
        # a timeout (votes nil), then a proposal, then a timeout.
        choice = (0.0, 0.4, 0.0)[step] if step < 3 else rng.random()
        if choice < 0.3:
            now = core.get_timer()
            core.handle_timer(now)
            continue
        if choice < 0.5:
            proposer = VALIDATORS.proposer(height, round_)
            if proposer != KEYS[ME]:
                messages = [proposal(height, round_, rng.choice(values))]
            else:
                messages = []
        else:
            kind = rng.choice([Kind.PREVOTE, Kind.PRECOMMIT])
            signers = rng.sample(others, rng.randint(1, 3))
            messages = votes(kind, height, round_, rng.choice(values + [None]), signers)
        for message in messages:
            try:
                core.handle_message(KEYS[1], message, now)
            except RejectedMessage:
                pass


if __name__ == "__main__":
    main()
