"""Two checkpoints on the same fresh sequences: how far apart their answers are, per K.

    .venv/bin/python scripts/compare_checkpoints.py checkpoints/default.pt checkpoints/k26.pt --k-max 4

What serving some buckets from one checkpoint and the stream model of memory sessions from another would do:
a session must answer as /v1/retrieve does, confidence within 1e-4 (tests/integration/test_sessions.py).
The sequences are export.fresh's (the same seeds, each K padded to the default bucket that serves it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from contract import DEFAULT_BUCKETS
from contract.vocab import sequence_length
from export.fresh import FRESH_TAG
from model.checkpoint import load_checkpoint
from model.data import generate

TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--k-max", type=int, default=4)
    p.add_argument("--per-k", type=int, default=20_000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    models = [load_checkpoint(path).model().eval() for path in (args.first, args.second)]
    for k in range(1, args.k_max + 1):
        length = min(t for t in DEFAULT_BUCKETS if t >= sequence_length(k))
        seed = np.random.SeedSequence([FRESH_TAG, 0, k, 0])  # export.fresh's random set, seed 0
        tokens = torch.from_numpy(generate(args.per_k, k, k, seed, length=length).tokens)
        with torch.no_grad():
            first, second = (torch.softmax(m(tokens)[0], -1) for m in models)  # (N, classes) each
        gap = (first.max(-1).values - second.max(-1).values).abs()
        disagree = int((first.argmax(-1) != second.argmax(-1)).sum())
        beyond = int((gap > TOLERANCE).sum())
        print(
            f"K={k} (T={length}): argmax disagreements {disagree}/{args.per_k}, |Δconfidence| max "
            f"{gap.max():.2e}, median {gap.median():.2e}, rows above {TOLERANCE:g}: {beyond}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
