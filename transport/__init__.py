"""HyperMesh transport layer."""
