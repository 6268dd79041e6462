"""One node's chain: the ledger, the consensus core and driver, and the ledger's services, on one host.

:func:`run_ledger_node` is what a node starts for ``--validator`` (and, with
``state_sync_from``, for a late join): it opens the SQLite consensus store in
``data_dir``, rebuilds the ledger from the decisions there (or, with an empty
store and ``state_sync_from``, fetches a certified snapshot and seeds the
store with the commit that certifies it), then runs on ``host``:

- the consensus core with the ledger as its application
  (:class:`~hypermesh.consensus.driver.ConsensusService`), its equivocation
  evidence pooled for proposals;
- transaction submission and relay (``/hm/ledger-tx/1.0.0``);
- proven queries (``/hm/ledger-query/1.0.0``);
- the outcomes of lock requests (``/hm/ledger-outcome/1.0.0``);
- snapshots for late joiners (``/hm/state-sync/1.0.0``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import trio

from hypermesh.transport.identity import Identity, PeerId

from .driver import ConsensusService
from .genesis import Genesis
from .ledger import Ledger
from .ledger_outcome import OutcomeService
from .ledger_query import QueryService
from .ledger_service import TransactionService
from .sqlite_store import SqliteConsensusStore
from .state_sync import SnapshotServer, fetch_snapshot
from .snapshot import read_base_state, write_base_state
from .store import SavedState
from .tendermint import TendermintConfig, TendermintCore
from .validators import ValidatorSet


# The state a node that joined by state sync started from (snapshot.write_base_state).
BASE_STATE_FILE = "ledger-base.state"


@dataclass
class LedgerNode:
    ledger: Ledger
    consensus: ConsensusService
    transactions: TransactionService
    snapshots: SnapshotServer
    outcomes: OutcomeService


def _fresh_signer_state(height: int) -> SavedState:
    """What the store holds for a height nothing was signed at yet."""
    return SavedState(height, 0, -1, None, -1, None, (0, -1, -1), ())


@contextlib.asynccontextmanager
async def run_ledger_node(host, genesis: Genesis, identity: Identity | None, data_dir: Path | str, *,
                          config: TendermintConfig = TendermintConfig(), snapshot_interval: int = 1_000,
                          state_sync_from: PeerId | None = None, trusted_validators: ValidatorSet | None = None,
                          clock: Callable[[], float] = time.time,
                          open_store: Callable[[Path | str], SqliteConsensusStore] = SqliteConsensusStore):
    """Run the chain on ``host`` until the block exits; yields the :class:`LedgerNode`.

    ``identity`` None: a node that follows without signing. ``trusted_validators``
    (default: the genesis set) certifies a state-sync snapshot. ``clock``
    stamps the node's proposals with block time and bounds others' (ledger.py).
    ``open_store`` opens the store in ``data_dir`` (a test harness may log what is signed)."""
    store = open_store(data_dir)
    base_path = Path(data_dir) / BASE_STATE_FILE
    try:
        if store.last_commit_height() == 0 and state_sync_from is not None:
            trusted = trusted_validators or Ledger(genesis).validators
            ledger, commit = await fetch_snapshot(host, state_sync_from, genesis, trusted)
            write_base_state(base_path, ledger.certified[0])  # before the store says we are past it
            store.save_commit(commit, _fresh_signer_state(commit.certificate.height + 1))
        elif base_path.exists():
            # Joined by state sync: the decisions on disk start after the base state.
            ledger = Ledger(genesis, state=read_base_state(base_path, genesis))
            ledger.catch_up(store)
        else:
            ledger = Ledger(genesis)
            ledger.catch_up(store)
        ledger.clock = clock
        core = TendermintCore(genesis.chain_id, ledger.validators, identity, ledger, store, config)
        consensus = ConsensusService(host, core)
        consensus.on_evidence.append(lambda event: ledger.add_evidence(event.evidence))
        snapshots = SnapshotServer(host, ledger, interval=snapshot_interval)
        consensus.on_commit.append(snapshots.on_commit)
        transactions = TransactionService(host, ledger)
        transactions.on_new.append(consensus.txs_available)  # an idle proposer proposes at once
        queries = QueryService(host, ledger)
        outcomes = OutcomeService(host, ledger)
        consensus.on_commit.append(outcomes.on_commit)
        snapshots.start()
        queries.start()
        outcomes.start()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(transactions.run)
                await nursery.start(consensus.run)
                yield LedgerNode(ledger, consensus, transactions, snapshots, outcomes)
                nursery.cancel_scope.cancel()
        finally:
            outcomes.stop()
            queries.stop()
            snapshots.stop()
    finally:
        store.close()


__all__ = ["LedgerNode", "run_ledger_node"]
