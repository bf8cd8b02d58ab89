"""BentoML (adaptive batching) serving the repository's ONNX graphs: POST /v1/retrieve {"sequences": [...]}.

    .venv-peers/bin/python -m bench.peers.bentoml_server --port 3000

A batchable BentoML API takes a list per call and its adaptive batcher concatenates the lists of concurrent
calls (max 256 rows, at most 10 ms of waiting), so a single query is sent as a list of one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import bentoml

from bench.peers.common import Predictor


@bentoml.service(workers=1, traffic={"timeout": 30})
class Retrieval:
    def __init__(self) -> None:
        self.predictor = Predictor()

    @bentoml.api(route="/v1/retrieve", batchable=True, max_batch_size=256, max_latency_ms=10_000)
    def retrieve(self, sequences: list[str]) -> list[dict]:
        return self.predictor.predict(sequences)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=3000)
    args = p.parse_args(argv)

    from bentoml._internal.service.loader import load  # noqa: F401  (import check)

    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "bench.peers.bentoml_server:Retrieval",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
