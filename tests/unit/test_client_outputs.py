"""Writers and the resume scan: whole lines only, a torn or garbled tail is cut, resume is exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.outputs import (
    CSV_COLUMNS,
    OutputWriter,
    ResumeError,
    parse_csv_record,
    parse_jsonl_record,
    scan_for_resume,
)


def answered(line, value="9", label=None, k=2):
    r = {"line": line, "id": f"r{line}", "value": value, "confidence": 0.75, "num_pairs": k}
    if label is not None:
        r["label"] = label
        r["correct"] = value == label
    return r


def failed(line, code="malformed", message="bad, really\nbad"):
    return {
        "line": line,
        "id": line,
        "value": None,
        "confidence": None,
        "error": {"code": code, "message": message, "field": "sequence"},
    }


RECORDS = [answered(1, label="9"), failed(2), answered(4, value="3", label="4", k=3), answered(5)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_records_round_trip_one_line_each_and_the_scan_rebuilds_the_summary(tmp_path, fmt):
    path = str(tmp_path / f"out.{fmt}")
    with OutputWriter(path, fmt) as w:
        w.write(RECORDS[:2])
        w.write(RECORDS[2:])
    lines = Path(path).read_text().splitlines()
    assert len(lines) == len(RECORDS) + (fmt == "csv")
    if fmt == "csv":
        assert lines[0] == ",".join(CSV_COLUMNS)
    point = scan_for_resume(path, fmt)
    assert (point.last_line, point.rows, point.dropped_bytes) == (5, 4, 0)
    s = point.stats
    assert (s.rows, s.errors, s.labelled, s.correct) == (4, 1, 2, 1)
    assert s.by_pairs == {2: [1, 1], 3: [1, 0]}
    assert s.first_errors == [(2, "malformed", "bad, really bad" if fmt == "csv" else "bad, really\nbad")]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_partial_last_row_is_cut_and_the_run_goes_on_after_the_last_whole_one(tmp_path, fmt):
    path = str(tmp_path / f"out.{fmt}")
    with OutputWriter(path, fmt) as w:
        w.write(RECORDS)
    whole = Path(path).read_bytes()
    torn = whole[: whole.rindex(b"\n", 0, len(whole) - 1) + 1 + 7]  # 7 bytes of the last row
    Path(path).write_bytes(torn)
    point = scan_for_resume(path, fmt)
    assert (point.last_line, point.rows, point.dropped_bytes) == (4, 3, 7)
    assert Path(path).read_bytes() == whole[: len(torn) - 7]
    with OutputWriter(path, fmt) as w:  # appending after the cut gives the same file as an uninterrupted run
        w.write(RECORDS[3:])
    assert Path(path).read_bytes() == whole


def test_a_garbled_tail_after_a_power_loss_is_cut(tmp_path):
    path = str(tmp_path / "out.jsonl")
    with OutputWriter(path, "jsonl") as w:
        w.write(RECORDS[:2])
    good = Path(path).read_bytes()
    Path(path).write_bytes(good + b"\0" * 100 + b"\n" + b'{"line": 9}\n')
    point = scan_for_resume(path, "jsonl")
    assert (point.last_line, point.rows) == (2, 2)
    assert Path(path).read_bytes() == good


def test_a_torn_csv_header_is_rewritten(tmp_path):
    path = str(tmp_path / "out.csv")
    Path(path).write_bytes(b"line,id,va")
    point = scan_for_resume(path, "csv")
    assert (point.last_line, point.rows) == (0, 0)
    with OutputWriter(path, "csv") as w:
        w.write(RECORDS[:1])
    assert Path(path).read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_an_output_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResumeError, match="header"):
        scan_for_resume(str(path), "csv")
    path = tmp_path / "out.jsonl"
    path.write_text('{"line": 5}\n{"line": 3}\n')
    with pytest.raises(ResumeError, match="order"):
        scan_for_resume(str(path), "jsonl")


def test_a_missing_output_resumes_from_the_start(tmp_path):
    assert scan_for_resume(str(tmp_path / "none.jsonl"), "jsonl").last_line == 0


def test_parsers_reject_foreign_lines():
    with pytest.raises(ValueError):
        parse_jsonl_record('{"id": 1}')
    with pytest.raises(ValueError):
        parse_csv_record("1,2,3")
