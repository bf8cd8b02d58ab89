"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (KServe V2 + Triton's extensions)
and `grpc.health.v1.Health`, served by `python -m service` beside HTTP (server.py, servicer.py)."""
