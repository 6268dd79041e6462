"""HyperMesh dht layer."""
