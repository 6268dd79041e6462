"""HyperMesh consensus layer (BFT ordering of stakes, slashing, payments and locks).

Not built yet: see the project's issues.
"""
