"""HyperMesh consensus layer: Tendermint-style BFT agreement among validators.

``validators`` (voting power, quorums, proposer rotation), ``wire``
(canonical messages and signatures); see docs/ARCHITECTURE.md.
"""
