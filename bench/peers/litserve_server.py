"""LitServe (Lightning AI) serving fastweights_t11, taking and answering V2 JSON, one worker.

    .venv-peers-litserve/bin/python -m bench.peers.litserve_server --port 8080

LitServe has no V2 protocol of its own: a `LitAPI` decodes the V2 JSON body and encodes a V2 JSON answer, on
the route the other servers use. Configured as LitServe's docs advise for throughput: dynamic batching
(`max_batch_size` 64, `batch_timeout` 1 ms), one worker on the CPU, and its ZeroMQ queue (`fast_queue`).
"""

from __future__ import annotations

import argparse
import sys

import litserve as ls
import numpy as np

from bench.peers.v2_common import MODEL, response, run, session, tokens_of


class Retrieval(ls.LitAPI):
    def setup(self, device: str) -> None:
        self._session = session()

    def decode_request(self, request: dict) -> np.ndarray:
        return tokens_of(request)  # (1, 11)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)  # (B, 11)

    def predict(self, tokens: np.ndarray) -> np.ndarray:
        return run(self._session, tokens)  # (B, C)

    def unbatch(self, logits: np.ndarray) -> list[np.ndarray]:
        return [row[None, :] for row in logits]

    def encode_response(self, logits: np.ndarray) -> dict:
        return response(logits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-timeout", type=float, default=0.001, help="seconds")
    args = p.parse_args(argv)
    server = ls.LitServer(
        Retrieval(
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout,
            api_path=f"/v2/models/{MODEL}/infer",
        ),
        accelerator="cpu",
        workers_per_device=1,
        fast_queue=True,
    )
    server.run(
        port=args.port, host="127.0.0.1", num_api_servers=1, generate_client_file=False, log_level="warning"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
