"""Export a checkpoint into a Triton-style model repository, then verify it against the checkpoint.

    python -m export checkpoints/k26.pt --repository model_repository [--buckets 5,11,19,25]
        [--family fastweights] [--version 1] [--no-verify] [--stream-chunk 3 | --no-stream]
        [--source 19,27,55=checkpoints/other.pt ...]

`--source BUCKETS=CHECKPOINT` (repeatable) fills more buckets of the same family from other checkpoints
(e.g. long queries from a model trained on more pairs); each graph's metadata and config.pbtxt name its
source, and each source's buckets are verified against their own checkpoint.

Exit codes: 0 exported (and verified), 2 bad input (checkpoint, options), 3 verification failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contract import (
    DEFAULT_BUCKETS,
    DEFAULT_FAMILY,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_VERSION,
    ContractError,
)
from contract.stream import DEFAULT_CHUNK_LEN
from export.verify import DEFAULT_SEQUENCES, DEFAULT_TOLERANCE, ParityError, VerificationError


def _buckets(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"buckets must be comma-separated integers, got {text!r}") from None


def _source(text: str) -> tuple[Path, list[int]]:
    buckets, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"a source is BUCKETS=CHECKPOINT (e.g. 19,27=ckpt.pt), got {text!r}")
    return Path(path), _buckets(buckets)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by python -m model.train")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument(
        "--buckets",
        type=_buckets,
        default=list(DEFAULT_BUCKETS),
        help="sequence lengths T, one graph each (T = 2K+3; default %(default)s)",
    )
    p.add_argument(
        "--source",
        type=_source,
        action="append",
        default=[],
        metavar="BUCKETS=CHECKPOINT",
        help="more buckets of the family, from another checkpoint (repeatable)",
    )
    p.add_argument("--family", default=DEFAULT_FAMILY, help="model name prefix: <family>_t<T>")
    p.add_argument("--version", type=int, default=DEFAULT_VERSION)
    p.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="Triton's max_batch_size"
    )
    p.add_argument(
        "--dynamo", action="store_true", help="use the dynamo-based exporter instead of TorchScript"
    )
    p.add_argument(
        "--stream-chunk",
        type=int,
        default=DEFAULT_CHUNK_LEN,
        help="tokens per call of the stateful <family>_stream model (memory sessions; default %(default)s)",
    )
    p.add_argument("--no-stream", action="store_true", help="do not write the <family>_stream model")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against the checkpoint")
    p.add_argument("--verify-sequences", type=int, default=DEFAULT_SEQUENCES)
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from export.repository import check_buckets, export_sources
    from export.stream_repository import export_stream_model
    from export.verify import verify_repository
    from model.checkpoint import CheckpointError, file_sha256, load_checkpoint
    from model.config import UnknownModelKindError

    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        ckpt = load_checkpoint(args.checkpoint)
        sources = [(args.checkpoint, args.buckets), *args.source]
        graphs = export_sources(
            sources, args.repository, args.family, args.version, args.max_batch_size, args.dynamo
        )
        stream = None
        if not args.no_stream and ckpt.config.kind == "fast":
            stream = export_stream_model(
                ckpt,
                args.repository,
                max(check_buckets(args.buckets)),
                args.family,
                args.version,
                args.stream_chunk,
                args.max_batch_size,
                file_sha256(args.checkpoint),
            )
    except (CheckpointError, UnknownModelKindError, ContractError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"exported {args.checkpoint} ({ckpt.config.kind}, H={ckpt.config.hidden_size}) in "
        f"{time.perf_counter() - started:.1f} s:"
    )
    for g in graphs:
        print(f"  {g.path}  T={g.seq_len:<3} {g.describe()}, {g.size_bytes / 1024:.1f} KiB")
    if stream is not None:
        print(f"  {stream}  stream, C={args.stream_chunk}, {stream.stat().st_size / 1024:.1f} KiB")
    if args.no_verify:
        print("verification skipped (--no-verify)")
        return 0
    for path, buckets in sources:
        try:
            report = verify_repository(
                path,
                args.repository,
                args.family,
                args.verify_sequences,
                tolerance=args.tolerance,
                buckets=buckets if args.source else None,
            )
        except ParityError as exc:
            print(exc.report.format())
            print(
                f"error: verification failed: {exc.report.argmax_mismatches} argmax mismatches, "
                f"max|Δ| above {args.tolerance:g}",
                file=sys.stderr,
            )
            return 3
        except (VerificationError, ContractError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        print(report.format())
    if stream is not None:
        from export.verify import verify_family_stream

        stream_report = verify_family_stream(
            args.repository, args.family, args.verify_sequences, args.tolerance
        )
        print(stream_report.format())
        if not stream_report.ok:
            print("error: the stream model disagrees with the whole-sequence graphs", file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
