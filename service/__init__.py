"""fastweights-serve: the onnxruntime + FastAPI inference service. Never imports torch."""
