"""KServe's Python model server serving fastweights_t11 over V2 (REST), one worker.

    .venv-peers-kserve/bin/python -m bench.peers.kserve_server --port 8080

A `kserve.Model` (KServe's documented custom-model API: `load`, `predict`) on one onnxruntime session, in a
`kserve.ModelServer` with one worker. The Python server has no request batching of its own (KServe batches
in its Knative sidecar agent, absent here), so each request is one run. gRPC and the per-request latency log
are off: only REST is measured, and no server logs a line per request.
"""

from __future__ import annotations

import argparse
import logging
import sys

import kserve
from kserve import InferOutput, InferRequest, InferResponse

from bench.peers.v2_common import MODEL, run, session


class Retrieval(kserve.Model):
    def __init__(self) -> None:
        super().__init__(MODEL)
        self.load()

    def load(self) -> bool:
        self._session = session()
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        tokens = payload.inputs[0].as_numpy()  # (B, 11) int64
        logits = run(self._session, tokens)
        output = InferOutput("logits", list(logits.shape), "FP32")
        output.set_data_from_numpy(logits, binary_data=False)
        return InferResponse(payload.id or "", MODEL, [output], model_version="1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    server = kserve.ModelServer(
        http_port=args.port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    for name in ("uvicorn.access", "kserve.trace"):  # no line per request, as the service runs in the bench
        logging.getLogger(name).disabled = True
    server.start([Retrieval()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
