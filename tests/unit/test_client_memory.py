"""Streaming: the memory a run holds does not grow with the number of rows (reader -> pipeline -> writer)."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from collections.abc import Iterator

from client.inputs import Row, read_rows
from client.outputs import OutputWriter
from client.scorer import _record, chunked, run_pipeline


class Lines(io.TextIOBase):
    """A text stream of `n` generated lines that is never held in memory as a whole."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self) -> Iterator[str]:
        return (
            f'{{"id": "r{i}", "sequence": "a{i % 10}b{(i + 3) % 10}??a", "label": "{i % 10}"}}\n'
            for i in range(self.n)
        )


async def fake_score(rows: list[Row]) -> list[dict]:
    await asyncio.sleep(0)
    return [_record(r, {"value": r.item["sequence"][1], "confidence": 0.5, "num_pairs": 2}) for r in rows]


def peak_bytes(n: int, path: str) -> int:
    tracemalloc.start()
    try:
        _, rows = read_rows(Lines(n), "jsonl")
        with OutputWriter(path, "jsonl") as writer:
            asyncio.run(run_pipeline(chunked(rows, 256), fake_score, writer.write, concurrency=4))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_the_same_for_5k_and_50k_rows(tmp_path):
    small = peak_bytes(5_000, str(tmp_path / "small.jsonl"))
    large = peak_bytes(50_000, str(tmp_path / "large.jsonl"))
    assert sum(1 for _ in (tmp_path / "large.jsonl").open()) == 50_000
    # 10x the rows may not cost 10x the memory: the window is 2 x concurrency chunks, whatever the input.
    assert large < small * 1.3 + 256 * 1024, (small, large)
