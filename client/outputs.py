"""Output writers (JSONL or CSV) that never leave a half-written row, and the resume scan that relies on it.

Rows are written in input order, one record per physical line, a whole chunk per `write` call, with an
`fsync` at most every `sync_interval` seconds. A crash can therefore only leave whole lines followed by at
most one partial (or, after a power loss, garbled) tail. `scan_for_resume` keeps the longest prefix of whole,
parseable records, truncates the rest, and returns the input line of the last record kept: the run
continues after it, so no row is scored twice and none is skipped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from client.stats import Stats

try:  # orjson (the serve extra) is ~5x faster; the client works without it.
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - exercised only without the serve extra

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


OUTPUT_FORMATS = ("jsonl", "csv")
CSV_COLUMNS = (
    "line",
    "id",
    "value",
    "confidence",
    "num_pairs",
    "label",
    "correct",
    "error_code",
    "error_field",
    "error_message",
)


def output_format_from_path(path: str) -> str:
    return "csv" if path.lower().endswith(".csv") else "jsonl"


class ResumeError(Exception):
    """The existing output cannot be continued (not ours, or out of order)."""


def _one_line(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\r", " ").replace("\n", " ")


def encode_jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(dumps(r) + b"\n" for r in records)


def encode_csv(records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for r in records:
        err = r.get("error") or {}
        correct = r.get("correct")
        writer.writerow(
            [
                r["line"],
                _one_line(r.get("id")),
                _one_line(r.get("value")),
                "" if r.get("confidence") is None else r["confidence"],
                "" if r.get("num_pairs") is None else r["num_pairs"],
                _one_line(r.get("label")),
                "" if correct is None else int(correct),
                _one_line(err.get("code")),
                _one_line(err.get("field")),
                _one_line(err.get("message")),
            ]
        )
    return buf.getvalue().encode()


def csv_header() -> bytes:
    return (",".join(CSV_COLUMNS) + "\n").encode()


def parse_csv_record(line: str) -> dict[str, Any]:
    """One CSV output line back into the record dict the writer was given (as far as the summary needs)."""
    cells = next(csv.reader([line]))
    if len(cells) != len(CSV_COLUMNS):
        raise ValueError(f"expected {len(CSV_COLUMNS)} columns, got {len(cells)}")
    c = dict(zip(CSV_COLUMNS, cells, strict=True))
    record: dict[str, Any] = {"line": int(c["line"]), "id": c["id"]}
    if c["error_code"]:
        record["error"] = {"code": c["error_code"], "field": c["error_field"], "message": c["error_message"]}
    else:
        record["value"] = c["value"]
        record["confidence"] = float(c["confidence"])
        record["num_pairs"] = int(c["num_pairs"]) if c["num_pairs"] else None
    if c["label"]:
        record["label"] = c["label"]
    return record


def parse_jsonl_record(line: str) -> dict[str, Any]:
    record = loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("line"), int):
        raise ValueError("not an output record")
    return record


@dataclass
class ResumePoint:
    last_line: int  # input line of the last record kept (0: start from the beginning)
    rows: int
    kept_bytes: int
    dropped_bytes: int  # a partial or garbled tail that was cut off
    stats: Stats


def scan_for_resume(path: str, fmt: str, truncate: bool = True) -> ResumePoint:
    """Read an existing output, keep its longest valid prefix (truncating the rest) and say where to go on."""
    stats = Stats()
    last_line = 0
    kept = 0
    if not os.path.exists(path):
        return ResumePoint(0, 0, 0, 0, stats)
    size = os.path.getsize(path)
    parse = parse_csv_record if fmt == "csv" else parse_jsonl_record
    with open(path, "rb") as f:
        if fmt == "csv":
            header = f.readline()
            if header == csv_header():
                kept = len(header)
            elif header and (csv_header().startswith(header) and not header.endswith(b"\n")):
                kept = 0  # a torn header: rewrite it
            elif header:
                raise ResumeError(f"{path}: first line is not this client's CSV header")
            else:
                kept = 0
            if kept == 0:
                f.seek(size)  # nothing usable after a bad header
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a partial last line
            try:
                record = parse(raw.decode())
            except (ValueError, UnicodeDecodeError, StopIteration):
                break  # garbled tail (after a power loss the tail may be zeros)
            if record["line"] <= last_line:
                raise ResumeError(
                    f"{path}: record for input line {record['line']} follows line {last_line}; "
                    "this output is not in input order, so it was not written by this client"
                )
            last_line = record["line"]
            stats.add(record)
            kept += len(raw)
    if truncate and kept < size:
        with open(path, "r+b") as f:
            f.truncate(kept)
            f.flush()
            os.fsync(f.fileno())
    stats.resumed_rows = stats.rows
    return ResumePoint(last_line, stats.rows, kept, size - kept, stats)


class OutputWriter:
    """Appends whole chunks of records; `-` writes to stdout (not resumable)."""

    def __init__(self, path: str, fmt: str, sync_interval: float = 1.0):
        self.path = path
        self.fmt = fmt
        self.sync_interval = sync_interval
        self._last_sync = time.monotonic()
        if path == "-":
            self.fd = os.dup(1)
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if fmt == "csv" and (path == "-" or os.fstat(self.fd).st_size == 0):
            self._write(csv_header())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self._write(encode_csv(records) if self.fmt == "csv" else encode_jsonl(records))
        now = time.monotonic()
        if self.path != "-" and now - self._last_sync >= self.sync_interval:
            os.fsync(self.fd)
            self._last_sync = now

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.path != "-":
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
