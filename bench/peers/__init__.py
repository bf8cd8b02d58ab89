"""Peer servers (BentoML, Ray Serve) on the same ONNX graphs, run from the `make bench-peers` venv."""
