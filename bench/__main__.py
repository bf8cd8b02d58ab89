"""Run every benchmark available in this checkout, one after the other (``make bench``).

.venv/bin/python -m bench            # all of them
.venv/bin/python -m bench inference  # only those named
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# (module, what it measures). A module that is not in this checkout is skipped with a note.
BENCHMARKS = (
    ("bench.inference", "in-process inference: onnxruntime vs torch eager vs torch.compile"),
    ("bench.client_throughput", "REST batch scoring vs onnxruntime in-process"),
    ("bench.serving", "serving: overhead, dynamic batching, workers, peers (issue 7)"),
    ("bench.engine_sweep", "onnxruntime vs torch by batch size 1..1024 and by length bucket (issue 7)"),
    ("bench.memory_forms", "fast memory: matrix vs attention form as T grows (issue 7)"),
    ("bench.grpc_vs_http", "the V2 protocol over gRPC vs over HTTP: req/s, p50/p99, batch rows/s (issue 19)"),
    ("bench.bucket_sets", "length buckets: the cheapest set of each size over K 1..26, measured (issue 17)"),
    ("bench.grpc_variants", "gRPC server variants side by side: req/s, CPU per call (issue 19)"),
)
# Arguments `make bench` gives a module (default: none): the issue-7 benchmarks also draw docs/img/*.png.
ARGS: dict[str, list[str]] = {
    "bench.serving": [
        *("--parts", "overhead,batching,workers,peers", "--rounds", "3", "--plot", "docs/img/serving.png")
    ],
    "bench.engine_sweep": ["--plot", "docs/img/engine.png"],
    "bench.memory_forms": ["--plot", "docs/img/memory_forms.png"],
    "bench.grpc_vs_http": ["--stream"],
    # The baseline against the opt-in queue delay that lets unary gRPC calls share onnxruntime runs.
    "bench.grpc_variants": ["base:", "delay2:FWS_MAX_QUEUE_DELAY_MS=2"],
}


def main(argv: list[str] | None = None) -> int:
    wanted = set(sys.argv[1:] if argv is None else argv)
    status = 0
    for module, about in BENCHMARKS:
        short = module.rsplit(".", 1)[-1]
        if wanted and short not in wanted and module not in wanted:
            continue
        if importlib.util.find_spec(module) is None:
            print(f"== {module}: not in this checkout, skipped")
            continue
        print(f"== {module}: {about}", flush=True)
        code = importlib.import_module(module).main(ARGS.get(module, []))
        print(f"== {module}: exit {code}\n", flush=True)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
