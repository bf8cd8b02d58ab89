"""MLServer (Seldon) serving fastweights_t11 over V2 with adaptive batching.

    .venv-peers-mlserver/bin/python -m bench.peers.mlserver_server --port 8080

A custom runtime (`OnnxRetrieval`, MLServer's documented way to serve a model it has no runtime for) on one
onnxruntime session. Configured as MLServer's docs advise for small, fast models: inference in the server
process itself (`parallel_workers: 0`, no inter-process hop to a worker pool) and adaptive batching
(`max_batch_size` 64, `max_batch_time` 1 ms), which merges concurrent V2 requests into one run. gRPC and the
metrics server are moved to free ports; only REST is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from bench.peers.v2_common import MODEL, run, session


class OnnxRetrieval(MLModel):
    async def load(self) -> bool:
        self._session = session()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tokens = NumpyCodec.decode_input(payload.inputs[0])  # (B, 11) int64; B > 1 when batched
        logits = run(self._session, tokens)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("logits", logits)],
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-batch-time", type=float, default=0.001, help="seconds")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
    settings = {
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": 0,
        "debug": False,  # no access log line per request (the service runs without one in the bench too)
    }
    model = {
        "name": MODEL,
        "implementation": "bench.peers.mlserver_server.OnnxRetrieval",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_batch_time,
        "parameters": {"version": "1"},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    os.execv(mlserver, [mlserver, "start", str(folder)])


if __name__ == "__main__":
    sys.exit(main())
