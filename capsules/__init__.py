"""HyperMesh capsules layer."""
