"""Reproduce the paper's Table 1 (associative retrieval, K=4): fast weights vs IRNN vs LSTM at R = 20 and 50.

    python -m model.reproduce --steps 10000 --seeds 0 --threads 1 --out-dir runs/reproduce

Trains every (model, R, seed) one after the other with the same data, step budget and optimiser, writes one
self-describing checkpoint and one JSON record per run into --out-dir, then prints a Markdown table of the
test error on the fixed 20k test split side by side with the paper's numbers, plus one row per run with its
wall time. Every number in the tables is read back from the checkpoint files it names, so a table can be
rebuilt later without training (``--summarize runs/reproduce/*.pt``).

A run whose finished checkpoint is already in --out-dir with the same model and training settings is reused
(not retrained) unless --force is given; an unfinished one is resumed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from model.config import MODEL_KINDS, ModelConfig
from model.stats import error_count, rate_with_interval
from model.train import TrainConfig, train

# Ba, Hinton, Mnih, Leibo, Ionescu (NIPS 2016), Table 1: test error (%) on associative retrieval with K=4.
PAPER_TABLE1: dict[str, dict[int, float]] = {
    "fast": {20: 1.81, 50: 0.0},
    "lstm": {20: 60.81, 50: 1.85},
    "irnn": {20: 62.11, 50: 60.23},
}
KIND_NAMES = {"fast": "Fast weights", "lstm": "LSTM", "irnn": "IRNN"}


@dataclass(frozen=True)
class RunResult:
    """One finished run, as read back from its checkpoint."""

    kind: str
    hidden_size: int
    seed: int
    steps: int
    test_error: float  # fraction on the fixed 20k test split
    valid_error: float | None  # fraction at the last validation
    test_n: int  # rows of the test split
    valid_n: int | None  # rows of the validation split
    train_wall_s: float  # training time as recorded in the checkpoint (includes periodic validation)
    checkpoint: str
    settings: str = ""  # what else the run was trained with (optimiser, schedule, λ, η, S)

    @classmethod
    def from_checkpoint(cls, path: str | Path, ckpt: Checkpoint | None = None) -> RunResult:
        ckpt = ckpt if ckpt is not None else load_checkpoint(path)
        if "test" not in ckpt.metrics:
            raise CheckpointError(f"{path}: the run has not finished (no test metrics)")
        valid = ckpt.metrics.get("valid", {}).get("error")
        valid_n = ckpt.metrics.get("valid", {}).get("n")
        return cls(
            kind=ckpt.config.kind,
            hidden_size=ckpt.config.hidden_size,
            seed=ckpt.seed,
            steps=ckpt.step,
            test_error=float(ckpt.metrics["test"]["error"]),
            valid_error=None if valid is None else float(valid),
            test_n=int(ckpt.metrics["test"]["n"]),
            valid_n=None if valid_n is None else int(valid_n),
            train_wall_s=float(ckpt.metrics.get("wall_s", 0.0)),
            checkpoint=str(path),
            settings=_settings(ckpt),
        )


def _settings(ckpt: Checkpoint) -> str:
    args, cfg = ckpt.train_args, ckpt.config
    text = f"lr {args.get('lr', 0):g} {args.get('lr_schedule', '?')}"
    if args.get("warmup_steps"):
        text += f" (warmup {args['warmup_steps']})"
    if cfg.kind == "fast":
        text += f", λ {cfg.decay:g}, η {cfg.fast_lr:g}, S {cfg.inner_steps}"
    return text + f", budget {args.get('steps', '?')} steps"


def run_name(kind: str, hidden_size: int, seed: int) -> str:
    return f"{kind}_R{hidden_size}_seed{seed}"


def model_config(kind: str, hidden_size: int) -> ModelConfig:
    """The paper's settings: fast weights with W = 0.05·I, λ=0.95, η=0.5, S=1; IRNN with W = I."""
    init = 0.05 if kind == "fast" else 1.0
    return ModelConfig(kind=kind, hidden_size=hidden_size, recurrent_init_scale=init)


def run_record(path: str | Path) -> dict[str, Any]:
    """The JSON results-log entry of one checkpoint: config, training settings, metrics, curve."""
    ckpt = load_checkpoint(path)
    result = RunResult.from_checkpoint(path, ckpt)
    return {
        **asdict(result),
        "config": ckpt.config.to_dict(),
        "train_args": ckpt.train_args,
        "test": ckpt.metrics["test"],
        "code_version": ckpt.code_version,
        "history": ckpt.history,
    }


def _previous_run(path: Path, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    """ "finished" or "unfinished" for a checkpoint of the very same settings at `path`, else "none".

    Threads and the progress bar do not change the results, so they may differ.
    """
    if not path.exists():
        return "none"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return "none"
    ignore = ("threads", "progress")
    same = {k: v for k, v in asdict(train_cfg).items() if k not in ignore}
    # an option added after the checkpoint was written is at its default there
    theirs = {k: v for k, v in {**asdict(TrainConfig()), **ckpt.train_args}.items() if k not in ignore}
    if ckpt.config != model_cfg or theirs != same:
        return "none"
    return "finished" if "test" in ckpt.metrics else "unfinished"


def reproduce(
    kinds: Sequence[str],
    sizes: Sequence[int],
    seeds: Sequence[int],
    train_cfg: TrainConfig,
    out_dir: str | Path,
    force: bool = False,
    log=print,
) -> list[RunResult]:
    """Train every (kind, R, seed) in turn; return the results read back from the checkpoints written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for hidden_size in sizes:
        for kind in kinds:
            for seed in seeds:
                name = run_name(kind, hidden_size, seed)
                path = out_dir / f"{name}.pt"
                cfg = TrainConfig(**{**asdict(train_cfg), "seed": seed})
                mcfg = model_config(kind, hidden_size)
                previous = "none" if force else _previous_run(path, mcfg, cfg)
                if previous == "finished":
                    log(f"{name}: reusing the finished checkpoint {path}")
                else:
                    started = time.perf_counter()
                    train(mcfg, cfg, path, resume_from=path if previous == "unfinished" else None)
                    result = RunResult.from_checkpoint(path)
                    wrong = error_count(result.test_error, result.test_n)
                    rate = rate_with_interval(wrong, result.test_n)
                    took = time.perf_counter() - started
                    log(f"{name}: test errors {rate} after {result.steps} steps, {took:.0f} s")
                (out_dir / f"{name}.json").write_text(json.dumps(run_record(path), indent=1) + "\n")
                paths.append(path)
    return [RunResult.from_checkpoint(p) for p in paths]


def _cell(results: list[RunResult]) -> str:
    """The test error of one Table-1 cell with its 95% interval (several seeds: pooled, and each seed's)."""
    if not results:
        return "—"
    if len({r.settings for r in results}) > 1:  # not seeds of one recipe: a pooled rate would mislead
        return "different settings: see the runs below"
    wrong = sum(error_count(r.test_error, r.test_n) for r in results)
    pooled = rate_with_interval(wrong, sum(r.test_n for r in results))
    if len(results) == 1:
        return pooled
    each = ", ".join(f"{error_count(r.test_error, r.test_n)}/{r.test_n}" for r in results)
    return f"{pooled} ({len(results)} seeds pooled: {each})"


def markdown_table(results: Iterable[RunResult]) -> str:
    """Table 1 side by side with the paper, then one row per run with its wall time."""
    results = sorted(results, key=lambda r: (r.hidden_size, MODEL_KINDS.index(r.kind), r.seed))
    sizes = sorted({r.hidden_size for r in results})
    kinds = [k for k in ("fast", "lstm", "irnn") if any(r.kind == k for r in results)]
    header = ["Model"]
    for R in sizes:
        header += [f"R={R} ours", f"R={R} paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in kinds:
        row = [KIND_NAMES[kind]]
        for R in sizes:
            row.append(_cell([r for r in results if r.kind == kind and r.hidden_size == R]))
            paper = PAPER_TABLE1.get(kind, {}).get(R)
            row.append("—" if paper is None else f"{paper:.2f}%")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| Run | Steps | Test error | Valid error | Wall time (train) | Settings | Checkpoint |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        valid = "—"
        if r.valid_error is not None and r.valid_n is not None:
            valid = rate_with_interval(error_count(r.valid_error, r.valid_n), r.valid_n)
        test = rate_with_interval(error_count(r.test_error, r.test_n), r.test_n)
        lines.append(
            f"| {Path(r.checkpoint).stem} | {r.steps} | {test} | {valid} "
            f"| {r.train_wall_s:.0f} s | {r.settings} | `{r.checkpoint}` |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.reproduce", description=__doc__.split("\n")[0])
    t = TrainConfig()
    p.add_argument("--steps", type=int, default=10_000, help="Adam steps per run (the stated budget)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and model")
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50], help="hidden sizes R (100 optional)")
    p.add_argument("--kinds", nargs="+", choices=MODEL_KINDS, default=["fast", "lstm", "irnn"])
    p.add_argument("--k", type=int, default=4, help="key/value pairs per sequence (the paper: 4)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--out-dir", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr, help="Adam learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=t.lr_schedule)
    p.add_argument("--warmup-steps", type=int, default=t.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-size", type=int, help="validation rows (default: the full 10k split)")
    p.add_argument("--train-size", type=int, help="train rows (default: the paper's 100k)")
    p.add_argument("--target-error", type=float, help="stop a run early once validation error <= this")
    p.add_argument("--device", default=t.device)
    p.add_argument("--force", action="store_true", help="retrain even when a finished checkpoint matches")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    p.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        metavar="CKPT",
        help="train nothing: tabulate these finished checkpoints (and write a .json record next to each)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.summarize:
            results = []
            for path in args.summarize:
                results.append(RunResult.from_checkpoint(path))
                path.with_suffix(".json").write_text(json.dumps(run_record(path), indent=1) + "\n")
        else:
            cfg = TrainConfig(
                k_min=args.k,
                k_max=args.k,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                lr_schedule=args.lr_schedule,
                warmup_steps=args.warmup_steps,
                grad_clip=args.grad_clip,
                device=args.device,
                threads=args.threads,
                train_size=args.train_size,
                eval_every=args.eval_every,
                eval_size=args.eval_size,
                target_error=args.target_error,
                progress=args.progress,
            )
            results = reproduce(args.kinds, args.sizes, args.seeds, cfg, args.out_dir, force=args.force)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(results)
    print(table)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
