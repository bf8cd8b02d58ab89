"""Input readers: JSONL, CSV or plain text, from a file or stdin, streamed one row at a time.

Every row carries its 1-based line number in the input (for CSV, the line its record starts on): errors are
reported by line and `--resume` finds its place by line. Blank lines are skipped (never scored, never
written). A row that cannot even be turned into a request (bad JSON, not an object, a missing column) becomes
a `Row` with `error` set: it is written to the output as a row error and never stops the run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

FORMATS = ("jsonl", "csv", "text")
# Keys of a JSONL row that belong to the client, not to the request item.
CLIENT_KEYS = ("id", "label")


@dataclass(slots=True)
class Row:
    line: int
    id: Any
    item: dict[str, Any] | None  # the request item ({"sequence"} or {"pairs", "query"}); None on error
    label: str | None = None
    error: dict[str, str] | None = None


def _error(code: str, message: str, field: str = "line") -> dict[str, str]:
    return {"code": code, "message": message, "field": field}


def format_from_path(path: str) -> str | None:
    """The input format implied by a file name, or None when the name does not say."""
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    if lower.endswith(".txt"):
        return "text"
    return None


def sniff_format(first_line: str) -> str:
    """Guess from the first non-blank line: a JSON object, a CSV header naming `sequence`, or text."""
    stripped = first_line.strip()
    if stripped.startswith("{"):
        return "jsonl"
    if "," in stripped and "sequence" in [c.strip().lower() for c in stripped.split(",")]:
        return "csv"
    return "text"


def open_text(path: str) -> IO[str]:
    """Open an input (`-`: stdin) as UTF-8; undecodable bytes become U+FFFD (the server rejects them)."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _label(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def read_jsonl(lines: Iterator[str]) -> Iterator[Row]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            yield Row(number, number, None, error=_error("invalid_json", f"line {number}: {exc}"))
            continue
        if not isinstance(obj, dict):
            yield Row(number, number, None, error=_error("invalid_row", f"line {number}: not a JSON object"))
            continue
        row_id = obj.pop("id", number)
        label = _label(obj.pop("label", None))
        # Everything else goes to the server as it is: it validates the grammar and rejects unknown fields.
        yield Row(number, row_id, obj, label)


def read_text(lines: Iterator[str]) -> Iterator[Row]:
    for number, text in enumerate(lines, start=1):
        sequence = text.strip()
        if sequence:
            yield Row(number, number, {"sequence": sequence})


def read_csv(lines: Iterator[str], delimiter: str = ",") -> Iterator[Row]:
    """CSV with a header row naming `sequence` and optionally `id` and `label` (other columns are ignored)."""
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number = start
            start = reader.line_num + 1
            yield Row(number, number, None, error=_error("invalid_csv", f"line {number}: {exc}"))
            continue
        number, start = start, reader.line_num + 1
        if not record or all(not cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            if "sequence" not in header:
                raise InputError(f"CSV header (line {number}) has no 'sequence' column: {record!r}")
            i_seq = header.index("sequence")
            i_id = header.index("id") if "id" in header else None
            i_label = header.index("label") if "label" in header else None
            continue
        if len(record) <= i_seq:
            yield Row(
                number,
                number,
                None,
                error=_error("invalid_row", f"line {number}: {len(record)} columns, no 'sequence' value"),
            )
            continue
        row_id: Any = record[i_id] if i_id is not None and i_id < len(record) and record[i_id] else number
        label = _label(record[i_label]) if i_label is not None and i_label < len(record) else None
        yield Row(number, row_id, {"sequence": record[i_seq].strip()}, label)


class InputError(Exception):
    """The input as a whole cannot be read (not one bad row: those become row errors)."""


def read_rows(stream: IO[str], fmt: str | None, path: str = "-") -> tuple[str, Iterator[Row]]:
    """Pick the format (explicit, from the file name, or sniffed from the first line) and stream the rows."""
    fmt = fmt or format_from_path(path)
    lines: Iterator[str] = iter(stream)
    if fmt is None:
        head: list[str] = []
        for text in lines:
            head.append(text)
            if text.strip():
                break
        fmt = sniff_format(head[-1]) if head else "text"
        lines = _chain(head, lines)
    if fmt == "jsonl":
        return fmt, read_jsonl(lines)
    if fmt == "csv":
        return fmt, read_csv(lines, "\t" if path.lower().endswith(".tsv") else ",")
    if fmt == "text":
        return fmt, read_text(lines)
    raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def count_lines(path: str, block: int = 1 << 20) -> int | None:
    """Physical lines in a regular file (for the progress bar's ETA); None for stdin or non-regular files."""
    if path == "-" or not os.path.isfile(path):
        return None
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(block):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
