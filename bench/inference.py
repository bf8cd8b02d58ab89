"""In-process inference speed: onnxruntime (CPU) vs torch eager vs torch.compile, side by side in one run.

    .venv/bin/python -m bench.inference                       # checkpoints/default.pt, T=11, batch 1/32/256
    .venv/bin/python -m bench.inference --checkpoint ckpt.pt --seq-len 19 --batch-sizes 1,256 --threads 2
    .venv/bin/python -m bench.inference --threads 1 --clock cpu   # one core's CPU time: robust to a busy host
    .venv/bin/python -m bench.inference --two-cores --batch-sizes 1,256  # each engine's 2-core configurations

The machine is shared and noisy, so engines are timed in interleaved rounds (each engine once per round,
`--rounds` rounds) and each cell is the median round; the ratios compare numbers from the same rounds.

Engines:
  torch eager        `Checkpoint.model()`, the training model (the reference the export is verified against)
  torch eager/export the export module of `export.graph` (same function, graph-friendly form) in eager torch
  torch.compile      the training model through torch.compile (inductor), when it compiles here
  ort traced         the export module traced by torch.onnx (the shipped graph before export.builder)
  ort                the exported graph in onnxruntime, CPU provider, intra-op threads = --threads
  ort 1 thread       the same graph with one intra-op thread (no thread-pool hand-off: best at batch 1)
`--levers` also calls the shipped graph through a reused IOBinding and through `session._sess.run` (the
C++ binding that `session.run` calls after its Python-side checks): the calling convention.

Two cores (``--two-cores``, wall clock, every configuration of both engines in the same run): one call with
two threads (``torch.set_num_threads(2)`` / intra-op threads 2); one call with one thread; one call whose
batch is split in two halves run at once on two single-thread workers (two onnxruntime sessions, one
compiled torch model); and two whole batches in flight on two Python threads with one thread each. The
one-call configurations run in persistent worker threads (ThreadRunner), the same hand-off for both engines
("hand-off only" times it): torch's thread count and dynamo's recompile limit are per calling thread, and
torch.compile guards on the thread count, so no thread ever switches it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "default.pt"

Runner = Callable[[np.ndarray], object]


def _torch_runner(model, threads: int) -> Runner:
    import threading

    import torch
    import torch._dynamo.config

    local = threading.local()

    def run(tokens: np.ndarray) -> object:
        if not getattr(local, "ready", False):  # once per calling thread: both settings are per thread
            torch.set_num_threads(threads)  # OpenMP keeps the thread count per calling thread
            # torch.compile: one graph per (batch size, thread count), as dynamo guards on both; past
            # `recompile_limit` (8, a per-thread setting) graphs of one function it falls back to eager
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            local.ready = True
        with torch.inference_mode():
            return model(torch.from_numpy(tokens))

    return run


class ThreadRunner:
    """Runs every call of `runner` in one persistent worker thread (the caller waits for the result).

    In ``--two-cores`` every configuration of both engines is called this way, so each pays the same
    hand-off and each OS thread keeps one thread count for its whole life: torch's thread count is per
    calling thread (OpenMP), and torch.compile guards on it, so switching it in one thread recompiles.
    """

    def __init__(self, runner: Runner):
        import queue
        import threading

        self.runner = runner
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            tokens = self._jobs.get()
            if tokens is None:
                return
            try:
                self._done.put(self.runner(tokens))
            except BaseException as exc:  # handed back to the caller
                self._done.put(exc)

    def submit(self, tokens: np.ndarray) -> None:
        self._jobs.put(tokens)

    def result(self) -> object:
        out = self._done.get()
        if isinstance(out, BaseException):
            raise out
        return out

    def __call__(self, tokens: np.ndarray) -> object:
        self.submit(tokens)
        return self.result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


class SplitRunner:
    """One call whose batch is split in two halves that run at the same time on two single-thread workers
    (two ThreadRunners), the results concatenated back in order. What a server could do with one large
    batch on two cores when one call cannot use them (onnxruntime's nodes are too small to split across
    intra-op threads)."""

    def __init__(self, first: Runner, second: Runner):
        self.workers = (ThreadRunner(first), ThreadRunner(second))

    def __call__(self, tokens: np.ndarray) -> object:
        if len(tokens) < 2:
            return self.workers[0](tokens)
        half = (len(tokens) + 1) // 2
        self.workers[0].submit(tokens[:half])
        self.workers[1].submit(tokens[half:])
        head, tail = self.workers[0].result(), self.workers[1].result()
        pairs = zip(head, tail, strict=True)  # type: ignore[call-overload]  # runners return sequences
        return [np.concatenate([np.asarray(a), np.asarray(b)]) for a, b in pairs]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def _ort_runner(path: Path, threads: int, spinning: bool = True, call: str = "run") -> Runner:
    """An onnxruntime session's call. call: "run" (`session.run`, public), "iobinding" (a reused IOBinding,
    public), "private" (`session._sess.run`, the C++ binding `run` wraps after its Python-side checks)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if call == "iobinding":  # per call: bind the input and unallocated CPU outputs (batch varies), run, copy
        binding = session.io_binding()

        def run_bound(tokens: np.ndarray) -> object:
            binding.bind_cpu_input("tokens", tokens)
            for name in names:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        return run_bound
    if call == "private":
        inner = session._sess

        def run_private(tokens: np.ndarray) -> object:
            return inner.run(names, {"tokens": tokens}, None)

        return run_private

    def run(tokens: np.ndarray) -> object:
        return session.run(names, {"tokens": tokens})

    return run


def _compile(model, seq_len: int) -> Runner:
    """torch.compile (inductor) of `model`, compiled once here; raises when it cannot compile."""
    import torch
    import torch._dynamo.config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)  # see _torch_runner
    compiled = torch.compile(model, dynamic=False)
    sample = np.zeros((2, seq_len), dtype=np.int64)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        compiled(torch.from_numpy(sample))
    return compiled


def build_engines(
    checkpoint: Path,
    seq_len: int,
    threads: int,
    compile_: bool,
    workdir: Path,
    dynamo: bool = False,
    two_cores: bool = False,
) -> tuple[dict[str, Runner], dict[str, str]]:
    """The engines to compare, all computing the same function of the same weights, and notes on each.

    two_cores: only torch.compile and the shipped graph, each in its one-call 2-core configurations (two
    threads, one thread, the batch split over two single-thread workers); see the module docstring.
    """
    import torch

    from export.graph import export_module
    from export.onnx_export import export_bucket
    from model.checkpoint import file_sha256, load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    reference = ckpt.model()
    graph = export_bucket(ckpt, seq_len, workdir / "model.onnx", "bench", file_sha256(checkpoint), dynamo)
    notes = {
        "graph": f"{graph.describe()}, {graph.size_bytes / 1024:.1f} KiB, "
        f"{ckpt.config.kind} H={ckpt.config.hidden_size} T={seq_len}"
    }
    engines: dict[str, Runner] = {}
    if not two_cores:
        engines["torch eager"] = _torch_runner(reference, threads)
        engines["torch eager/export"] = _torch_runner(export_module(reference, seq_len), threads)
    if compile_:
        try:
            compiled = _compile(reference, seq_len)
            engines["torch.compile"] = _torch_runner(compiled, threads)
            if two_cores:  # every configuration in its own worker thread(s): see ThreadRunner
                engines["torch.compile"] = ThreadRunner(_torch_runner(compiled, 2))
                engines["torch.compile 1 thread"] = ThreadRunner(_torch_runner(compiled, 1))
                engines["torch.compile split 2×1"] = SplitRunner(
                    _torch_runner(compiled, 1), _torch_runner(compiled, 1)
                )
        except Exception as exc:  # inductor needs a C++ toolchain; say why it is missing
            notes["torch.compile"] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if two_cores:
        engines["ort"] = ThreadRunner(_ort_runner(graph.path, 2))
        engines["ort 1 thread"] = ThreadRunner(_ort_runner(graph.path, 1))
        engines["ort split 2×1"] = SplitRunner(_ort_runner(graph.path, 1), _ort_runner(graph.path, 1))
        engines["hand-off only"] = ThreadRunner(lambda tokens: tokens)  # what the worker thread adds
        return engines, notes
    if ckpt.config.kind == "fast" and not dynamo:  # the graph before export.builder, side by side
        traced = export_bucket(ckpt, seq_len, workdir / "traced.onnx", "bench", traced=True)
        notes["traced graph"] = f"{traced.describe()}, {traced.size_bytes / 1024:.1f} KiB"
        engines["ort traced"] = _ort_runner(traced.path, threads)
    engines["ort"] = _ort_runner(graph.path, threads)
    if threads != 1:
        engines["ort 1 thread"] = _ort_runner(graph.path, 1)
    return engines, notes


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def concurrent_throughput(
    path: Path | list[Runner], tokens: np.ndarray, workers: int, seconds: float, repeats: int = 3
) -> float:
    """Sequences/s (wall clock, median of `repeats`) of `workers` runners with one thread each, each
    running whole batches in its own Python thread (onnxruntime and torch release the GIL while they run).

    `path`: an ONNX file (one onnxruntime session with one intra-op thread per worker), or the runners
    themselves (e.g. one torch runner with one thread, shared by the workers). How a server with several
    batches in flight uses several cores.
    """
    import threading

    runners = [_ort_runner(path, 1) for _ in range(workers)] if isinstance(path, Path) else list(path)
    runners = (runners * workers)[:workers]
    for run in runners:  # warm-up in another thread, as the workers run (torch: thread count per thread)
        warm = threading.Thread(target=run, args=(tokens,))
        warm.start()
        warm.join()
    rates = []
    for _ in range(repeats):
        counts = [0] * workers
        stop = time.perf_counter() + seconds

        def loop(i: int, counts: list[int] = counts, stop: float = stop) -> None:
            while time.perf_counter() < stop:
                runners[i](tokens)
                counts[i] += 1

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts) * len(tokens) / (time.perf_counter() - start))
    return statistics.median(rates)


def build_lever_engines(
    checkpoint: Path, seq_len: int, threads: int, workdir: Path
) -> tuple[dict[str, Runner], dict[str, str]]:
    """onnxruntime on graphs that differ in one lever each, for docs/export.md (``--levers``)."""
    import dataclasses

    import onnx
    import torch

    from export.onnx_export import _declare_output_shapes as declare_shapes
    from export.onnx_export import all_nodes, export_bucket, ort_optimize, trace_to_onnx
    from model.checkpoint import Checkpoint, load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    engines: dict[str, Runner] = {}
    notes: dict[str, str] = {}

    def add(
        name: str,
        proto: onnx.ModelProto,
        threads_: int | None = None,
        spinning: bool = True,
        call: str = "run",
        max_batch: int | None = None,
    ) -> None:
        path = workdir / f"{len(engines)}.onnx"
        onnx.save(proto, str(path))
        fused = ort_optimize(proto, "all")
        size = path.stat().st_size // 1024
        nodes, fused_nodes = len(all_nodes(proto.graph)), len(all_nodes(fused.graph))
        notes[name] = f"{nodes} nodes ({fused_nodes} fused; If branches added up), {size} KiB"
        run = _ort_runner(path, threads if threads_ is None else threads_, spinning, call)
        if max_batch is not None:
            run.max_batch = max_batch  # type: ignore[attr-defined]
        engines[name] = run

    def traced_as_is(model: torch.nn.Module) -> onnx.ModelProto:
        """The training module itself (Gather + Linear input, mask blend, per-step weight updates)."""
        import io
        import warnings

        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.ones(3, seq_len, dtype=torch.int64),),
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file-like objects too
                dynamo=False,
                opset_version=17,
                input_names=["tokens"],
                output_names=["logits", "memory_attention"],
                dynamic_axes={n: {0: "batch"} for n in ("tokens", "logits", "memory_attention")},
            )
        proto = onnx.load_from_string(buf.getvalue())
        declare_shapes(proto, seq_len, ckpt.config.num_classes)
        return proto

    if ckpt.config.kind == "fast":
        matrix = Checkpoint(dataclasses.replace(ckpt.config, memory_form="matrix"), ckpt.state_dict)
        add("training module, matrix form", traced_as_is(matrix.model()))
        attention = Checkpoint(dataclasses.replace(ckpt.config, memory_form="attention"), ckpt.state_dict)
        add("training module, attention form", traced_as_is(attention.model()))
    add("export module, dynamo=True", trace_to_onnx(ckpt.model(), seq_len, dynamo=True))
    traced = export_bucket(ckpt, seq_len, workdir / "traced.onnx", "bench", traced=True)
    add("export module, traced (before)", onnx.load(str(traced.path)))
    if ckpt.config.kind == "fast":
        from bench.graph_forms import build_graph as build_fast_weights_graph
        from model.fastweights import FastWeightsRNN

        model = cast(FastWeightsRNN, ckpt.model())
        add("built, few-nodes form only", build_fast_weights_graph(model, seq_len, form="few-nodes"))
        for form in ("single-row", "single-row-matrix", "single-row-windows"):
            add(f"built, {form} form only", build_fast_weights_graph(model, seq_len, form), max_batch=1)
        add("built, wide form only", build_fast_weights_graph(model, seq_len, form="wide"))
        before = build_fast_weights_graph(model, seq_len, small_form="few-nodes")
        add("If(few-nodes ≤ 3, wide) (before)", before)
        add(
            "If(single-row, wide) (before)", build_fast_weights_graph(model, seq_len, small_form="single-row")
        )
        matrix = build_fast_weights_graph(model, seq_len, small_form="single-row-matrix")
        add("If(single-row-matrix, wide)", matrix)
    shipped = export_bucket(ckpt, seq_len, workdir / "shipped.onnx", "bench")
    shipped_proto = onnx.load(str(shipped.path))
    add("shipped", shipped_proto)
    if threads != 1:
        add("shipped, 1 thread", shipped_proto, threads_=1)
    add("shipped, no spinning", shipped_proto, spinning=False)
    add("shipped, IOBinding", shipped_proto, call="iobinding")
    add("shipped, session._sess.run", shipped_proto, call="private")
    return engines, notes


def build_bucket_engines(
    repository: Path, threads: int, prefix: str = ""
) -> tuple[dict[str, Runner], dict[str, str]]:
    """One onnxruntime session per bucket of a repository, all fed the same queries left padded to their T.

    What a query pays for the PAD steps of a longer bucket (``--buckets-of``; run it with --seq-len 5 so
    the queries have one pair and fit every bucket). `prefix` starts every engine's name (``--baseline``).
    """
    from contract import scan_repository

    engines: dict[str, Runner] = {}
    notes: dict[str, str] = {}
    for entry in scan_repository(repository):
        if entry.config.stateful:
            continue  # the stream model of memory sessions takes state inputs, not a bucket's tokens
        session = _ort_runner(entry.model_path, threads)
        padded: dict[int, np.ndarray] = {}

        def run(
            tokens: np.ndarray, session: Runner = session, T: int = entry.seq_len, cache=padded
        ) -> object:
            key = id(tokens)
            if key not in cache:
                cache[key] = np.pad(tokens, ((0, 0), (T - tokens.shape[1], 0)))  # PAD id 0 on the left
            return session(cache[key])

        engines[f"{prefix}{entry.name} (T={entry.seq_len})"] = run
        notes[prefix + entry.name] = str(entry.model_path)
    return engines, notes


def pair_with_baseline(after: dict[str, Runner], before: dict[str, Runner]) -> dict[str, Runner]:
    """Each "before" bucket right ahead of the same-named bucket of the repository measured (then the rest):
    the two are timed in the same rounds, one after the other."""
    out: dict[str, Runner] = {}
    for name, run in after.items():
        twin = next((b for b in before if b.endswith(" " + name)), None)
        if twin is not None:
            out[twin] = before[twin]
        out[name] = run
    for name, run in before.items():
        out.setdefault(name, run)
    return out


def time_engines(
    engines: dict[str, Runner],
    inputs: dict[int, np.ndarray],
    rounds: int,
    round_seconds: float,
    clock: str = "wall",
) -> dict[str, dict[int, float]]:
    """Median seconds per call for every (engine, batch size), from interleaved rounds.

    clock "cpu" counts this process's CPU time (all its threads) instead of wall time: on a shared, loaded
    machine it ignores the time the process waits for a core, which wall time cannot. With more than one
    thread it also counts threads that spin while waiting for work, so use it with --threads 1.
    """
    now = CLOCKS[clock]
    samples: dict[str, dict[int, list[float]]] = {e: {b: [] for b in inputs} for e in engines}
    for batch, tokens_ in inputs.items():
        tokens = tokens_
        # an engine with a `max_batch` (a graph of a fixed batch of 1) is skipped at larger batches (NaN)
        takes = {n: r for n, r in engines.items() if batch <= getattr(r, "max_batch", batch)}
        for name in engines.keys() - takes.keys():
            samples[name][batch].append(float("nan"))
        for run in takes.values():  # warm-up (and compile for every shape torch.compile specialises on)
            for _ in range(3):
                run(tokens)
        calls = {}
        for name, run in takes.items():  # calls per round so that a round takes ~round_seconds
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < 0.05:
                run(tokens)
                n += 1
            calls[name] = max(1, int(n * round_seconds / (time.perf_counter() - start)))
        for _ in range(rounds):
            for name, run in takes.items():
                start = now()
                for _ in range(calls[name]):
                    run(tokens)
                samples[name][batch].append((now() - start) / calls[name])
    return {e: {b: statistics.median(v) for b, v in per.items()} for e, per in samples.items()}


def format_table(results: dict[str, dict[int, float]], baseline: str = "torch eager") -> str:
    """µs per call, sequences/s and speed-up over `baseline` (>1: faster) per engine and batch size."""
    batches = sorted(next(iter(results.values())))
    width = max(20, *(len(n) + 2 for n in results))
    label = "×" + ("shipped" if "shipped" in baseline else baseline.split()[-1].strip("()"))
    head = f"{'engine':<{width}}" + "".join(f"{'batch ' + str(b):>30}" for b in batches)
    lines = [head, f"{'':<{width}}" + "".join(f"{'µs/call   seq/s ' + label:>30}" for _ in batches)]
    for name, per in results.items():
        cells = []
        for b in batches:
            if per[b] != per[b]:  # NaN: the engine does not take this batch size
                cells.append(f"{'—':>12}{'—':>11}{'—':>7}")
                continue
            ratio = results[baseline][b] / per[b] if baseline in results else float("nan")
            cells.append(f"{per[b] * 1e6:>12.1f}{b / per[b]:>11,.0f}{ratio:>7.2f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--seq-len", type=int, default=11, help="bucket length T (11: K up to 4)")
    p.add_argument("--batch-sizes", default="1,32,256")
    p.add_argument(
        "--pairs",
        metavar="K or K1-K2",
        help="pairs per query (default: uniform in 1..the most that fit T); e.g. 4 at T=11: no PAD at all",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-seconds", type=float, default=0.3)
    p.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="cpu: process CPU time (see above)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--dynamo", action="store_true", help="export with the dynamo-based exporter")
    p.add_argument(
        "--buckets-of", type=Path, metavar="REPOSITORY", help="instead: every bucket of a repository"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="REPOSITORY",
        help="with --buckets-of: also every bucket of this repository (e.g. main's before a change), each "
        "timed in the same rounds as its namesake and labelled 'before'",
    )
    p.add_argument(
        "--levers",
        action="store_true",
        help="instead: onnxruntime on graph variants (training module vs export module, exporters, options)",
    )
    p.add_argument(
        "--concurrent",
        type=int,
        default=0,
        metavar="N",
        help="also: throughput of N onnxruntime sessions × 1 thread running batches in parallel (wall clock)",
    )
    p.add_argument(
        "--engines",
        metavar="NAMES",
        help="only the engines whose name contains one of these comma-separated strings (fewer engines per "
        "round: tighter A/B runs)",
    )
    p.add_argument(
        "--two-cores",
        action="store_true",
        help="instead: torch.compile and onnxruntime, each in every 2-core configuration (wall clock)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p


TWO_CORE_CONFIGS = {  # label -> engine-name suffix in build_engines(two_cores=True); "" = two threads
    "one call × 2 threads": "",
    "one call × 1 thread": " 1 thread",
    "one call, batch split over 2 × 1 thread": " split 2×1",
}


def two_core_report(
    results: dict[str, dict[int, float]], in_flight: dict[str, dict[int, float]], batches: list[int]
) -> str:
    """seq/s of each engine in each 2-core configuration, the best per engine, and the ratio of bests."""
    engines = [e for e in ("torch.compile", "ort") if e in results]
    rates: dict[str, dict[str, dict[int, float]]] = {e: {} for e in engines}
    for engine in engines:
        for label, suffix in TWO_CORE_CONFIGS.items():
            per = results[engine + suffix]
            rates[engine][label] = {b: b / per[b] for b in batches}
        rates[engine]["2 calls in flight × 1 thread each"] = in_flight.get(engine, {})
    width = 44
    head = f"{'seq/s, wall clock':<{width}}" + "".join(
        f"{f'{e} b={b}':>22}" for b in batches for e in engines
    )
    lines = [head]
    for label in rates[engines[0]]:
        cells = []
        for b in batches:
            for e in engines:
                rate = rates[e][label].get(b)
                cells.append(f"{rate:>22,.0f}" if rate else f"{'—':>22}")
        lines.append(f"{label:<{width}}" + "".join(cells))
    for b in batches:
        best = {}
        for e in engines:
            label, rate = max(((lb, r.get(b, 0.0)) for lb, r in rates[e].items()), key=lambda x: x[1])
            best[e] = (label, rate)
            lines.append(f"batch {b}: best {e}: {rate:,.0f} seq/s ({label})")
        if len(best) == 2:
            lines.append(
                f"batch {b}: ort best / torch.compile best = {best['ort'][1] / best['torch.compile'][1]:.2f}×"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: {args.checkpoint}: no such checkpoint (train one: make model)", file=sys.stderr)
        return 2
    from contract.vocab import max_pairs_for_length
    from model.data import generate

    batches = [int(b) for b in args.batch_sizes.split(",")]
    k_min, k_max = 1, max_pairs_for_length(args.seq_len)
    if args.pairs:
        first, _, last = args.pairs.partition("-")
        k_min, k_max = int(first), int(last or first)
    inputs = {b: generate(b, k_min, k_max, b, length=args.seq_len).tokens for b in batches}
    with tempfile.TemporaryDirectory() as tmp:
        if args.buckets_of:
            engines, notes = build_bucket_engines(args.buckets_of, args.threads)
            if args.baseline:
                before, before_notes = build_bucket_engines(args.baseline, args.threads, prefix="before ")
                engines, notes = pair_with_baseline(engines, before), {**before_notes, **notes}
        elif args.levers:
            engines, notes = build_lever_engines(args.checkpoint, args.seq_len, args.threads, Path(tmp))
        else:
            if args.two_cores:
                args.threads, args.clock = 2, "wall"
            engines, notes = build_engines(
                args.checkpoint,
                args.seq_len,
                args.threads,
                not args.no_compile,
                Path(tmp),
                args.dynamo,
                two_cores=args.two_cores,
            )
        if args.engines:
            wanted = [w.strip() for w in args.engines.split(",") if w.strip()]
            engines = {name: run for name, run in engines.items() if any(w in name for w in wanted)}
            if not engines:
                print(f"error: no engine matches --engines {args.engines!r}", file=sys.stderr)
                return 2
        results = time_engines(engines, inputs, args.rounds, args.round_seconds, args.clock)
        in_flight: dict[str, dict[int, float]] = {}
        if args.two_cores:  # both engines, alternating, 3 × (3 rounds' time, at most 1 s) each per batch size
            pools = {"ort": Path(tmp) / "model.onnx"}
            if "torch.compile 1 thread" in engines:  # the same compiled model, one thread per worker
                one = engines["torch.compile 1 thread"]
                pools["torch.compile"] = [one.runner]  # type: ignore[attr-defined,assignment]
            for batch, tokens in inputs.items():
                samples: dict[str, list[float]] = {e: [] for e in pools}
                seconds = min(1.0, 3 * args.round_seconds)
                for _ in range(3):
                    for engine, pool in pools.items():
                        samples[engine].append(concurrent_throughput(pool, tokens, 2, seconds, repeats=1))
                for engine, rates in samples.items():
                    in_flight.setdefault(engine, {})[batch] = statistics.median(rates)
        for run in engines.values():
            if isinstance(run, ThreadRunner | SplitRunner):
                run.close()
        concurrent: dict[int, float] = {}
        if args.concurrent and not (args.levers or args.buckets_of or args.two_cores):
            for batch, tokens in inputs.items():
                concurrent[batch] = concurrent_throughput(
                    Path(tmp) / "model.onnx", tokens, args.concurrent, 2.0
                )
    import onnxruntime
    import torch

    source = f"the buckets of {args.buckets_of}" if args.buckets_of else args.checkpoint.name
    print(
        f"in-process inference, {source}, K uniform in {k_min}..{k_max}, "
        f"threads={args.threads}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} (CPU "
        f"provider), median of {args.rounds} interleaved rounds, {args.clock} clock"
    )
    # the single-row graph skips a query's leading PAD steps, so say how long the timed queries are
    from model.data import PAD_ID

    lengths = []
    for b, tokens in inputs.items():
        real = (tokens != PAD_ID).sum(axis=1)
        lengths.append(f"batch {b}: {int(real[0])}" if b == 1 else f"batch {b}: {real.mean():.1f} on average")
    print(f"  real tokens per query (of T={args.seq_len}): " + ", ".join(lengths))
    for key, note in notes.items():
        print(f"  {key}: {note}")
    baseline = "shipped" if args.levers else "torch.compile" if args.two_cores else "torch eager"
    if args.buckets_of:
        baseline = next(iter(results))
    print(format_table(results, baseline))
    if args.buckets_of and args.baseline:
        for name in results:
            if name.startswith("before ") and name.removeprefix("before ") in results:
                after = results[name.removeprefix("before ")]
                ratios = ", ".join(f"batch {b}: {results[name][b] / after[b]:.2f}×" for b in batches)
                now = name.removeprefix("before ")
                print(f"{now}: before/after time per call (>1: faster now): {ratios}")
    for ref in ("torch eager", "torch.compile", "ort traced"):
        if ref in results and "ort" in results:
            ratios = ", ".join(f"batch {b}: {results[ref][b] / results['ort'][b]:.2f}×" for b in batches)
            print(f"ort vs {ref}: {ratios}")
    if args.two_cores:
        print("two cores, every configuration of each engine in this run:")
        print(two_core_report(results, in_flight, batches))
    for batch, rate in concurrent.items():
        single = batch / results.get("ort 1 thread", results["ort"])[batch]
        print(
            f"ort, {args.concurrent} sessions × 1 thread in parallel, batch {batch}: {rate:,.0f} seq/s "
            f"wall clock ({rate / single:.2f}× one session with one thread above)"
        )
    if args.json:
        payload = {
            "notes": notes,
            "threads": args.threads,
            "clock": args.clock,
            "seq_len": args.seq_len,
            "pairs": [k_min, k_max],
            "seconds_per_call": {e: {str(b): s for b, s in per.items()} for e, per in results.items()},
            "in_flight_seq_per_s": {e: {str(b): r for b, r in per.items()} for e, per in in_flight.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
