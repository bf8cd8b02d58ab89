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
    ("bench.serving", "serving: overhead, dynamic batching, workers (issue 7)"),
)


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
        code = importlib.import_module(module).main([])
        print(f"== {module}: exit {code}\n", flush=True)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
