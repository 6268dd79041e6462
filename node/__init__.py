"""HyperMesh node layer."""
