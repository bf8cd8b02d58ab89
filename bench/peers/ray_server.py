"""Ray Serve (@serve.batch) serving the repository's ONNX graphs: POST /v1/retrieve {"sequence": "..."}.

    .venv-peers/bin/python -m bench.peers.ray_server --port 8000

One replica; @serve.batch coalesces up to 256 concurrent calls, waiting at most 2 ms for a fuller batch.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from bench.peers.common import Predictor


@serve.deployment(max_ongoing_requests=1024)
class Retrieval:
    def __init__(self) -> None:
        self.predictor = Predictor()

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.002)
    async def predict(self, sequences: list[str]) -> list[dict]:
        return self.predictor.predict(sequences)

    async def __call__(self, request: Request) -> JSONResponse:
        if request.url.path.endswith("/health"):
            return JSONResponse({"status": "ok"})
        body = await request.json()
        return JSONResponse(await self.predict(body["sequence"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Retrieval.bind(), route_prefix="/", blocking=False)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
