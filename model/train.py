"""Train a fast-weights RNN (or an IRNN/LSTM baseline) on associative retrieval.

    python -m model.train --kind fast --hidden-size 50 --k-min 4 --k-max 4 --steps 20000 --out ckpt.pt

Data order is a pure function of (seed, step), so a resumed run (``--resume``) sees exactly the batches an
uninterrupted run would have seen.

Weight averaging (``--ema-decay`` or ``--swa-every``, typically as a fine-tune: ``--resume`` of a copy of a
trained checkpoint at a moderate constant lr) makes the *averaged* weights the checkpoint's weights: they are
what is validated, tested, saved and exported; the raw weights travel in the checkpoint's ``averaging`` field
so that a resumed run continues both the training and the average.

A K curriculum (``--k-start 8 --curriculum-steps 4000``) widens the most pairs a training row may hold
from ``k_start`` to ``k_max`` over the first ``curriculum_steps`` steps; its rows are drawn fresh for every
step from a stream seeded by (seed, step), so the run stays a pure function of its seed. ``--init-from``
fine-tunes the weights of another checkpoint (its model config; a fresh optimizer and schedule).
``--best-out`` keeps the checkpoint with the lowest validation error seen: the one served is chosen on
validation only.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from contract.vocab import sequence_length
from model.checkpoint import Checkpoint, CheckpointError, build_model, load_checkpoint, save_checkpoint
from model.config import MODEL_KINDS, ModelConfig
from model.data import VOCAB, Batch, fixed_split, generate
from model.evaluate import error_report
from model.stats import error_count, rate_with_interval


@dataclass
class TrainConfig:
    k_min: int = 4
    k_max: int = 4
    steps: int = 20_000
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" | "cosine" (to min_lr over `steps`)
    min_lr: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float = 1.0
    weight_decay: float = 0.0  # decoupled decay of weight matrices and embeddings: lr * wd per step
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 = torch's default
    train_size: int | None = None  # None = the paper's 100k
    eval_every: int = 500
    eval_size: int | None = None  # None = the full 10k validation split
    target_error: float | None = None  # early stop once validation error <= this
    stop_at: int | None = None  # end this process after this step; the lr schedule still spans `steps`
    ema_decay: float | None = None  # average the weights: EMA with this decay after every step ...
    swa_every: int | None = None  # ... or SWA: equal-weight mean of the weights every this many steps
    average_start: int = 0  # the average takes only the weights after this step
    schedule_start: int = 0  # warmup and cosine count steps from here (a fine-tune's own schedule)
    hard_pool: int = 1  # mining: score hard_pool * batch_size rows, train on the hardest batch_size
    mining_start: int = 0  # mining applies only to steps at or after this one
    k_start: int | None = None  # curriculum: the most pairs a row holds at step 0 (None = no curriculum)
    curriculum_steps: int = 0  # ... widened linearly to k_max over this many steps
    length: int | None = None  # pad every row to this many tokens (None = 2 * k_max + 3)
    init_from: str | None = None  # start from this checkpoint's weights (fine-tune; fresh optimizer)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def learning_rate(cfg: TrainConfig, step: int) -> float:
    step, total = step - cfg.schedule_start, cfg.steps - cfg.schedule_start
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    return cfg.lr


@dataclass
class WeightAverage:
    """EMA or SWA (Izmailov et al. 2018) of a model's weights, kept beside the raw weights that train.

    EMA: avg <- decay * avg + (1 - decay) * w after every step past `start` (avg starts as the first such w).
    SWA: the plain mean of the weights after steps start + every, start + 2 * every, ...
    """

    kind: str  # "ema" | "swa"
    decay: float = 0.0
    every: int = 1
    start: int = 0
    count: int = 0  # snapshots folded in so far
    weights: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> WeightAverage | None:
        if cfg.ema_decay is not None and cfg.swa_every is not None:
            raise ValueError("choose one of ema_decay and swa_every")
        if cfg.ema_decay is not None:
            if not 0.0 < cfg.ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
            return cls("ema", decay=cfg.ema_decay, start=cfg.average_start)
        if cfg.swa_every is not None:
            if cfg.swa_every < 1:
                raise ValueError(f"swa_every must be >= 1, got {cfg.swa_every}")
            return cls("swa", every=cfg.swa_every, start=cfg.average_start)
        return None

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "decay": self.decay, "every": self.every, "start": self.start}

    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights `model` has after `step` steps, if this step is one the average takes."""
        if step <= self.start or (self.kind == "swa" and (step - self.start) % self.every):
            return
        current = model.state_dict()
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in current.items()}
        else:
            for k, v in current.items():
                avg = self.weights[k]
                if not avg.is_floating_point():
                    avg.copy_(v)
                elif self.kind == "ema":
                    avg.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
                else:
                    avg.add_(v.detach() - avg, alpha=1.0 / (self.count + 1))
        self.count += 1


def hardest_rows(model: nn.Module, tokens: Tensor, targets: Tensor, pool: Tensor, keep: int) -> Tensor:
    """The `keep` rows of `pool` (indices into tokens/targets) on which the model's loss is highest.

    Online hard-example mining (Shrivastava et al. 2016): the gradient step then goes to the sequences whose
    answer the model is least sure of, instead of to rows it already gets right by a wide margin.
    """
    with torch.no_grad():
        logits, _ = model(tokens[pool])  # (P, classes)
        losses = nn.functional.cross_entropy(logits, targets[pool], reduction="none")  # (P,)
    return pool[torch.topk(losses, keep, sorted=False).indices]  # (keep,)


def decay_weights(model: nn.Module, fraction: float) -> None:
    """Shrink every weight matrix and embedding table by `fraction` (Loshchilov & Hutter's decoupled decay).

    Gains and biases (1-D) are left alone. Applied beside the optimizer rather than inside it, so a checkpoint
    trained without decay can be resumed with it (its optimizer state has one parameter group).
    """
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(1.0 - fraction)


def curriculum_k_max(cfg: TrainConfig, step: int) -> int:
    """The most pairs a training row may hold at `step`: k_start widened linearly to k_max."""
    if cfg.k_start is None:
        return cfg.k_max
    if cfg.curriculum_steps <= 0 or step >= cfg.curriculum_steps:
        return cfg.k_max
    return cfg.k_start + (cfg.k_max - cfg.k_start) * step // cfg.curriculum_steps


# The stream a curriculum draws its rows from: SeedSequence([STREAM_TAG, seed, step]). Four entries, so it
# can never meet a fixed split's three-entry seed (model.data.split_seed).
STREAM_TAG = 17_000


def stream_batch(cfg: TrainConfig, step: int, rows: int, length: int) -> Batch:
    """`rows` fresh rows for `step`, K uniform in [k_min, curriculum_k_max(step)], padded to `length`."""
    k_hi = curriculum_k_max(cfg, step)
    seed = np.random.SeedSequence([STREAM_TAG, cfg.seed, step, 0])
    return generate(rows, min(cfg.k_min, k_hi), k_hi, seed, length=length)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Rows of the train split for `step`: epoch-wise shuffles seeded by (seed, epoch)."""
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    return _epoch_order(seed, epoch, n)[pos * batch_size : (pos + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """One epoch's shuffle, drawn once per epoch (redrawing it every step costs ~15 ms at n = 1M)."""
    return np.random.default_rng([seed, epoch]).permutation(n)  # shared by the whole epoch: never write to it


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume_from: str | Path | None = None,
    best_out: str | Path | None = None,
) -> Checkpoint:
    """Train and return the final checkpoint (also written to `out` at every evaluation and at the end).

    `best_out`, when given, holds the evaluated checkpoint with the lowest validation error (the later on a
    tie); a resumed run starts its comparison afresh.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.resolved_device()
    length = cfg.length or sequence_length(cfg.k_max)
    if length < sequence_length(cfg.k_max):
        raise ValueError(f"length {length} is too short for k_max={cfg.k_max} pairs")
    if cfg.k_start is not None and not 1 <= cfg.k_start <= cfg.k_max:
        raise ValueError(f"k_start must be in [1, k_max], got {cfg.k_start}")
    streaming = cfg.k_start is not None
    valid_set = fixed_split("valid", cfg.k_min, cfg.k_max, size=cfg.eval_size, length=length)
    if streaming:  # rows are drawn per step (stream_batch); no fixed train split
        train_rows = cfg.batch_size * cfg.hard_pool
        tokens, targets = torch.empty(0), torch.empty(0)
    else:
        train_set = fixed_split("train", cfg.k_min, cfg.k_max, size=cfg.train_size, length=length)
        train_rows = len(train_set)
        tokens = torch.from_numpy(train_set.tokens).to(device)  # (N, T)
        targets = torch.from_numpy(train_set.targets).to(device)  # (N,)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, VOCAB).to(device)
    if cfg.init_from is not None:
        start = load_checkpoint(cfg.init_from)
        if start.config != model_cfg:
            raise CheckpointError(f"{cfg.init_from}: model config differs from the one requested")
        model.load_state_dict(start.state_dict)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    average = WeightAverage.from_config(cfg)
    averaged_model = build_model(model_cfg, VOCAB).to(device) if average is not None else None
    step, history = 0, []
    if resume_from is not None:
        prev = load_checkpoint(resume_from)
        if prev.config != model_cfg:
            raise CheckpointError(f"{resume_from}: model config differs from the one requested")
        if prev.averaging is None:
            model.load_state_dict(prev.state_dict)
        else:  # the checkpoint's weights are an average; training continues from the raw ones
            model.load_state_dict(prev.averaging["raw_state_dict"])
            if average is not None:
                if prev.averaging["settings"] != average.settings():
                    raise CheckpointError(
                        f"{resume_from}: weight averaging settings differ from the ones requested"
                    )
                average.weights = {k: v.to(device).clone() for k, v in prev.state_dict.items()}
                average.count = prev.averaging["count"]
        if prev.optimizer_state is not None:
            optimizer.load_state_dict(prev.optimizer_state)
        step, history = prev.step, list(prev.history)

    started = time.perf_counter()
    elapsed_before = history[-1]["wall_s"] if history else 0.0
    ckpt = _snapshot(model, optimizer, model_cfg, cfg, step, history, {}, average)
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    loss_sum, correct, seen = 0.0, 0, 0
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    last = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    if cfg.hard_pool < 1 or cfg.hard_pool * cfg.batch_size > train_rows:
        raise ValueError(f"hard_pool must be in [1, train rows / batch_size], got {cfg.hard_pool}")
    best_error, best_step = math.inf, None
    while step < last:
        mining = cfg.hard_pool > 1 and step >= cfg.mining_start
        rows = cfg.batch_size * (cfg.hard_pool if mining else 1)
        if streaming:
            drawn = stream_batch(cfg, step, rows, length)
            tokens = torch.from_numpy(drawn.tokens).to(device)  # (rows, T)
            targets = torch.from_numpy(drawn.targets).to(device)  # (rows,)
            idx = torch.arange(rows, device=device)
        else:
            idx = torch.from_numpy(batch_indices(cfg.seed, step, rows, train_rows)).to(device)
        if mining:
            idx = hardest_rows(model, tokens, targets, idx, cfg.batch_size)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, _ = model(tokens[idx])
        loss = loss_fn(logits, targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if cfg.weight_decay:
            decay_weights(model, lr * cfg.weight_decay)
        step += 1
        if average is not None:
            average.update(model, step)
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(-1) == targets[idx]).sum())
        seen += len(idx)
        bar.update(1)
        if step % cfg.eval_every == 0 or step == last:
            valid = error_report(_weights_to_judge(model, averaged_model, average), valid_set, device=device)
            record = {
                "step": step,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,  # of the raw weights, on the batches they trained on
                "valid_error": valid["error"],  # of the checkpoint's weights (the average, when averaging)
                "lr": learning_rate(cfg, step - 1),
            }
            if average is not None:
                record["valid_error_raw"] = error_report(model, valid_set, device=device)["error"]
                record["average_count"] = average.count
            model.train()
            history.append({**record, "wall_s": elapsed_before + time.perf_counter() - started})
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", valid_err=f"{valid['error']:.4f}"
            )
            loss_sum, correct, seen = 0.0, 0, 0
            ckpt = _snapshot(model, optimizer, model_cfg, cfg, step, history, {"valid": valid}, average)
            if out is not None:
                save_checkpoint(ckpt, out)
            if best_out is not None and valid["error"] <= best_error:  # ties: the later, longer-trained one
                best_error, best_step = valid["error"], step
                save_checkpoint(ckpt, best_out)
            if cfg.target_error is not None and valid["error"] <= cfg.target_error:
                bar.write(f"early stop at step {step}: validation error {valid['error']:.4%}")
                break
    bar.close()
    test_set = fixed_split("test", cfg.k_min, cfg.k_max, length=length)
    test = error_report(_weights_to_judge(model, averaged_model, average), test_set, device=device)
    metrics = {
        **ckpt.metrics,
        "test": test,
        "steps": step,
        "wall_s": history[-1]["wall_s"] if history else 0.0,
    }
    if average is not None:  # what the average bought, on the same split
        metrics["test_raw"] = error_report(model, test_set, device=device)
    ckpt = _snapshot(model, optimizer, model_cfg, cfg, step, history, metrics, average)
    if out is not None:
        save_checkpoint(ckpt, out)
    if best_out is not None and best_step is not None:
        _add_test_metrics(best_out, ckpt if best_step == step else None, test_set, device)
    return ckpt


def _add_test_metrics(best_out: str | Path, final: Checkpoint | None, test_set: Batch, device: str) -> None:
    """The kept checkpoint gets its test figures too, measured after it was chosen on validation: `final`
    when the last evaluation was the best (the same weights), else its own weights on the test split."""
    if final is not None:
        save_checkpoint(final, best_out)
        return
    best = load_checkpoint(best_out)
    best.metrics = {**best.metrics, "test": error_report(best.model(), test_set, device=device)}
    save_checkpoint(best, best_out)


def _weights_to_judge(
    model: nn.Module, averaged_model: nn.Module | None, average: WeightAverage | None
) -> nn.Module:
    """The model whose weights the checkpoint carries: the average once it has one, else the raw model."""
    if average is None or average.weights is None or averaged_model is None:
        return model
    averaged_model.load_state_dict(average.weights)
    return averaged_model


def _snapshot(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    step: int,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    average: WeightAverage | None = None,
) -> Checkpoint:
    raw = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    averaging = None
    if average is not None and average.weights is not None:
        averaging = {"settings": average.settings(), "count": average.count, "raw_state_dict": raw}
        raw = {k: v.detach().cpu().clone() for k, v in average.weights.items()}
    return Checkpoint(
        config=model_cfg,
        state_dict=raw,
        step=step,
        seed=cfg.seed,
        metrics=metrics,
        train_args=asdict(cfg),
        history=list(history),
        optimizer_state=optimizer.state_dict(),
        averaging=averaging,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    m = ModelConfig()
    p.add_argument("--kind", choices=MODEL_KINDS, default=m.kind)
    p.add_argument("--hidden-size", type=int, default=m.hidden_size, help="R, hidden units")
    p.add_argument("--embed-size", type=int, default=m.embed_size)
    p.add_argument("--decay", type=float, default=m.decay, help="λ, fast weight decay")
    p.add_argument("--fast-lr", type=float, default=m.fast_lr, help="η, fast weight learning rate")
    p.add_argument("--inner-steps", type=int, default=m.inner_steps, help="S, inner loop steps")
    p.add_argument("--memory-form", choices=["attention", "matrix"], default=m.memory_form)
    t = TrainConfig()
    p.add_argument("--k-min", type=int, default=t.k_min, help="fewest key/value pairs")
    p.add_argument("--k-max", type=int, default=t.k_max, help="most key/value pairs")
    p.add_argument("--steps", type=int, default=t.steps)
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr, help="Adam learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=t.lr_schedule)
    p.add_argument("--min-lr", type=float, default=t.min_lr)
    p.add_argument("--warmup-steps", type=int, default=t.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip, help="max gradient norm (0 = off)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=t.weight_decay,
        help="decoupled decay of weight matrices and embeddings: each step they shrink by lr * this",
    )
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--device", default=t.device, help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=t.threads, help="torch CPU threads (0 = default)")
    p.add_argument("--train-size", type=int, help="rows of the train split (default 100k)")
    p.add_argument("--eval-every", type=int, default=t.eval_every)
    p.add_argument("--eval-size", type=int, help="rows of the validation split (default 10k)")
    p.add_argument("--target-error", type=float, help="stop early once validation error <= this (e.g. 0)")
    p.add_argument(
        "--stop-at",
        type=int,
        help="end this process after this step, the lr schedule still over --steps (screen, then --resume)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        help="keep an EMA of the weights with this decay (e.g. 0.999); the checkpoint carries the average",
    )
    p.add_argument(
        "--swa-every",
        type=int,
        help="SWA: average the weights every this many steps; the checkpoint carries the average",
    )
    p.add_argument(
        "--average-start",
        type=int,
        default=t.average_start,
        help="averaging takes only weights after this step (default 0: from the first step this run trains)",
    )
    p.add_argument(
        "--schedule-start",
        type=int,
        default=t.schedule_start,
        help="warmup and cosine count from this step (e.g. the step a --resume fine-tune starts at)",
    )
    p.add_argument(
        "--hard-pool",
        type=int,
        default=t.hard_pool,
        help="hard-example mining: score this many batches of rows, train on the batch with the highest loss "
        "(default 1: off)",
    )
    p.add_argument(
        "--mining-start", type=int, default=t.mining_start, help="mining applies from this step on"
    )
    p.add_argument(
        "--k-start", type=int, help="curriculum: most pairs per row at step 0 (rows drawn per step)"
    )
    p.add_argument(
        "--curriculum-steps",
        type=int,
        default=t.curriculum_steps,
        help="curriculum: widen the most pairs per row from --k-start to --k-max over this many steps",
    )
    p.add_argument("--length", type=int, help="pad every sequence to this many tokens (default 2*k_max+3)")
    p.add_argument(
        "--init-from",
        type=str,
        help="fine-tune: start from this checkpoint's weights and model config (model options ignored)",
    )
    p.add_argument("--best-out", type=Path, help="also keep the checkpoint with the lowest validation error")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model_cfg = ModelConfig(
        kind=args.kind,
        hidden_size=args.hidden_size,
        embed_size=args.embed_size,
        decay=args.decay,
        fast_lr=args.fast_lr,
        inner_steps=args.inner_steps,
        memory_form=args.memory_form,
        recurrent_init_scale=0.05 if args.kind == "fast" else 1.0,
    )
    if args.init_from is not None:
        try:
            model_cfg = load_checkpoint(args.init_from).config
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    cfg = TrainConfig(**values, progress=not args.no_progress)
    resume_from = args.out if args.resume and args.out.exists() else None
    try:
        ckpt = train(model_cfg, cfg, args.out, resume_from, args.best_out)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(args.out, ckpt))
    return 0


def _counted(report: dict[str, Any]) -> str:
    """An error report (model.evaluate.error_report) as its count of n, rate and 95% interval."""
    return rate_with_interval(error_count(report["error"], report["n"]), report["n"])


def summary_line(out: Path, ckpt: Checkpoint) -> str:
    """The finished run in one line: test errors as counts with their exact 95% interval, per K as counts."""
    test = ckpt.metrics["test"]
    per_k = ", ".join(f"K={k}: {error_count(v['error'], v['n'])}/{v['n']}" for k, v in test["per_k"].items())
    raw = ckpt.metrics.get("test_raw")
    averaged = "" if raw is None else f" (averaged weights; raw weights {_counted(raw)})"
    rate = _counted(test)
    return f"{out}: step {ckpt.step}, test errors {rate}{averaged}; {per_k}; {ckpt.metrics['wall_s']:.0f} s"


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Batch",
    "TrainConfig",
    "WeightAverage",
    "curriculum_k_max",
    "decay_weights",
    "hardest_rows",
    "learning_rate",
    "stream_batch",
    "train",
]
