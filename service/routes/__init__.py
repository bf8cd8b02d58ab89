"""Thin HTTP endpoints: they translate between HTTP and the registry/retrieval layer, nothing more."""
