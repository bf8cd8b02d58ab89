"""Parity of the exported graphs with the training model (the reference), on generated sequences.

    python -m export.verify checkpoints/k26.pt --repository model_repository

For every bucket of the family: sequences from the task generator with every K that fits the bucket
(K uniform in 1..(T−3)/2, so short queries are left padded a lot), in batches of odd sizes (1, 7, 256 in
turn), through `Checkpoint.model()` in torch and through onnxruntime. Prints max |Δlogits|, argmax
agreement and max |Δmemory_attention| per bucket; raises `ParityError` (exit code 3) when any max |Δ| is
above the tolerance or any argmax differs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from contract import (
    DEFAULT_FAMILY,
    INPUT_TOKENS,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    ContractError,
    scan_repository,
)
from contract.stream import stream_model_name
from contract.vocab import max_pairs_for_length
from model.checkpoint import Checkpoint, file_sha256, load_checkpoint
from model.data import generate

DEFAULT_TOLERANCE = 1e-4
DEFAULT_SEQUENCES = 10_000
DEFAULT_BATCH_SIZES = (1, 7, 256)


class VerificationError(RuntimeError):
    """The exported repository cannot be trusted to compute what the checkpoint computes."""


class ParityError(VerificationError):
    """onnxruntime and torch disagree beyond the tolerance (or on an answer)."""

    def __init__(self, message: str, report: VerificationReport):
        super().__init__(message)
        self.report = report


@dataclass
class BucketReport:
    name: str
    seq_len: int
    sequences: int = 0
    batches: int = 0
    max_abs_logits: float = 0.0
    max_abs_attention: float = 0.0
    argmax_mismatches: int = 0
    onnx_accuracy: float = 0.0  # against the generator's targets, for information
    num_pairs: list[int] = field(default_factory=list)  # the K values covered

    @property
    def argmax_agreement(self) -> float:
        return 1.0 - self.argmax_mismatches / max(1, self.sequences)


@dataclass
class VerificationReport:
    tolerance: float
    buckets: list[BucketReport]
    source_matches: bool

    @property
    def sequences(self) -> int:
        return sum(b.sequences for b in self.buckets)

    @property
    def max_abs_logits(self) -> float:
        return max((b.max_abs_logits for b in self.buckets), default=0.0)

    @property
    def max_abs_attention(self) -> float:
        return max((b.max_abs_attention for b in self.buckets), default=0.0)

    @property
    def argmax_mismatches(self) -> int:
        return sum(b.argmax_mismatches for b in self.buckets)

    @property
    def ok(self) -> bool:
        return (
            self.max_abs_logits <= self.tolerance
            and self.max_abs_attention <= self.tolerance
            and self.argmax_mismatches == 0
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "sequences": self.sequences,
            "max_abs_logits": self.max_abs_logits,
            "max_abs_attention": self.max_abs_attention,
            "argmax_mismatches": self.argmax_mismatches,
            "source_matches": self.source_matches,
            "buckets": [asdict(b) | {"argmax_agreement": b.argmax_agreement} for b in self.buckets],
        }

    def format(self) -> str:
        lines = [
            f"{'model':<20}{'T':>4}{'K':>7}{'seqs':>8}{'max|Δlogits|':>14}{'argmax agree':>14}"
            f"{'max|Δattn|':>12}{'ORT acc':>9}"
        ]
        for b in self.buckets:
            ks = f"{min(b.num_pairs)}-{max(b.num_pairs)}" if b.num_pairs else "-"
            lines.append(
                f"{b.name:<20}{b.seq_len:>4}{ks:>7}{b.sequences:>8}{b.max_abs_logits:>14.2e}"
                f"{b.argmax_agreement:>14.4%}{b.max_abs_attention:>12.2e}{b.onnx_accuracy:>9.4f}"
            )
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(
            f"{verdict}: {self.sequences} sequences, max|Δlogits| {self.max_abs_logits:.2e}, "
            f"max|Δattention| {self.max_abs_attention:.2e}, {self.argmax_mismatches} argmax mismatches "
            f"(tolerance {self.tolerance:g})"
        )
        if not self.source_matches:
            lines.append("note: the graphs' source checkpoint hash differs from this checkpoint's")
        return "\n".join(lines)


def make_session(path: str | Path):  # -> onnxruntime.InferenceSession
    """A CPU session, with a ContractError naming the file when onnxruntime cannot load it."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ContractError(path, f"onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None


def verify_repository(
    checkpoint: str | Path | Checkpoint,
    repository: str | Path,
    family: str = DEFAULT_FAMILY,
    sequences: int = DEFAULT_SEQUENCES,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    raise_on_failure: bool = True,
    buckets: Sequence[int] | None = None,
) -> VerificationReport:
    """Compare every bucket of `family` (or only those of length in `buckets`: the ones exported from this
    checkpoint, when several checkpoints fill one family) with the checkpoint's model; `sequences` are split
    over the buckets."""
    from export.onnx_export import check_graph, load_onnx

    if isinstance(checkpoint, Checkpoint):
        ckpt, sha = checkpoint, None
    else:
        ckpt, sha = load_checkpoint(checkpoint), file_sha256(checkpoint)
    entries = [
        e
        for e in scan_repository(repository)
        if e.family == family and (buckets is None or e.seq_len in buckets)
    ]
    if not entries:
        wanted = "" if buckets is None else f" with buckets {sorted(buckets)}"
        raise VerificationError(f"{repository}: no models of family {family!r}{wanted}")
    reference = ckpt.model()
    per_bucket = -(-sequences // len(entries))
    reports, source_matches = [], True
    for index, entry in enumerate(entries):
        meta = check_graph(load_onnx(entry.model_path), entry.model_path)
        if sha is not None and meta.source_sha256 and meta.source_sha256 != sha:
            source_matches = False
        k_max = max_pairs_for_length(entry.seq_len)
        data = generate(per_bucket, 1, k_max, np.random.SeedSequence([seed, index]), length=entry.seq_len)
        session = make_session(entry.model_path)
        rep = BucketReport(entry.name, entry.seq_len, num_pairs=sorted(set(data.num_pairs.tolist())))
        correct = 0
        start = 0
        for size in itertools.cycle(batch_sizes):
            if start >= len(data):
                break
            chunk = data.tokens[start : start + size]
            start += len(chunk)
            with torch.inference_mode():
                ref_logits, ref_attn = (t.numpy() for t in reference(torch.from_numpy(chunk)))
            logits, attn = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: chunk})
            rep.max_abs_logits = max(rep.max_abs_logits, float(np.abs(logits - ref_logits).max()))
            rep.max_abs_attention = max(rep.max_abs_attention, float(np.abs(attn - ref_attn).max()))
            rep.argmax_mismatches += int((logits.argmax(-1) != ref_logits.argmax(-1)).sum())
            correct += int((logits.argmax(-1) == data.targets[start - len(chunk) : start]).sum())
            rep.sequences += len(chunk)
            rep.batches += 1
        rep.onnx_accuracy = correct / max(1, rep.sequences)
        reports.append(rep)
    report = VerificationReport(tolerance, reports, source_matches)
    if raise_on_failure and not report.ok:
        raise ParityError(
            f"{repository}: exported graphs disagree with the checkpoint\n{report.format()}", report
        )
    return report


def verify_family_stream(
    repository: str | Path, family: str, sequences: int, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0
):  # -> export.verify_stream.StreamReport
    """The family's stream model against its whole-sequence graphs (`export.verify_stream`)."""
    from contract.stream import stream_model_name
    from export.verify_stream import verify_stream

    entries = scan_repository(repository)
    stream = [e for e in entries if e.name == stream_model_name(family)]
    buckets = [e for e in entries if e.family == family]
    if not stream:
        raise VerificationError(f"{repository}: no stream model {stream_model_name(family)!r}")
    if not buckets:
        raise VerificationError(f"{repository}: no models of family {family!r}")
    return verify_stream(stream[0].model_path, buckets, sequences, tolerance, seed)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="the checkpoint the repository was exported from")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--family", default=DEFAULT_FAMILY)
    p.add_argument("--sequences", type=int, default=DEFAULT_SEQUENCES, help="in all, split over the buckets")
    p.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--buckets", help="only these bucket lengths, comma-separated (default: all of the family)"
    )
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    try:
        report = verify_repository(
            args.checkpoint,
            args.repository,
            args.family,
            args.sequences,
            [int(b) for b in args.batch_sizes.split(",")],
            args.tolerance,
            args.seed,
            raise_on_failure=False,
            buckets=[int(b) for b in args.buckets.split(",")] if args.buckets else None,
        )
    except (VerificationError, ContractError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    stream_ok = True
    if any(e.name == stream_model_name(args.family) for e in scan_repository(args.repository)):
        stream_report = verify_family_stream(
            args.repository, args.family, args.sequences, args.tolerance, args.seed
        )
        print(stream_report.format())
        stream_ok = stream_report.ok
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok and stream_ok else 3


if __name__ == "__main__":
    sys.exit(main())
