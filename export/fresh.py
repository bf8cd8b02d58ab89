"""Fresh-data check of a served repository: every K, the graph that serves it and its source checkpoint.

    python -m export.fresh --repository model_repository --per-k 20000 --json runs/fresh.json
    python -m export.fresh --per-k 2000 --stress repeat3_odd,aabb,aabc,first,last

For each K in 1..(the largest bucket's): `per_k` sequences of exactly K pairs from a generator seed that no
training, validation, test or verification draw uses (FRESH_TAG), left padded to the bucket that serves K
(the smallest that fits, as the service picks it); answered by that bucket's onnxruntime graph and by the
checkpoint named in its metadata (found in --checkpoints, its sha256 checked) in torch. Reports both error
counts with 95% intervals and their disagreements. `--stress` adds the named stress sets (model.data).
Exit code 0 when every count is within --max-errors (default: no bound), 3 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from contract import (
    DEFAULT_FAMILY,
    INPUT_TOKENS,
    OUTPUT_LOGITS,
    ContractError,
    RepositoryEntry,
    scan_repository,
    smallest_bucket,
)
from contract.vocab import max_pairs_for_length, sequence_length
from export.onnx_export import check_graph, load_onnx
from export.verify import make_session
from model.checkpoint import Checkpoint, CheckpointError, file_sha256, load_checkpoint
from model.data import generate, stress_min_pairs
from model.evaluate import predict
from model.stats import error_interval, rate_with_interval

# First entry of every fresh seed: SeedSequence([FRESH_TAG, seed, K, set index]). The fixed splits use
# [2016|2017|2018, k_min, k_max], training streams [17000, seed, step, 0], export checks [seed, bucket].
FRESH_TAG = 20_261_206
SETS = ("random", "repeat3_odd", "aabb", "aabc", "first", "last")


@dataclass
class FreshRow:
    set: str
    k: int
    n: int
    bucket: str
    source: str
    ort_errors: int
    torch_errors: int
    disagreements: int
    ort_low: float
    ort_high: float


def _source_checkpoints(entries: list[RepositoryEntry], directory: Path) -> dict[str, tuple[str, Checkpoint]]:
    """Bucket name -> (file name, checkpoint) its graph was exported from (by metadata, sha256 checked)."""
    by_file: dict[str, Checkpoint] = {}
    out = {}
    for entry in entries:
        meta = check_graph(load_onnx(entry.model_path), entry.model_path)
        if not meta.source_checkpoint:
            raise ContractError(entry.model_path, "metadata name no source checkpoint (re-export it)")
        path = directory / meta.source_checkpoint
        if meta.source_checkpoint not in by_file:
            if meta.source_sha256 and file_sha256(path) != meta.source_sha256:
                raise ContractError(entry.model_path, f"{path} is not the checkpoint it was exported from")
            by_file[meta.source_checkpoint] = load_checkpoint(path)
        out[entry.name] = (meta.source_checkpoint, by_file[meta.source_checkpoint])
    return out


def check(
    repository: Path,
    checkpoints: Path,
    per_k: int,
    sets: list[str],
    seed: int = 0,
    family: str = DEFAULT_FAMILY,
    use_torch: bool = True,
) -> list[FreshRow]:
    entries = [e for e in scan_repository(repository) if e.family == family]
    if not entries:
        raise ContractError(repository, f"no models of family {family!r}")
    sources = _source_checkpoints(entries, checkpoints)
    models = {name: ckpt.model() for name, (_, ckpt) in sources.items()}
    sessions = {e.name: make_session(e.model_path) for e in entries}
    k_top = max(max_pairs_for_length(e.seq_len) for e in entries)
    rows = []
    for set_index, name in enumerate(sets):
        stress = None if name == "random" else name
        k_low = 1 if stress is None else stress_min_pairs(stress)
        for k in range(k_low, k_top + 1):
            entry = smallest_bucket(entries, family, sequence_length(k))
            assert entry is not None  # k <= k_top fits the largest bucket
            data_seed = np.random.SeedSequence([FRESH_TAG, seed, k, set_index])
            data = generate(per_k, k, k, data_seed, length=entry.seq_len, stress=stress)
            session = sessions[entry.name]
            ort_pred = np.concatenate(
                [
                    session.run([OUTPUT_LOGITS], {INPUT_TOKENS: data.tokens[i : i + 1024]})[0].argmax(-1)
                    for i in range(0, per_k, 1024)
                ]
            )
            torch_pred = predict(models[entry.name], data.tokens) if use_torch else ort_pred
            ort_errors = int((ort_pred != data.targets).sum())
            low, high = error_interval(ort_errors, per_k)
            rows.append(
                FreshRow(
                    name,
                    k,
                    per_k,
                    entry.name,
                    sources[entry.name][0],
                    ort_errors,
                    int((torch_pred != data.targets).sum()),
                    int((torch_pred != ort_pred).sum()),
                    low,
                    high,
                )
            )
            print(_format_row(rows[-1]), flush=True)
    return rows


def check_checkpoint(path: Path, per_k: int, sets: list[str], k_max: int, seed: int = 0) -> list[FreshRow]:
    """The same fresh sequences as `check`, answered by one checkpoint in torch alone (before it is served).

    Each K is padded to exactly 2K+3 tokens: left padding never changes the answer (model.fastweights).
    """
    model = load_checkpoint(path).model()
    rows = []
    for set_index, name in enumerate(sets):
        stress = None if name == "random" else name
        for k in range(1 if stress is None else stress_min_pairs(stress), k_max + 1):
            data_seed = np.random.SeedSequence([FRESH_TAG, seed, k, set_index])
            data = generate(per_k, k, k, data_seed, length=sequence_length(k), stress=stress)
            errors = int((predict(model, data.tokens) != data.targets).sum())
            low, high = error_interval(errors, per_k)
            rows.append(FreshRow(name, k, per_k, "-", path.name, errors, errors, 0, low, high))
            print(_format_row(rows[-1]).replace("ORT", "torch", 1), flush=True)
    return rows


def _format_row(r: FreshRow) -> str:
    ort = rate_with_interval(r.ort_errors, r.n, bounds=(r.ort_low, r.ort_high))
    return (
        f"{r.set:<12} K={r.k:<3} {r.bucket:<17} ORT {ort:<37}  "
        f"torch {r.torch_errors:>5}  disagree {r.disagreements}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.fresh", description=__doc__.split("\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints"), help="where source checkpoints are"
    )
    p.add_argument("--family", default=DEFAULT_FAMILY)
    p.add_argument("--per-k", type=int, default=20_000, help="sequences per K (and per stress set)")
    p.add_argument("--seed", type=int, default=0, help="fresh-data seed (0 is the one reported)")
    p.add_argument(
        "--sets", default="random", help=f"comma-separated data sets, of {','.join(SETS)} (default random)"
    )
    p.add_argument("--no-torch", action="store_true", help="onnxruntime only (no torch reference)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="instead: this checkpoint alone in torch, K 1..--k-max (a model before it is exported)",
    )
    p.add_argument("--k-max", type=int, default=26, help="with --checkpoint: the most pairs checked")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--max-errors", type=int, help="exit 3 when any set/K has more ORT errors than this")
    p.add_argument("--json", type=Path, help="also write every row as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SETS))
    if unknown or not sets or args.per_k < 1:
        print(f"error: sets must be some of {SETS} and --per-k >= 1 (got {unknown or sets})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        if args.checkpoint is not None:
            rows = check_checkpoint(args.checkpoint, args.per_k, sets, args.k_max, args.seed)
        else:
            rows = check(
                args.repository, args.checkpoints, args.per_k, sets, args.seed, args.family, not args.no_torch
            )
    except (ContractError, CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    for name in sets:
        mine = [r for r in rows if r.set == name]
        total, errors = sum(r.n for r in mine), sum(r.ort_errors for r in mine)
        answered_by = "torch" if args.checkpoint is not None else "ORT"  # --checkpoint: torch alone
        print(
            f"{name}: {answered_by} errors {rate_with_interval(errors, total)}, "
            f"torch {sum(r.torch_errors for r in mine)}, disagreements {sum(r.disagreements for r in mine)}"
        )
    print(f"{wall:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"per_k": args.per_k, "seed": args.seed, "wall_s": wall, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.max_errors is not None and any(r.ort_errors > args.max_errors for r in rows):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
