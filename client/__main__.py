"""`fastweights-score`: score a file of sequences through one or more running servers.

    fastweights-score queries.jsonl -o answers.jsonl --url http://10.0.0.1:8000 --url http://10.0.0.2:8000
    fastweights-score queries.jsonl -o answers.jsonl --resume      # after an interruption
    fastweights-score queries.jsonl -o answers.jsonl --protocol grpc --url 10.0.0.1:8001   # V2 over gRPC

Exit codes: 0 every row answered; 1 finished, but some rows are errors (listed in the output and the
summary); 2 usage error (bad option, unreadable input, an output that exists without --resume/--overwrite);
3 the run failed before the end (servers unreachable after all retries, API key refused, unknown model) and
the output holds a whole, resumable prefix; 130 interrupted (also resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from client.inputs import FORMATS, InputError, Row, count_lines, open_text, read_rows
from client.outputs import (
    OUTPUT_FORMATS,
    OutputWriter,
    ResumeError,
    output_format_from_path,
    scan_for_resume,
)
from client.retry import RetryPolicy
from client.scorer import PROTOCOLS, RunFailed, ScoreConfig, Scorer, chunked, run_pipeline
from client.stats import Stats

EXIT_OK = 0
EXIT_ROW_ERRORS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastweights-score",
        description="Batch scoring through the fastweights-serve REST API, or the V2 protocol over HTTP or "
        "gRPC (resumable, N requests in flight, several servers round-robin, retries with backoff).",
        epilog="Exit codes: 0 all rows answered, 1 some rows are errors, 2 usage error, 3 run failed "
        "(resumable), 130 interrupted (resumable). See docs/client.md.",
    )
    p.add_argument("input", help="input file (JSONL, CSV or text, one sequence a line); '-' for stdin")
    p.add_argument(
        "-o", "--output", default="-", help="output file (JSONL or CSV by extension); default stdout"
    )
    p.add_argument("--input-format", choices=FORMATS, help="default: from the extension, else sniffed")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, help="default: csv for *.csv, else jsonl")
    p.add_argument(
        "--url",
        action="append",
        help="server base URL; repeat (or comma-separate) for replicas, used round-robin "
        "(default: $FWS_URL or http://127.0.0.1:8000); with --protocol grpc the gRPC port as host:port or "
        "grpc://host:port, plain text (default: $FWS_GRPC_URL or 127.0.0.1:8001)",
    )
    p.add_argument("--model", help="model family to ask for (server default when omitted)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="rest",
        help="rest: the native /v1/retrieve/batch (default; the server validates the grammar); v2: token "
        "tensors through /v2/models/<bucket>/infer, encoded here from the V2 metadata (no grammar check); "
        "grpc: the same tensors through the V2 gRPC service's ModelInfer (raw contents; the fastest for "
        "large files, see docs/client.md)",
    )
    p.add_argument("--chunk-size", type=int, default=512, help="rows per request (server max: 1024 default)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--max-attempts", type=int, default=12, help="attempts per request before the run fails")
    p.add_argument("--backoff-base", type=float, default=0.1, help="first retry wait, seconds (doubles)")
    p.add_argument("--backoff-cap", type=float, default=10.0, help="longest retry wait, seconds")
    p.add_argument("--api-key", default=os.environ.get("FWS_API_KEY"), help="default: $FWS_API_KEY")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--sync-interval", type=float, default=1.0, help="fsync the output at most this often (s)")
    p.add_argument("--summary-json", help="also write the summary as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary on stderr")
    return p


def _urls(values: list[str] | None, protocol: str = "rest") -> list[str]:
    if protocol == "grpc":
        from client.grpc_v2 import DEFAULT_TARGET, target_of

        raw = values or [os.environ.get("FWS_GRPC_URL", DEFAULT_TARGET)]
        return [target_of(u.strip()) for v in raw for u in v.split(",") if u.strip()]
    raw = values or [os.environ.get("FWS_URL", "http://127.0.0.1:8000")]
    urls = [u.strip() for v in raw for u in v.split(",") if u.strip()]
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {u!r}")
    return urls


def _skip_done(rows: Iterator[Row], last_line: int) -> Iterator[Row]:
    for row in rows:
        if row.line > last_line:
            yield row


async def _score(
    rows: Iterator[Row],
    writer: OutputWriter,
    stats: Stats,
    config: ScoreConfig,
    progress: Any,
    start_line: int,
) -> int:
    scored = 0
    last_line = start_line

    def write(records: list[dict[str, Any]]) -> None:
        nonlocal scored, last_line
        writer.write(records)
        before = stats.errors
        stats.add_all(records)
        scored += len(records)
        if progress is not None and records:
            progress.update(records[-1]["line"] - last_line)
            if stats.errors != before or stats.retries:
                progress.set_postfix(errors=stats.errors, retries=stats.retries, refresh=False)
        if records:
            last_line = records[-1]["line"]

    if config.protocol == "grpc":
        from client.grpc_v2 import GrpcV2Client

        async with GrpcV2Client(
            config.urls, stats, config.policy, config.timeout, config.api_key
        ) as channels:
            scorer = Scorer(config, None, stats, grpc=channels)
            await scorer.prepare()
            await run_pipeline(
                chunked(rows, config.chunk_size), scorer.score_chunk, write, config.concurrency
            )
        return scored
    limits = httpx.Limits(
        max_connections=config.concurrency * 2, max_keepalive_connections=config.concurrency * 2
    )
    # Plain-http servers need no TLS context: skipping it saves loading the CA bundle at start-up.
    verify = any(u.startswith("https://") for u in config.urls)
    async with httpx.AsyncClient(timeout=config.timeout, limits=limits, verify=verify) as http:
        scorer = Scorer(config, http, stats)
        await scorer.prepare()
        await run_pipeline(chunked(rows, config.chunk_size), scorer.score_chunk, write, config.concurrency)
    return scored


def run_loop(main_coro: Any) -> Any:
    """`asyncio.run`, on uvloop when it is installed (it comes with uvicorn[standard]): its event loop and
    socket transports cost the client less CPU per request. Plain asyncio otherwise, same behaviour."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coro)
    return uvloop.run(main_coro)


def quiet_gc(threshold: int = 100_000) -> None:
    """Make the cyclic garbage collector rare: the rows, requests and records of a run hold no cycles, so
    reference counting frees them as they go (memory stays flat), yet every ~700 allocations the collector
    walked every live object, the imported modules included: ~1.5-2 us of client CPU per row. Freezing what
    exists now (imports, the parser) and collecting only every `threshold` allocations keeps it for the rare
    cycles (an exception's traceback on a retry) at a negligible cost."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        urls = _urls(args.url, args.protocol)
        if args.chunk_size < 1 or args.concurrency < 1 or args.max_attempts < 1:
            raise ValueError("--chunk-size, --concurrency and --max-attempts must be at least 1")
        if args.resume and args.output == "-":
            raise ValueError("--resume needs an output file (-o)")
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        out_fmt = args.output_format or output_format_from_path(args.output)
        exists = args.output != "-" and os.path.exists(args.output) and os.path.getsize(args.output) > 0
        if exists and not (args.resume or args.overwrite):
            raise ValueError(
                f"{args.output} exists: pass --resume to continue it or --overwrite to replace it"
            )
        stream = open_text(args.input)
    except (ValueError, OSError) as exc:
        print(f"fastweights-score: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    stats = Stats()
    last_line = 0
    try:
        if args.resume:
            point = scan_for_resume(args.output, out_fmt)
            stats = point.stats
            last_line = point.last_line
            say(
                f"resuming after input line {point.last_line} ({point.rows} rows already scored"
                + (
                    f", cut {point.dropped_bytes} bytes of a partial last row)"
                    if point.dropped_bytes
                    else ")"
                )
            )
        elif args.overwrite and args.output != "-":
            open(args.output, "wb").close()
        in_fmt, rows = read_rows(stream, args.input_format, args.input)
    except (ResumeError, InputError, OSError) as exc:
        print(f"fastweights-score: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    config = ScoreConfig(
        urls=urls,
        model=args.model,
        chunk_size=args.chunk_size,
        concurrency=args.concurrency,
        timeout=args.timeout,
        api_key=args.api_key,
        protocol=args.protocol,
        policy=RetryPolicy(max_attempts=args.max_attempts, base=args.backoff_base, cap=args.backoff_cap),
    )
    progress = None
    if not (args.quiet or args.no_progress):
        from tqdm import tqdm

        total = count_lines(args.input)
        progress = tqdm(
            total=total, initial=min(last_line, total or last_line), unit="rows", dynamic_ncols=True
        )

    quiet_gc()
    started = time.perf_counter()
    code = EXIT_OK
    failure: str | None = None
    writer = OutputWriter(args.output, out_fmt, sync_interval=args.sync_interval)
    try:
        todo = _skip_done(rows, last_line) if last_line else rows  # no filter layer per row on a fresh run
        run_loop(_score(todo, writer, stats, config, progress, last_line))
    except RunFailed as exc:
        code, failure = EXIT_FAILED, f"run failed: {exc}"
    except InputError as exc:
        code, failure = EXIT_USAGE, f"input failed: {exc}"
    except KeyboardInterrupt:
        code, failure = EXIT_INTERRUPTED, "interrupted"
    finally:
        writer.close()
        stream.close()
        if progress is not None:
            progress.close()
    scored = stats.rows - stats.resumed_rows
    elapsed = time.perf_counter() - started
    if code == EXIT_OK and stats.errors:
        code = EXIT_ROW_ERRORS
    summary = stats.to_dict(elapsed, scored)
    summary.update(exit_code=code, input_format=in_fmt, output=args.output, urls=urls)
    if failure:
        summary["failure"] = failure
    say(stats.render(elapsed, scored))
    if failure:
        print(f"fastweights-score: {failure}", file=sys.stderr)
        if args.output != "-":
            print(f"fastweights-score: continue with --resume -o {args.output}", file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
