"""HyperMesh consensus layer: Tendermint-style BFT agreement among validators.

``validators`` (voting power, quorums, proposer rotation), ``wire``
(canonical messages and signatures), ``tendermint`` (the sans-IO core),
``store`` and ``sqlite_store`` (signer state and decisions), ``sim`` (the
deterministic simulator), ``driver`` (the trio driver on a transport host);
see docs/ARCHITECTURE.md.
"""
