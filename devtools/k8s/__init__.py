"""A local single-node Kubernetes built from the package registries (see README.md)."""
