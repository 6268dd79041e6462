"""HyperMesh consensus layer: Tendermint-style BFT agreement among validators.

``validators`` (voting power, quorums, proposer rotation), ``signing``
(the schemes validators sign with: Ed25519, ML-DSA-65), ``wire``
(canonical messages and signatures), ``tendermint`` (the sans-IO core),
``store`` and ``sqlite_store`` (signer state and decisions), ``sim`` (the
deterministic simulator), ``driver`` (the trio driver on a transport host);
see docs/ARCHITECTURE.md.
"""
