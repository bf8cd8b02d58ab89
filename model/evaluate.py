"""Error rates on the fixed splits, broken down per number of pairs, plus a learning-curve plot.

python -m model.evaluate checkpoints/default.pt --k-min 1 --k-max 8 --json results.json --plot curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from contract.vocab import sequence_length
from model.data import Batch, fixed_split


@torch.no_grad()
def predict(model: nn.Module, tokens: np.ndarray, batch_size: int = 2048, device: str = "cpu") -> np.ndarray:
    """(N, T) tokens -> (N,) predicted class ids."""
    model.eval()
    out = []
    for start in range(0, len(tokens), batch_size):
        chunk = torch.from_numpy(tokens[start : start + batch_size]).to(device)
        logits, _ = model(chunk)
        out.append(logits.argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def error_report(
    model: nn.Module, batch: Batch, batch_size: int = 2048, device: str = "cpu"
) -> dict[str, Any]:
    """{"error": overall fraction wrong, "n": rows, "per_k": {K: {"error", "n"}}}."""
    pred = predict(model, batch.tokens, batch_size, device)
    wrong = pred != batch.targets
    per_k = {
        int(k): {"error": float(wrong[batch.num_pairs == k].mean()), "n": int((batch.num_pairs == k).sum())}
        for k in np.unique(batch.num_pairs)
    }
    return {"error": float(wrong.mean()), "n": len(batch), "per_k": per_k}


def plot_learning_curve(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training loss and validation error against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [h["step"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(steps, [h["train_loss"] for h in history], label="train loss", color="tab:blue")
    ax1.set_xlabel("step")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax1.set_yscale("log")
    ax2 = ax1.twinx()
    ax2.plot(steps, [100 * h["valid_error"] for h in history], label="valid error %", color="tab:red")
    ax2.set_ylabel("validation error (%)", color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from model.checkpoint import CheckpointError, load_checkpoint

    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--k-min", type=int, help="default: the checkpoint's training range")
    parser.add_argument("--k-max", type=int, help="default: the checkpoint's training range")
    parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--size", type=int, help="rows (default: the paper's split size)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--plot", type=Path, help="write the learning curve PNG here")
    args = parser.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    k_min = args.k_min or ckpt.train_args.get("k_min", 4)
    k_max = args.k_max or ckpt.train_args.get("k_max", 4)
    batch = fixed_split(args.split, k_min, k_max, size=args.size, length=sequence_length(k_max))
    report = {
        "checkpoint": str(args.checkpoint),
        "config": ckpt.config.to_dict(),
        "split": args.split,
        "k_min": k_min,
        "k_max": k_max,
        **error_report(ckpt.model(), batch),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.plot:
        plot_learning_curve(ckpt.history, args.plot, f"{ckpt.config.kind} R={ckpt.config.hidden_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
