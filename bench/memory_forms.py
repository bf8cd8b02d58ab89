"""Matrix form vs attention form of the fast memory as the sequence grows: time and peak memory (torch).

    .venv/bin/python -m bench.memory_forms                          # T = 10..800, batch 64, one thread
    .venv/bin/python -m bench.memory_forms --lengths 10,50 --batch-size 8 --plot docs/img/memory_forms.png

Both forms of model/fastweights.py compute the same function (checked here on every length): the matrix form
carries the explicit A(t), B·H² floats, O(H²) work per step; the attention form keeps h(τ) for every past
step, B·t·H floats, O(t·H) per step. So the attention form wins while t < H and loses beyond: the crossover.
(The matrix form of the training module also keeps the history it needs for the `memory_attention` output,
so its memory grows with t too, only more slowly.)

Peak memory: how much the peak RSS of a fresh process (one per form, lengths ascending) grows over its
warmed-up baseline; per process, so independent of what else runs on the machine (lengths ascending makes
each figure the peak up to that length, which is the peak at that length since it grows with T).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(form: str, lengths: list[int], B: int, H: int) -> None:
    """In a fresh process: peak RSS growth (bytes) over the warmed-up baseline after each length."""
    import resource

    import torch

    from model.config import ModelConfig
    from model.fastweights import FastWeightsRNN

    torch.set_num_threads(1)
    model = FastWeightsRNN(ModelConfig(hidden_size=H, memory_form=form)).eval()
    out = {}
    with torch.inference_mode():
        for _ in range(2):
            model(torch.ones(B, 2, dtype=torch.long))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for T in sorted(lengths):
            model(torch.randint(1, 38, (B, T)))
            out[T] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024  # KiB on Linux
    print(json.dumps(out))


def peak_rss_growth(form: str, lengths: list[int], B: int, H: int) -> dict[int, int]:
    code = f"from bench.memory_forms import _child; _child({form!r}, {lengths!r}, {B}, {H})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_forms", description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="10,25,50,100,200,400,800")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden-size", type=int, default=50, help="H (the bundled model: 50)")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per cell (median)")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="write a PNG here")
    args = p.parse_args(argv)

    import torch

    from model.config import ModelConfig
    from model.fastweights import FastWeightsRNN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=args.hidden_size)
    models = {
        form: FastWeightsRNN(ModelConfig(**{**cfg.__dict__, "memory_form": form}))
        for form in ("matrix", "attention")
    }
    models["attention"].load_state_dict(models["matrix"].state_dict())
    for m in models.values():
        m.eval()
    B, H = args.batch_size, args.hidden_size
    rows = []
    print(
        f"matrix vs attention form, batch {B}, H={H}, torch {torch.__version__}, 1 thread, "
        f"median of {args.repeats} forwards (wall clock)"
    )
    print(
        f"{'T':>5} {'matrix ms':>10} {'attn ms':>10} {'attn/matrix':>12} {'matrix MiB':>11} {'attn MiB':>10} "
        f"{'attn/matrix':>12} {'max|Δ|':>9}"
    )
    lengths = [int(t) for t in args.lengths.split(",")]
    peaks = {form: peak_rss_growth(form, lengths, B, H) for form in models}
    for T in lengths:
        tokens = torch.randint(1, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(T))
        cell: dict[str, float] = {"T": T}
        outs = {}
        with torch.inference_mode():
            for form, model in models.items():
                outs[form] = model(tokens)  # warm-up, and the parity check below
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    model(tokens)
                    times.append(time.perf_counter() - start)
                cell[f"{form}_s"] = statistics.median(times)
        for form in models:
            cell[f"{form}_peak_bytes"] = max(1, peaks[form][T])
        cell["max_abs_diff"] = float((outs["matrix"][0] - outs["attention"][0]).abs().max())
        rows.append(cell)
        print(
            f"{T:>5} {cell['matrix_s'] * 1e3:>10.2f} {cell['attention_s'] * 1e3:>10.2f} "
            f"{cell['attention_s'] / cell['matrix_s']:>12.2f} {cell['matrix_peak_bytes'] / 2**20:>11.2f} "
            f"{cell['attention_peak_bytes'] / 2**20:>10.2f} "
            f"{cell['attention_peak_bytes'] / cell['matrix_peak_bytes']:>12.2f} {cell['max_abs_diff']:>9.1e}",
            flush=True,
        )
    for key, what in (("_s", "time"), ("_peak_bytes", "peak memory")):
        ratios = [(r["T"], r["attention" + key] / r["matrix" + key]) for r in rows]
        flips = [
            f"between T={a} and T={b} ({ra:.2f} -> {rb:.2f})"
            for (a, ra), (b, rb) in itertools.pairwise(ratios)
            if (ra < 1) != (rb < 1)
        ]
        print(
            f"crossover ({what}, attention/matrix crosses 1): " + ("; ".join(flips) or "none in this range")
        )
    if args.json:
        args.json.write_text(json.dumps({"batch_size": B, "hidden_size": H, "rows": rows}, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        Ts = [r["T"] for r in rows]
        for form in ("matrix", "attention"):
            a.plot(Ts, [r[f"{form}_s"] * 1e3 for r in rows], marker="o", label=f"{form} form")
            b.plot(Ts, [r[f"{form}_peak_bytes"] / 2**20 for r in rows], marker="o", label=f"{form} form")
        for ax, title in ((a, "ms per forward"), (b, "peak RSS growth (MiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.axvline(H, color="grey", ls=":", lw=1)
        a.legend()
        fig.suptitle(f"fast memory: matrix vs attention form (batch {B}, H={H}, torch CPU, 1 thread)")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
