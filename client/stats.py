"""Counters for the summary: rows, errors by code, retries, and accuracy per number of pairs when labelled."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    rows: int = 0  # rows written (answered or errored)
    errors: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    first_errors: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message), a few
    labelled: int = 0  # answered rows that had a label
    correct: int = 0
    by_pairs: dict[int, list[int]] = field(default_factory=dict)  # num_pairs -> [labelled, correct]
    requests: int = 0
    retries: int = 0
    resumed_rows: int = 0  # rows found already scored in the output when resuming

    keep_errors: int = 10

    def add(self, record: dict[str, Any]) -> None:
        """Count one output record (the same dicts the writer writes, so a resume scan rebuilds the same)."""
        self.rows += 1
        error = record.get("error")
        if error:
            self.errors += 1
            code = str(error.get("code", "unknown"))
            self.error_codes[code] += 1
            if len(self.first_errors) < self.keep_errors:
                self.first_errors.append((int(record["line"]), code, str(error.get("message", ""))))
            return
        label = record.get("label")
        if label is None:
            return
        ok = record.get("value") == label
        self.labelled += 1
        self.correct += ok
        k = record.get("num_pairs")
        if isinstance(k, int):
            cell = self.by_pairs.setdefault(k, [0, 0])
            cell[0] += 1
            cell[1] += ok

    def add_all(self, records: list[dict[str, Any]]) -> None:
        """`add` for a chunk of records: the common answered, unlabelled record costs one lookup here."""
        add = self.add
        plain = 0
        for record in records:
            if "label" in record or "error" in record:
                add(record)
            else:
                plain += 1
        self.rows += plain

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self, elapsed_s: float, scored_now: int) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_this_run": scored_now,
            "resumed_rows": self.resumed_rows,
            "errors": self.errors,
            "error_codes": dict(self.error_codes),
            "first_errors": [{"line": ln, "code": c, "message": m} for ln, c, m in self.first_errors],
            "requests": self.requests,
            "retries": self.retries,
            "elapsed_s": round(elapsed_s, 3),
            "rows_per_s": round(scored_now / elapsed_s, 1) if elapsed_s > 0 else None,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "accuracy_by_pairs": {
                str(k): {"rows": n, "accuracy": c / n} for k, (n, c) in sorted(self.by_pairs.items())
            },
        }

    def render(self, elapsed_s: float, scored_now: int) -> str:
        d = self.to_dict(elapsed_s, scored_now)
        lines = [
            f"rows: {d['rows']} ({d['rows_this_run']} this run"
            + (f", {d['resumed_rows']} from the previous run)" if d["resumed_rows"] else ")"),
            f"errors: {d['errors']}"
            + (
                " (" + ", ".join(f"{c}: {n}" for c, n in sorted(d["error_codes"].items())) + ")"
                if d["errors"]
                else ""
            ),
            f"requests: {d['requests']}, retries: {d['retries']}",
            f"time: {d['elapsed_s']:.2f} s, throughput: {d['rows_per_s'] or 0:.0f} rows/s",
        ]
        for e in d["first_errors"]:
            lines.append(f"  line {e['line']}: {e['code']}: {e['message']}")
        if d["accuracy"] is not None:
            lines.append(f"accuracy: {d['accuracy']:.4f} on {d['labelled']} labelled rows")
            for k, cell in d["accuracy_by_pairs"].items():
                lines.append(f"  {k} pairs: {cell['accuracy']:.4f} ({cell['rows']} rows)")
        return "\n".join(lines)
