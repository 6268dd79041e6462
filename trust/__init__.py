"""HyperMesh trust layer (observations, attestations, global trust).

Not built yet: see the project's issues.
"""
