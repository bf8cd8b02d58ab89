import contextlib
import io
import json
import re

import pytest

from model.checkpoint import load_checkpoint
from model.data import fixed_split
from model.evaluate import error_report
from model.reproduce import RunResult, _cell, main
from model.stats import rate_with_interval

STEPS = 15


def _tables(text):
    """The Markdown tables in `text`, each as a list of rows of stripped cells (separator rows dropped)."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            if not re.fullmatch(r"\|(---\|)+", line):
                current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    argv = ["--steps", str(STEPS), "--seeds", "3", "--threads", "1", "--out-dir", str(out)]
    argv += ["--eval-every", "10", "--eval-size", "200", "--train-size", "2000"]
    argv += ["--markdown", str(out / "t.md")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, argv, printed.getvalue()


def test_reproduce_prints_table_one_with_numbers_read_from_its_checkpoints(reproduced):
    out, _, printed = reproduced
    summary, runs = _tables(printed)

    assert summary[0] == ["Model", "R=20 ours", "R=20 paper", "R=50 ours", "R=50 paper"]
    rows = {row[0]: row[1:] for row in summary[1:]}
    assert set(rows) == {"Fast weights", "LSTM", "IRNN"}
    assert [rows["Fast weights"][1], rows["Fast weights"][3]] == ["1.81%", "0.00%"]
    assert [rows["LSTM"][1], rows["LSTM"][3]] == ["60.81%", "1.85%"]
    assert [rows["IRNN"][1], rows["IRNN"][3]] == ["62.11%", "60.23%"]

    assert runs[0][:5] == ["Run", "Steps", "Test error", "Valid error", "Wall time (train)"]
    assert len(runs) == 1 + 6
    test_split = fixed_split("test", 4, 4)
    names = {"fast": "Fast weights", "lstm": "LSTM", "irnn": "IRNN"}
    for name, steps, test_error, _, wall, settings, path in runs[1:]:
        ckpt = load_checkpoint(path.strip("`"))
        assert name == f"{ckpt.config.kind}_R{ckpt.config.hidden_size}_seed3"
        assert ckpt.seed == 3 and int(steps) == ckpt.step == STEPS
        assert settings.startswith("lr 0.001 constant")
        # Evaluate the checkpoint's weights afresh: the printed number must be theirs.
        fresh = error_report(ckpt.model(), test_split)["error"]
        assert test_error == rate_with_interval(round(fresh * len(test_split)), len(test_split))
        column = 1 if ckpt.config.hidden_size == 20 else 3
        assert rows[names[ckpt.config.kind]][column - 1] == test_error
        assert wall.endswith(" s") and float(wall[:-2]) >= 0
        record = json.loads((out / f"{name}.json").read_text())
        assert record["test_error"] == pytest.approx(fresh) and record["steps"] == STEPS
    assert (out / "t.md").read_text().strip() in printed


def test_a_second_run_reuses_the_checkpoints_and_summarize_rebuilds_the_same_table(reproduced, capsys):
    out, argv, _ = reproduced
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("reusing the finished checkpoint") == 6
    assert main(["--summarize", *sorted(str(p) for p in out.glob("*.pt"))]) == 0
    summarized = capsys.readouterr().out
    assert _tables(summarized) == _tables(again)


def test_a_cell_of_several_seeds_pools_their_counts_and_lists_each_seed():
    def run(seed, wrong, settings="lr 0.001 constant"):
        n = 20_000
        return RunResult("fast", 50, seed, 10, wrong / n, None, n, None, 1.0, f"s{seed}.pt", settings)

    pooled = "3/40000 = 0.0075% (0.0015-0.022%) (2 seeds pooled: 3/20000, 0/20000)"
    assert _cell([run(0, 3), run(1, 0)]) == pooled
    assert _cell([run(0, 0)]) == "0/20000 (< 0.015%)"
    assert _cell([run(0, 3), run(1, 0, "lr 0.003 constant")]) == "different settings: see the runs below"
