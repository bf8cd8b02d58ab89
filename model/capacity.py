"""The capacity study: error vs K (1..26) for fast weights, LSTM and IRNN under one training budget.

    python -m model.capacity plan                  # every run of the study, and which have finished
    python -m model.capacity run [--only lstm] [--max-runs 2]   # the missing runs, one at a time, resumable
    python -m model.capacity run --workers 2      # two runners side by side (one per core): a run in training
                                                  # is locked (runs/capacity/<run>.lock), so they never share
                                                  # one, and each waits for what the other's screens add
    python -m model.capacity report --plot docs/capacity.png --json results/capacity/report.json \
        --markdown results/capacity/report.md

Every model gets the same recipe (RECIPE: steps, data stream, K curriculum, schedule, batch, padding) from
scratch. Sizes: equal hidden size (H = 50 and 100) and equal parameter count (the baseline's H chosen so its
parameters match fast weights' at H = 50 and 100). Learning rate: screened over LRS with seed 0, chosen on the
validation split (K 1..26) only; where the best of them sits at the edge of the screen, the screen goes on one
step of LADDER past that edge until the best is inside (or the ladder ends). The chosen lr then runs seeds 1
and 2 too. Each run is a `model.train` process whose checkpoint and log live in runs/capacity/<run>.pt / .log,
resumed where a run stopped. A finished run becomes a record: results/capacity/<run>.pt (its weights, config,
metrics and history, less the optimizer state) and <run>.log, small enough to commit, so the study's results
outlive the machine that trained them (runs/ is not tracked). Plan, runners and report go by the records. The
report reads each finished run's test metrics (the fixed K 1..26 test split, read once at the end of the run)
and pools the seeds of each headline cell per K, with exact 95% intervals; beside them, every chosen-lr
checkpoint answers the same fresh random sequences and each named stress set (model.data.STRESS_SETS); those
counts are kept in results/capacity/<run>.stress.json until the checkpoint or the code scoring it changes.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import fcntl
import functools
import hashlib
import importlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from model.checkpoint import build_model, file_sha256, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data import STRESS_SETS, generate, stress_min_pairs
from model.evaluate import predict
from model.stats import error_count, error_interval, rate_with_interval

RUNS = Path("runs/capacity")  # training: resumable checkpoints, logs, locks (not tracked)
RECORDS = Path("results/capacity")  # each finished run's record (tracked: see keep_record)
K_MAX = 26
LENGTH = 55  # every run trains and is tested at this padded length (RECIPE's --length)
# The report's fresh and stress sequences: SeedSequence([STRESS_TAG, set index]), the same rows for every
# checkpoint (paired across models), a first entry no split, training stream or export check uses.
STRESS_TAG = 20_261_207
STRESS_ROWS = 5000  # per set and checkpoint, K uniform from the set's minimum to 26
# The modules a stress count depends on besides the checkpoint (with stress_errors itself): the sequences, the
# vocabulary, the models and their config, scoring. A change to any of them makes every cached count stale.
STRESS_CODE = (
    "contract.vocab",
    "model.data",
    "model.config",
    "model.baselines",
    "model.fastweights",
    "model.checkpoint",
    "model.evaluate",
)
REPORT_K = (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26)  # the markdown table's rows (the JSON has all)
LRS = (3e-4, 1e-3, 3e-3)  # every cell's first screen
LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # where a screen whose best is at its edge goes on
SEEDS = (0, 1, 2)
WAIT_S = 30  # how often a waiting runner looks again for runs another runner's screens have added
RECIPE = [
    *("--k-min", "1", "--k-max", "26", "--k-start", "2", "--curriculum-steps", "10000", "--steps", "20000"),
    *("--length", str(LENGTH), "--batch-size", "128", "--lr-schedule", "cosine", "--warmup-steps", "500"),
    *("--eval-every", "2000", "--threads", "1", "--no-progress"),
]


@functools.cache
def parameter_count(kind: str, hidden_size: int) -> int:
    cfg = ModelConfig(
        kind=kind, hidden_size=hidden_size, recurrent_init_scale=0.05 if kind == "fast" else 1.0
    )
    return sum(p.numel() for p in build_model(cfg).parameters())


def matched_hidden_size(kind: str, target: int) -> int:
    """The hidden size of `kind` whose parameter count is closest to `target` (counts grow with H)."""
    lo, hi = 4, 400
    while hi - lo > 1:  # the smallest H whose count reaches the target lies in (lo, hi]
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if parameter_count(kind, mid) < target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(parameter_count(kind, h) - target))


@dataclass(frozen=True)
class Cell:
    """One headline cell: a model at a size, named by how the size was matched."""

    kind: str
    hidden_size: int
    matched: str  # "H=50" (equal hidden size) or "P(fast H=50)" (equal parameter count)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.hidden_size}"


@functools.cache
def cells() -> tuple[Cell, ...]:
    out: list[Cell] = []
    for h in (50, 100):
        for kind in ("fast", "lstm", "irnn"):
            out.append(Cell(kind, h, f"H={h}"))
        target = parameter_count("fast", h)
        for kind in ("lstm", "irnn"):
            matched = matched_hidden_size(kind, target)
            if matched != h:  # an IRNN at H=50 already has fast weights' count within 1%: one cell
                out.append(Cell(kind, matched, f"P(fast H={h})"))
    return tuple(out)


def run_name(cell: Cell, lr: float, seed: int) -> str:
    return f"{cell.name}_lr{lr:g}_s{seed}"


def _finished(name: str) -> dict[str, Any] | None:
    """A finished run's metrics (None while it is missing or still training). A run that finished in RUNS
    with no record yet (its runner stopped before keeping it) gets its record here."""
    record = RECORDS / f"{name}.pt"
    if record.is_file():
        return _metrics_of(record)
    metrics = _metrics_of(RUNS / f"{name}.pt")
    if metrics is not None:
        keep_record(name)
    return metrics


def _metrics_of(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    stat = path.stat()
    return _finished_metrics(str(path), stat.st_mtime_ns, stat.st_size)


def keep_record(name: str) -> Path:
    """Copy a finished run into RECORDS: its checkpoint less the optimizer state (a few hundred KB at most,
    what the report, the stress sets and anyone checking a number need) and its log. Each file is written
    atomically under a name of this process's own, so two runners keeping the same record never tear it; the
    checkpoint goes last, so a record's log is there once the record is."""
    ckpt = load_checkpoint(RUNS / f"{name}.pt")
    RECORDS.mkdir(parents=True, exist_ok=True)
    log = RUNS / f"{name}.log"
    if log.is_file():
        kept_log = RECORDS / f".{name}.{os.getpid()}.log"
        shutil.copyfile(log, kept_log)
        os.replace(kept_log, RECORDS / f"{name}.log")
    return save_checkpoint(replace(ckpt, optimizer_state=None), RECORDS / f"{name}.pt")


@functools.lru_cache(maxsize=256)
def _finished_metrics(path: str, mtime_ns: int, size: int) -> dict[str, Any] | None:
    """Loads a checkpoint once per version of its file (plan, screen and report ask about each run often)."""
    del mtime_ns, size  # the cache key: a checkpoint rewritten by its run is read again
    ckpt = load_checkpoint(Path(path))
    return ckpt.metrics if "test" in ckpt.metrics else None


def screen(cell: Cell) -> tuple[list[float], float | None]:
    """The lrs screened for `cell` (seed 0) and the chosen one: the lowest final validation error (ties: the
    smaller lr), once every screen run finished and the best is not at an edge the ladder can pass."""
    lrs = list(LRS)
    while True:
        scores = {}
        for lr in lrs:
            metrics = _finished(run_name(cell, lr, 0))
            if metrics is None:
                return lrs, None
            scores[lr] = metrics["valid"]["error"]
        best = min(lrs, key=lambda lr: (scores[lr], lr))
        i = LADDER.index(best)
        if best == lrs[0] and i > 0:
            lrs.insert(0, LADDER[i - 1])
        elif best == lrs[-1] and i < len(LADDER) - 1:
            lrs.append(LADDER[i + 1])
        else:
            return lrs, best


def chosen_lr(cell: Cell) -> float | None:
    return screen(cell)[1]


def planned_runs() -> list[tuple[Cell, float, int]]:
    """Screens first (every cell, every lr it needs, seed 0), then the other seeds of cells whose lr is
    chosen."""
    screens = {c: screen(c) for c in cells()}
    runs = [(c, lr, 0) for c, (lrs, _) in screens.items() for lr in lrs]
    for c, (_, lr) in screens.items():
        if lr is not None:
            runs += [(c, lr, s) for s in SEEDS if s != 0]
    return runs


def train_command(cell: Cell, lr: float, seed: int) -> list[str]:
    out = RUNS / f"{run_name(cell, lr, seed)}.pt"
    return [
        sys.executable, "-m", "model.train", "--kind", cell.kind, "--hidden-size", str(cell.hidden_size),
        *RECIPE, "--lr", f"{lr:g}", "--seed", str(seed), "--out", str(out), "--resume",
    ]  # fmt: skip


@contextlib.contextmanager
def run_lock(name: str) -> Iterator[IO[str] | None]:
    """The run's lock file held for as long as the block runs, or None when another runner holds it."""
    with open(RUNS / f"{name}.lock", "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield lock  # released when the file closes (also when this process dies)


def run(only: str | None, max_runs: int | None, wait: bool = False, workers: int = 1) -> int:
    """Train missing runs one at a time, planning again after each: a cell's seed runs join the plan as soon
    as its last screen run finishes. Returns when nothing is left that another runner is not training; with
    `wait`, only once every planned run has finished (it waits for the runs other runners train, and takes
    what follows them). `workers` > 1 starts that many runners in all, the others as child processes that
    wait; `max_runs` is per runner. A runner stops at its first failed run, the others go on; the exit code
    is the first failure's (128 + N for a runner killed by signal N). Stopped (Ctrl-C, SIGTERM), a runner
    stops its training process and its child runners: each run resumes from its last checkpoint."""
    RUNS.mkdir(parents=True, exist_ok=True)
    others = [_start_runner(only, max_runs) for _ in range(workers - 1)]
    try:
        codes = [_run_loop(only, max_runs, wait or workers > 1)]
    except BaseException:
        for other in others:
            other.send_signal(signal.SIGTERM)
        for other in others:
            other.wait()
        raise
    codes += [other.wait() for other in others]
    return next((128 - code if code < 0 else code for code in codes if code != 0), 0)


def _start_runner(only: str | None, max_runs: int | None) -> subprocess.Popen[bytes]:
    """One more runner as a child process (the runs' locks keep runners apart)."""
    command = [sys.executable, "-m", "model.capacity", "run", "--wait"]
    command += ["--only", only] if only else []
    command += ["--max-runs", str(max_runs)] if max_runs is not None else []
    return subprocess.Popen(command)


def _run_loop(only: str | None, max_runs: int | None, wait: bool) -> int:
    done = 0
    while max_runs is None or done < max_runs:
        code = _run_next(only)
        if code is NothingToStart.ALL_FINISHED:
            return 0
        if code is NothingToStart.ALL_LOCKED:
            if not wait:
                return 0
            time.sleep(WAIT_S)  # one may end a screen: its seed runs join the plan
            continue
        if code != 0:
            return code
        done += 1
    return 0


class NothingToStart(enum.Enum):
    """Why _run_next started no run."""

    ALL_FINISHED = "every planned run has finished"
    ALL_LOCKED = "every unfinished planned run is being trained by another runner"


def _run_next(only: str | None) -> int | NothingToStart:
    """Train the first planned run that is neither finished nor locked and return its exit code, or say why
    none was started. ALL_FINISHED is the plan as it stands once a whole pass found nothing to start (a run
    finishing during the pass may have added some)."""
    runs = None
    while runs != (runs := planned_runs()):
        locked = False
        for cell, lr, seed in runs:
            name = run_name(cell, lr, seed)
            if (only and only not in name) or _finished(name) is not None:
                continue
            with run_lock(name) as lock:
                if lock is None:
                    print(f"{name}: another runner is training it; next", flush=True)
                    locked = True
                    continue
                if _finished(name) is not None:  # finished while we waited for the lock
                    continue
                command = train_command(cell, lr, seed)
                print(f"{name}: {' '.join(command)}", flush=True)
                with open(RUNS / f"{name}.log", "a", encoding="utf-8") as log:
                    # the lock passed on: it holds while the training runs, even if this runner dies
                    code = subprocess.run(
                        command, stdout=log, stderr=subprocess.STDOUT, check=False, pass_fds=(lock.fileno(),)
                    ).returncode
            if code != 0:
                print(f"{name}: exit code {code} (see {RUNS / name}.log)", file=sys.stderr)
            elif _finished(name) is not None:  # keeps its record
                print(f"{name}: finished, kept in {RECORDS / name}.pt", flush=True)
            return code
        if locked:
            return NothingToStart.ALL_LOCKED
    return NothingToStart.ALL_FINISHED


def stress_errors(path: Path, rows: int) -> dict[str, list[int]]:
    """One checkpoint on fresh random sequences and on every stress set: {set: [wrong, n]}."""
    model = load_checkpoint(path).model()
    out = {}
    for index, name in enumerate(("random", *STRESS_SETS)):
        stress = None if name == "random" else name
        k_min = 1 if stress is None else stress_min_pairs(stress)
        data = generate(rows, k_min, K_MAX, np.random.SeedSequence([STRESS_TAG, index]), LENGTH, stress)
        out[name] = [int((predict(model, data.tokens) != data.targets).sum()), rows]
    return out


def _stress_cache_key(path: Path, rows: int) -> dict[str, Any]:
    """Everything a checkpoint's stress counts depend on: its bytes, the rows, the sets and their seeds, the
    padded length and largest K, the code that makes and scores the sequences, and numpy's and torch's
    versions (numpy's generator streams are not promised across versions)."""
    code = hashlib.sha256(inspect.getsource(stress_errors).encode())
    for module in STRESS_CODE:
        code.update(Path(str(importlib.import_module(module).__file__)).read_bytes())
    return {
        "checkpoint_sha256": file_sha256(path),
        "rows": rows,
        "tag": STRESS_TAG,
        "sets": list(STRESS_SETS),
        "length": LENGTH,
        "k_max": K_MAX,
        "code_sha256": code.hexdigest(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def _cached_counts(saved: Any, key: dict[str, Any]) -> dict[str, list[int]] | None:
    """The counts a cache file holds for `key`, or None when they are for another key or not whole."""
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("errors"), dict):
        return None
    errors = saved["errors"]
    whole = set(errors) == {"random", *STRESS_SETS} and all(
        isinstance(c, list) and len(c) == 2 and isinstance(c[0], int) and 0 <= c[0] <= c[1] == key["rows"]
        for c in errors.values()
    )
    return {name: [w, n] for name, (w, n) in errors.items()} if whole else None


def cached_stress_errors(path: Path, rows: int) -> dict[str, list[int]]:
    """stress_errors, kept beside the checkpoint (<run>.stress.json), so a report run again while the study
    goes on scores only the checkpoints that are new or changed. A cache file that is unreadable, torn or for
    another key is scored again and replaced (atomically: a report stopped mid-write leaves the old one)."""
    cache = path.with_suffix(".stress.json")
    key = _stress_cache_key(path, rows)
    with contextlib.suppress(OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        counts = _cached_counts(json.loads(cache.read_text(encoding="utf-8")), key)
        if counts is not None:
            return counts
    errors = stress_errors(path, rows)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")  # two reports at once never share a temp file
    try:
        partial.write_text(json.dumps({"key": key, "errors": errors}) + "\n", encoding="utf-8")
        os.replace(partial, cache)
    except OSError as exc:  # the counts stand; only the next report pays for them again
        print(f"warning: could not keep {cache}: {exc}", file=sys.stderr)
    return errors


def report(
    plot: Path | None, out_json: Path | None, markdown: Path | None = None, stress_rows: int = STRESS_ROWS
) -> int:
    rows: list[dict[str, Any]] = []
    headline: dict[str, dict[int, list[int]]] = {}  # cell -> K -> [wrong, n], seeds pooled
    stress: dict[str, dict[str, list[int]]] = {}  # cell -> set -> [wrong, n], seeds pooled
    seeds: dict[str, int] = {}  # cell -> seeds pooled
    for cell in cells():
        lr = chosen_lr(cell)
        label = f"{cell.name} ({cell.matched})"
        for run_lr in LADDER:
            for seed in SEEDS:
                run_id = run_name(cell, run_lr, seed)
                metrics = _finished(run_id)
                if metrics is None:
                    continue
                test = metrics["test"]
                wrong = error_count(test["error"], test["n"])
                low, high = error_interval(wrong, test["n"])
                rows.append(
                    {
                        "run": run_id,
                        "matched": cell.matched,
                        "params": parameter_count(cell.kind, cell.hidden_size),
                        "valid_error": metrics["valid"]["error"],
                        "valid_errors": error_count(metrics["valid"]["error"], metrics["valid"]["n"]),
                        "valid_n": metrics["valid"]["n"],
                        "test_errors": wrong,
                        "test_n": test["n"],
                        "test_ci": (low, high),
                        "chosen_lr": run_lr == lr,
                        "per_k": test["per_k"],
                    }
                )
                if run_lr == lr and stress_rows > 0:
                    per_set = cached_stress_errors(RECORDS / f"{run_id}.pt", stress_rows)
                    for name, (w, n) in per_set.items():
                        acc = stress.setdefault(label, {}).setdefault(name, [0, 0])
                        acc[0], acc[1] = acc[0] + w, acc[1] + n
        pooled: dict[int, list[int]] = {}
        chosen = [r for r in rows if r["run"].startswith(f"{cell.name}_") and r["chosen_lr"]]
        for r in chosen:
            for k, v in r["per_k"].items():
                acc = pooled.setdefault(int(k), [0, 0])
                acc[0] += error_count(v["error"], v["n"])
                acc[1] += v["n"]
        if pooled:
            headline[label] = {k: pooled[k] for k in sorted(pooled)}
            seeds[label] = len(chosen)
    for r in rows:
        on_valid = rate_with_interval(r["valid_errors"], r["valid_n"])
        on_test = rate_with_interval(r["test_errors"], r["test_n"], bounds=r["test_ci"])
        mark = "  (chosen lr)" if r["chosen_lr"] else ""
        name = f"{r['run']:<24} {r['matched']:<14} params {r['params']:>6}"
        print(f"{name} valid {on_valid}  test {on_test}{mark}")
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"runs": rows, "headline": headline, "seeds": seeds, "stress": stress}
        out_json.write_text(json.dumps(summary, indent=1) + "\n")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(_markdown(rows, headline, seeds, stress))
    if plot and headline:
        _plot(headline, seeds, plot)
    return 0


def _markdown(
    rows: list[dict[str, Any]],
    headline: dict[str, dict[int, list[int]]],
    seeds: dict[str, int],
    stress: dict[str, dict[str, list[int]]],
) -> str:
    """Every run, the headline cells' test error per K (seeds pooled) and the stress sets, as markdown."""
    out = [
        "| run | matched | params | valid errors (95% CI) | test errors (95% CI) | lr |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = "chosen" if r["chosen_lr"] else ""
        out.append(
            f"| {r['run']} | {r['matched']} | {r['params']} | "
            f"{rate_with_interval(r['valid_errors'], r['valid_n'])} | "
            f"{rate_with_interval(r['test_errors'], r['test_n'], bounds=r['test_ci'])} | {chosen} |"
        )
    labels = list(headline)
    out += ["", "| K | " + " | ".join(f"{lab}, {seeds[lab]} seed(s)" for lab in labels) + " |"]
    out.append("|---" * (len(labels) + 1) + "|")
    for k in REPORT_K:
        cells_k = [rate_with_interval(*headline[lab][k]) if k in headline[lab] else "-" for lab in labels]
        out.append(f"| {k} | " + " | ".join(cells_k) + " |")
    totals = [rate_with_interval(*map(sum, zip(*headline[lab].values(), strict=True))) for lab in labels]
    out.append("| all | " + " | ".join(totals) + " |")
    if stress:
        sets = list(next(iter(stress.values())))
        out += ["", "| cell (chosen lr, seeds pooled) | " + " | ".join(sets) + " |"]
        out.append("|---" * (len(sets) + 1) + "|")
        for lab, per_set in stress.items():
            out.append(f"| {lab} | " + " | ".join(rate_with_interval(*per_set[s]) for s in sets) + " |")
    return "\n".join(out) + "\n"


def _line_style(label: str) -> dict[str, Any]:
    """A colour per model (the equal-parameter LSTM its own); solid at H = 50's size, dashed at H = 100's."""
    name, matched = label.split(" ", 1)
    kind = name.rstrip("0123456789")
    colour = {"fast": "tab:blue", "lstm": "tab:orange", "irnn": "tab:green"}[kind]
    if "P(" in matched:
        colour = "tab:red"
    return {"color": colour, "linestyle": "--" if "100" in matched else "-"}


def _plot(headline: dict[str, dict[int, list[int]]], seeds: dict[str, int], path: Path) -> None:
    """Error vs K, one line per cell (seeds pooled), an exact 95% band; the right panel zooms on 0-5%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=(3, 2))
    for ax, top in zip(axes, (None, 5.0), strict=True):
        for label, per_k in headline.items():
            ks = sorted(per_k)
            rate = [100 * per_k[k][0] / per_k[k][1] for k in ks]
            bands = [error_interval(*per_k[k]) for k in ks]
            style = _line_style(label)
            ax.plot(ks, rate, marker="o", markersize=3, label=f"{label}, {seeds[label]} seed(s)", **style)
            low, high = [100 * b[0] for b in bands], [100 * b[1] for b in bands]
            ax.fill_between(ks, low, high, alpha=0.2, color=style["color"])
        ax.set_xlabel("K (pairs in the query)")
        ax.set_xlim(1, K_MAX)
        ax.grid(alpha=0.3)
        if top is not None:
            ax.set_ylim(0, top)
            ax.set_title(f"zoom: 0-{top:g}%", fontsize=9)
    axes[0].set_ylabel("test error, % (95% band)")
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _state(name: str) -> str:
    """'done', 'to run', or how far a started run got ('at step 8000 of 20000': its last checkpoint)."""
    if _finished(name) is not None:
        return "done"
    path = RUNS / f"{name}.pt"
    if not path.is_file():
        return "to run"
    return f"at step {load_checkpoint(path).step} of {RECIPE[RECIPE.index('--steps') + 1]}"


def plan() -> int:
    """Every planned run, its state, and a count (the plan grows: seeds once a screen ends, ladder steps)."""
    states = []
    for cell, lr, seed in planned_runs():
        name = run_name(cell, lr, seed)
        states.append(_state(name))
        params = parameter_count(cell.kind, cell.hidden_size)
        print(f"{name:<24} {cell.matched:<14} params {params:>6}  {states[-1]}")
    done, fresh = states.count("done"), states.count("to run")
    started = len(states) - done - fresh
    print(
        f"{done} of {len(states)} planned runs done, {started} started, {fresh} not started "
        "(a cell's seed runs join the plan when its screen ends)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.capacity", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="list every run and whether it finished")
    r = sub.add_parser("run", help="train the missing runs, one at a time")
    r.add_argument("--only", help="only runs whose name contains this (e.g. lstm50)")
    r.add_argument("--max-runs", type=int, help="stop after this many runs")
    r.add_argument(
        "--wait",
        action="store_true",
        help="wait for runs other runners are training (and train what follows them) instead of returning",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runners in all, side by side (each one torch thread; they wait for each other's runs)",
    )
    rep = sub.add_parser("report", help="every finished run, the headline cells per K, the plot")
    rep.add_argument("--plot", type=Path)
    rep.add_argument("--json", type=Path)
    rep.add_argument("--markdown", type=Path, help="the run, per-K and stress tables for docs/results.md")
    rep.add_argument(
        "--stress-rows",
        type=int,
        default=STRESS_ROWS,
        help="rows per fresh/stress set and checkpoint (0: none)",
    )
    args = p.parse_args(argv)
    if args.command == "run" and args.workers < 1:
        p.error("--workers must be at least 1")
    if args.command == "plan":
        return plan()
    if args.command == "run":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds: stops training
        return run(args.only, args.max_runs, args.wait, args.workers)
    return report(args.plot, args.json, args.markdown, args.stress_rows)


if __name__ == "__main__":
    sys.exit(main())
