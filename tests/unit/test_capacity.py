"""The capacity study: matched sizes, lr chosen on validation only, seeds pooled per K in the report."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from model import capacity
from model.checkpoint import Checkpoint, build_model, file_sha256, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data import STRESS_SETS


@pytest.fixture(autouse=True)
def _records(tmp_path, monkeypatch):
    """Each test keeps its finished runs' records in a folder of its own, never the tracked results/."""
    monkeypatch.setattr(capacity, "RECORDS", tmp_path / "records")
    return tmp_path / "records"


def test_equal_parameter_cells_match_fast_weights_count_within_two_percent():
    by_name = {c.name: c for c in capacity.cells()}
    assert {"fast50", "lstm50", "irnn50", "fast100", "lstm100", "irnn100"} <= set(by_name)
    for h in (50, 100):
        target = capacity.parameter_count("fast", h)
        matched = [c for c in capacity.cells() if c.matched == f"P(fast H={h})"]
        assert [c.kind for c in matched] == ["lstm"]  # the IRNN at equal H is already within 1%
        for cell in matched:
            assert abs(capacity.parameter_count(cell.kind, cell.hidden_size) - target) / target < 0.02
        assert abs(capacity.parameter_count("irnn", h) - target) / target < 0.01


def _fake_run(runs, name, valid, per_k, finished=True):
    cfg = ModelConfig(hidden_size=8, embed_size=8)
    n = sum(v["n"] for v in per_k.values())
    wrong = sum(v["error"] * v["n"] for v in per_k.values())
    metrics = {"valid": {"error": valid, "n": 10}, "test": {"error": wrong / n, "n": n, "per_k": per_k}}
    if not finished:  # a run still training: no test metrics yet
        del metrics["test"]
    ckpt = Checkpoint(
        cfg, build_model(cfg).state_dict(), metrics=metrics, optimizer_state={"state": {"m": 1}}
    )
    save_checkpoint(ckpt, runs / f"{name}.pt")


def test_the_lr_is_chosen_on_validation_and_the_report_pools_only_its_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    cell = next(c for c in capacity.cells() if c.name == "fast50")
    assert capacity.chosen_lr(cell) is None  # no screen run finished
    k = {1: {"error": 0.5, "n": 4}}
    _fake_run(tmp_path, "fast50_lr0.0003_s0", 0.2, {1: {"error": 0.0, "n": 4}})  # best test, worse valid
    _fake_run(tmp_path, "fast50_lr0.001_s0", 0.1, k)
    _fake_run(tmp_path, "fast50_lr0.003_s0", 0.3, k)
    assert capacity.chosen_lr(cell) == 1e-3
    planned = [(c.name, lr, s) for c, lr, s in capacity.planned_runs() if c.name == "fast50"]
    assert ("fast50", 1e-3, 1) in planned and ("fast50", 1e-3, 2) in planned
    assert ("fast50", 3e-4, 1) not in planned
    _fake_run(tmp_path, "fast50_lr0.001_s1", 0.1, {1: {"error": 0.25, "n": 4}})
    md = tmp_path / "report.md"
    assert capacity.report(tmp_path / "plot.png", tmp_path / "report.json", md, stress_rows=40) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["headline"]["fast50 (H=50)"] == {"1": [3, 8]}  # 2 + 1 wrong of 4 + 4: seeds 0 and 1
    assert report["seeds"] == {"fast50 (H=50)": 2}
    assert len(report["runs"]) == 4 and (tmp_path / "plot.png").stat().st_size > 0
    # Fresh and stress sequences: the chosen lr's two checkpoints only (40 rows each), every named set.
    stress = report["stress"]["fast50 (H=50)"]
    assert set(stress) == {"random", *STRESS_SETS} and all(
        n == 80 and 0 <= w <= n for w, n in stress.values()
    )
    each = [capacity.stress_errors(capacity.RECORDS / f"fast50_lr0.001_s{seed}.pt", 40) for seed in (0, 1)]
    assert stress == {name: [each[0][name][0] + each[1][name][0], 80] for name in stress}
    text = md.read_text()
    # every rate with its interval, valid (2 of 10) as well as test; 0 errors: a bound
    assert "| fast50_lr0.0003_s0 | H=50 | 17560 | 2/10 = 20.00% (2.52-55.61%) | 0/4 (< 52.71%) |  |" in text
    assert "| 1 | 3/8 = 37.50% (8.52-75.51%) |" in text and "fast50 (H=50), 2 seed(s)" in text
    assert "| fast50 (H=50) | " in text.split("| cell (chosen lr, seeds pooled) |")[1]


def test_a_finished_run_is_kept_as_a_record_that_outlives_its_runs_folder(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(capacity, "RUNS", runs)
    real_run = subprocess.run

    def fake_train(command, **kwargs):
        if "model.train" not in command:
            return real_run(command, **kwargs)
        name = Path(command[command.index("--out") + 1]).stem
        kwargs["stdout"].write(f"{name}: trained\n")
        _fake_run(runs, name, 0.3, {1: {"error": 0.25, "n": 4}})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(capacity.subprocess, "run", fake_train)
    assert capacity.run(only="fast50_lr0.0003", max_runs=None) == 0  # one run, through the runner
    record = capacity.RECORDS / "fast50_lr0.0003_s0.pt"
    assert f"kept in {record}" in capsys.readouterr().out
    kept = load_checkpoint(record)
    trained = load_checkpoint(runs / "fast50_lr0.0003_s0.pt")
    assert kept.optimizer_state is None and trained.optimizer_state is not None  # the record leaves it out
    assert kept.metrics == trained.metrics and kept.config == trained.config
    assert all(torch.equal(kept.state_dict[k], v) for k, v in trained.state_dict.items())
    assert (capacity.RECORDS / "fast50_lr0.0003_s0.log").read_text() == "fast50_lr0.0003_s0: trained\n"
    # Runs that finished with no runner to keep them (one stopped after training) get their record when the
    # plan next looks; one still training gets none.
    _fake_run(runs, "fast50_lr0.001_s0", 0.1, {1: {"error": 0.25, "n": 4}})
    _fake_run(runs, "fast50_lr0.003_s0", 0.2, {1: {"error": 0.25, "n": 4}})
    _fake_run(runs, "fast50_lr0.001_s1", 0.1, {1: {"error": 0.0, "n": 4}}, finished=False)
    assert capacity.plan() == 0
    assert sorted(p.name for p in capacity.RECORDS.glob("*.pt")) == [
        "fast50_lr0.0003_s0.pt", "fast50_lr0.001_s0.pt", "fast50_lr0.003_s0.pt"
    ]  # fmt: skip
    assert capacity.report(None, tmp_path / "before.json", stress_rows=20) == 0
    shutil.rmtree(runs)  # a new machine: only the tracked records are left
    runs.mkdir()
    capacity._finished_metrics.cache_clear()
    cell = next(c for c in capacity.cells() if c.name == "fast50")
    assert capacity.chosen_lr(cell) == 1e-3 and capacity._state("fast50_lr0.001_s0") == "done"
    assert capacity._state("fast50_lr0.001_s1") == "to run"  # its training is what was lost
    assert capacity.report(None, tmp_path / "after.json", stress_rows=20) == 0
    assert (tmp_path / "after.json").read_text() == (tmp_path / "before.json").read_text()


def test_a_run_command_resumes_into_the_runs_folder():
    cell = capacity.cells()[0]
    command = capacity.train_command(cell, 1e-3, 2)
    assert command[command.index("--out") + 1].endswith("fast50_lr0.001_s2.pt") and "--resume" in command
    assert command[command.index("--seed") + 1] == "2" and "--k-start" in command


@pytest.mark.parametrize("argv", [["plan"]])
def test_the_plan_lists_every_screen_run(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    assert capacity.main(argv) == 0
    *lines, total = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * len(capacity.cells()) and all(line.endswith("to run") for line in lines)
    assert total.startswith(f"0 of {len(lines)} planned runs done, 0 started, {len(lines)} not started")
    # a finished run and one stopped at its step-6000 checkpoint (a run's checkpoint has no test metrics yet)
    _fake_run(tmp_path, "fast50_lr0.001_s0", 0.1, {1: {"error": 0.0, "n": 4}})
    cfg = ModelConfig(hidden_size=8, embed_size=8)
    partial = Checkpoint(cfg, build_model(cfg).state_dict(), step=6000, metrics={"valid": {"error": 0.2}})
    save_checkpoint(partial, tmp_path / "lstm50_lr0.001_s0.pt")
    assert capacity.main(argv) == 0
    *lines, total = capsys.readouterr().out.splitlines()
    state = {line.split()[0]: line.split("  ")[-1] for line in lines}
    assert state["fast50_lr0.001_s0"] == "done" and state["lstm50_lr0.001_s0"] == "at step 6000 of 20000"
    assert total.startswith(f"1 of {len(lines)} planned runs done, 1 started, {len(lines) - 2} not started")


def test_a_run_another_runner_holds_is_skipped_and_the_rest_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    started, real_run = [], subprocess.run

    def fake_train(command, **kwargs):
        if "model.train" not in command:  # anything else (git, for the checkpoint's code version) runs
            return real_run(command, **kwargs)
        name = Path(command[command.index("--out") + 1]).stem
        started.append(name)
        _fake_run(tmp_path, name, 0.1, {1: {"error": 0.0, "n": 4}})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(capacity.subprocess, "run", fake_train)
    with capacity.run_lock("fast50_lr0.0003_s0") as held:  # as a second runner would hold it
        assert held is not None
        assert capacity.run(only="fast50_", max_runs=None) == 0
    assert started == ["fast50_lr0.001_s0", "fast50_lr0.003_s0"]  # the held one skipped, not waited for
    with capacity.run_lock("fast50_lr0.0003_s0") as free:  # released: a later runner takes it
        assert free is not None


def test_a_runner_plans_again_after_each_run_so_the_chosen_lrs_seed_runs_follow_the_screens(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    started, real_run = [], subprocess.run
    # The screen's validation errors: 3e-3 is the best of the first three, at the screen's edge, so 1e-2 is
    # screened too; it is worse, so 3e-3 is chosen.
    valid = {"0.0003": 0.3, "0.001": 0.2, "0.003": 0.1, "0.01": 0.15}

    def fake_train(command, **kwargs):
        if "model.train" not in command:
            return real_run(command, **kwargs)
        name = Path(command[command.index("--out") + 1]).stem
        started.append(name)
        _fake_run(tmp_path, name, valid[command[command.index("--lr") + 1]], {1: {"error": 0.0, "n": 4}})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(capacity.subprocess, "run", fake_train)
    assert capacity.run(only="irnn50_", max_runs=None) == 0
    screens = [f"irnn50_lr{lr}_s0" for lr in ("0.0003", "0.001", "0.003", "0.01")]
    assert started == [*screens, "irnn50_lr0.003_s1", "irnn50_lr0.003_s2"]
    assert capacity.run(only="irnn50_", max_runs=None) == 0 and len(started) == 6  # all done: nothing reruns


def test_a_screen_whose_best_lr_is_at_its_edge_goes_on_down_the_ladder_until_the_best_is_inside(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    cell = next(c for c in capacity.cells() if c.name == "lstm50")
    k = {1: {"error": 0.5, "n": 4}}
    for lr, valid in (("0.0003", 0.2), ("0.001", 0.3), ("0.003", 0.4)):
        _fake_run(tmp_path, f"lstm50_lr{lr}_s0", valid, k)
    assert capacity.screen(cell) == ([1e-4, 3e-4, 1e-3, 3e-3], None)  # 3e-4 best, at the edge: 1e-4 next
    _fake_run(tmp_path, "lstm50_lr0.0001_s0", 0.1, k)  # better again, but the ladder ends there
    assert capacity.screen(cell) == ([1e-4, 3e-4, 1e-3, 3e-3], 1e-4)
    planned = {(c.name, lr, seed) for c, lr, seed in capacity.planned_runs()}
    assert {("lstm50", 1e-4, 1), ("lstm50", 1e-4, 2)} <= planned
    assert capacity.main(["report", "--stress-rows", "0", "--json", str(tmp_path / "r.json")]) == 0
    runs = {r["run"]: r["chosen_lr"] for r in json.loads((tmp_path / "r.json").read_text())["runs"]}
    assert runs == {
        "lstm50_lr0.0001_s0": True,
        **{f"lstm50_lr{lr}_s0": False for lr in ("0.0003", "0.001", "0.003")},
    }


def test_the_report_scores_a_checkpoint_on_the_stress_sets_once_until_it_or_the_code_changes(
    tmp_path, monkeypatch
):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(capacity, "RUNS", runs)
    for lr in ("0.0003", "0.001", "0.003"):  # a whole screen, so the report scores the chosen lr's run
        _fake_run(runs, f"fast50_lr{lr}_s0", 0.1 if lr == "0.001" else 0.3, {1: {"error": 0.0, "n": 4}})
    path = capacity.RECORDS / "fast50_lr0.001_s0.pt"  # what the report scores: the run's record
    probe = tmp_path / "fws_stress_probe.py"  # a stand-in for the sequence and scoring code
    probe.write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(capacity, "STRESS_CODE", (*capacity.STRESS_CODE, "fws_stress_probe"))
    scored = []
    real = capacity.stress_errors

    def counting(p, rows):
        scored.append((p.name, rows))
        return real(p, rows)

    monkeypatch.setattr(capacity, "stress_errors", counting)
    for _ in range(2):  # the second report reads the counts the first one kept
        assert capacity.report(None, runs / "report.json", stress_rows=30) == 0
    assert scored == [(path.name, 30)]
    first = json.loads((runs / "report.json").read_text())["stress"]["fast50 (H=50)"]
    assert first == real(path, 30) and set(first) == {"random", *STRESS_SETS}
    capacity.cached_stress_errors(path, 40)  # other rows: scored again
    probe.write_text("VERSION = 2\n")  # the code changed
    assert capacity.cached_stress_errors(path, 40) == real(path, 40)
    _fake_run(capacity.RECORDS, "fast50_lr0.001_s0", 0.1, {1: {"error": 0.25, "n": 4}})  # a new record
    capacity.cached_stress_errors(path, 40)
    assert scored == [(path.name, 30)] + [(path.name, 40)] * 3
    cache = capacity.RECORDS / "fast50_lr0.001_s0.stress.json"
    kept = json.loads(cache.read_text())
    for torn in ("{not json", b"\xff\xfe", {**kept, "errors": {}}, {**kept, "errors": []}):
        if isinstance(torn, dict):
            cache.write_text(json.dumps(torn))
        else:
            cache.write_bytes(torn if isinstance(torn, bytes) else torn.encode())
        assert capacity.cached_stress_errors(path, 40) == kept["errors"]  # scored again, never a crash
    assert len(scored) == 8 and json.loads(cache.read_text()) == kept


def test_a_waiting_runner_waits_for_another_runners_screen_and_then_trains_the_seeds_it_adds(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    monkeypatch.setattr(capacity, "WAIT_S", 0.05)
    started, real_run = [], subprocess.run
    valid = {"0.0003": 0.3, "0.001": 0.1, "0.003": 0.2}  # 1e-3 chosen, inside the screen

    def fake_train(command, **kwargs):
        if "model.train" not in command:
            return real_run(command, **kwargs)
        name = Path(command[command.index("--out") + 1]).stem
        (fd,) = kwargs["pass_fds"]  # the run's lock goes with the training process
        assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / f"{name}.lock")
        started.append(name)
        _fake_run(tmp_path, name, valid[command[command.index("--lr") + 1]], {1: {"error": 0.0, "n": 4}})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(capacity.subprocess, "run", fake_train)
    other_holds, release = threading.Event(), threading.Event()

    def other_runner():  # trains the 3e-4 screen run until told to finish it
        with capacity.run_lock("irnn50_lr0.0003_s0") as lock:
            assert lock is not None
            other_holds.set()
            release.wait(10)
            _fake_run(tmp_path, "irnn50_lr0.0003_s0", valid["0.0003"], {1: {"error": 0.0, "n": 4}})

    other = threading.Thread(target=other_runner)
    other.start()
    assert other_holds.wait(10)
    assert capacity.run(only="irnn50_", max_runs=None, wait=False) == 0  # without --wait: returns at once
    assert started == ["irnn50_lr0.001_s0", "irnn50_lr0.003_s0"]
    codes = []
    waiting = threading.Thread(target=lambda: codes.append(capacity.run("irnn50_", None, wait=True)))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive() and len(started) == 2  # waiting for the other runner's run
    release.set()
    other.join(10)
    waiting.join(10)
    assert not waiting.is_alive() and codes == [0]
    # once the other runner's screen run finished: the chosen lr's seeds
    assert started[2:] == ["irnn50_lr0.001_s1", "irnn50_lr0.001_s2"]


class FakeRunner:
    """A child runner process that exits with `code` (negative: killed by that signal)."""

    def __init__(self, command, code, signals):
        self.command, self.code, self.signals = command, code, signals

    def wait(self):
        return self.code

    def send_signal(self, signum):
        self.signals.append(signum)


def test_workers_start_that_many_runners_the_others_waiting_and_the_first_failure_is_the_exit_code(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    started, signals, child_code = [], [], [0]

    def popen(command):
        started.append(command)
        return FakeRunner(command, child_code[0], signals)

    monkeypatch.setattr(capacity.subprocess, "Popen", popen)
    loop = []
    monkeypatch.setattr(capacity, "_run_loop", lambda only, max_runs, wait: loop.append(wait) or loop_code[0])
    loop_code = [0]
    assert capacity.run(only="lstm44_", max_runs=None, workers=3) == 0
    runner = [sys.executable, "-m", "model.capacity", "run", "--wait", "--only", "lstm44_"]
    assert started == [runner, runner] and loop == [True]
    assert capacity.run(only=None, max_runs=None) == 0 and len(started) == 2 and loop[-1] is False
    capacity.run(only=None, max_runs=0, workers=2)  # --max-runs (per runner) reaches the children, 0 too
    assert started[-1][-2:] == ["--max-runs", "0"]
    child_code[0] = 3
    assert capacity.run(only=None, max_runs=None, workers=2) == 3  # a child's failure
    loop_code[0] = 2
    assert capacity.run(only=None, max_runs=None, workers=2) == 2  # this runner's failure came first
    loop_code[0], child_code[0] = 0, -9
    assert capacity.run(only=None, max_runs=None, workers=2) == 137  # killed by SIGKILL
    assert signals == []

    def interrupted(only, max_runs, wait):
        raise KeyboardInterrupt

    monkeypatch.setattr(capacity, "_run_loop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        capacity.run(only=None, max_runs=None, workers=3)
    assert signals == [signal.SIGTERM, signal.SIGTERM]  # the child runners are stopped too
    with pytest.raises(SystemExit):
        capacity.main(["run", "--workers", "0"])


RUNNER = """
import sys
from pathlib import Path
from model import capacity
capacity.RUNS = Path(sys.argv[1])
capacity.RECORDS = Path(sys.argv[1]) / "records"
sleep = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
capacity.train_command = lambda cell, lr, seed: [sys.executable, "-c", sleep, sys.argv[1] + "/train.pid"]
sys.exit(capacity.main(["run", "--only", "fast50_lr0.0003_s0"]))
"""


def _start_fake_runner(runs: Path) -> subprocess.Popen[bytes]:
    """A real runner process whose 'training' sleeps; returned once the run's lock is taken."""
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(runs)], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (runs / "train.pid").exists():
            with capacity.run_lock("fast50_lr0.0003_s0") as lock:
                if lock is None:
                    return runner
        time.sleep(0.05)
    runner.kill()
    raise AssertionError("the runner never took the run's lock")


def test_a_runs_lock_lasts_as_long_as_its_training_and_sigterm_stops_both(tmp_path, monkeypatch):
    monkeypatch.setattr(capacity, "RUNS", tmp_path)
    trainer = tmp_path / "train.pid"
    try:
        runner = _start_fake_runner(tmp_path)
        runner.send_signal(signal.SIGTERM)  # stops the runner and its training: the lock is free again
        assert runner.wait(10) == 128 + signal.SIGTERM
        with capacity.run_lock("fast50_lr0.0003_s0") as lock:
            assert lock is not None
        trainer.unlink()
        runner = _start_fake_runner(tmp_path)
        runner.kill()  # a runner killed outright: its training goes on, and still holds the run
        runner.wait(10)
        time.sleep(0.2)
        with capacity.run_lock("fast50_lr0.0003_s0") as lock:
            assert lock is None  # no second runner starts the same run beside it
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(trainer.read_text()), signal.SIGKILL)


def test_the_committed_report_and_results_md_are_what_the_committed_records_give(tmp_path, monkeypatch):
    """docs/results.md section 4 quotes results/capacity/report.md, which `report` makes (with report.json)
    from the committed records: a record added, or a number edited by hand, without the report made again
    fails here. The stress counts are each record's committed .stress.json, checked against that record's
    bytes only (whether the code that scored them changed is cached_stress_errors' key, tested above)."""
    repo = Path(__file__).resolve().parents[2]
    records = repo / "results" / "capacity"
    monkeypatch.setattr(capacity, "RECORDS", records)
    monkeypatch.setattr(capacity, "RUNS", tmp_path / "runs")  # no training run of this machine joins in

    def committed_counts(path: Path, rows: int) -> dict[str, list[int]]:
        saved = json.loads(path.with_suffix(".stress.json").read_text(encoding="utf-8"))
        assert saved["key"]["rows"] == rows and saved["key"]["checkpoint_sha256"] == file_sha256(path), path
        return saved["errors"]

    monkeypatch.setattr(capacity, "cached_stress_errors", committed_counts)
    planned = capacity.planned_runs()
    assert len(planned) == 47 and all(capacity._finished(capacity.run_name(*run)) for run in planned)
    made, made_json = tmp_path / "report.md", tmp_path / "report.json"
    assert capacity.report(None, made_json, made) == 0
    committed = (records / "report.md").read_text(encoding="utf-8")
    assert made.read_text(encoding="utf-8") == committed
    assert made_json.read_text(encoding="utf-8") == (records / "report.json").read_text(encoding="utf-8")
    results = (repo / "docs" / "results.md").read_text(encoding="utf-8")
    study = results[results.index("### The capacity study") :]
    tables = re.findall(r"(?:^\|.*\|\n)+", committed, re.M)
    assert [t.split(" | ")[0] for t in tables] == ["| run", "| K", "| cell (chosen lr, seeds pooled)"]
    for table in tables:
        assert table in study, table.splitlines()[0]
