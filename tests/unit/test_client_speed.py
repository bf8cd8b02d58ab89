"""The per-row fast paths of issue 5 give exactly what the general code gives, and the GC setting keeps
collecting cycles."""

from __future__ import annotations

import gc
import subprocess
import sys

from client.__main__ import quiet_gc, run_loop
from client.inputs import Row
from client.scorer import _record, _records
from client.stats import Stats


def sample() -> tuple[list[Row], list[dict]]:
    rows, answers = [], []
    for i in range(1, 41):
        label = None if i % 3 else str(i % 10)
        rows.append(Row(i, f"id{i}" if i % 2 else i, {"sequence": "a1b2??a"}, label))
        if i % 7 == 0:
            answers.append({"error": {"code": "malformed", "message": "bad", "field": "sequence"}})
        else:
            answers.append(
                {"index": i, "value": str(i % 10 if i % 4 else 0), "confidence": 0.5, "num_pairs": i % 8}
            )
    return rows, answers


def test_records_fast_path_equals_the_general_record_builder_key_order_included():
    rows, answers = sample()
    fast = _records(rows, answers)
    slow = [_record(r, a) for r, a in zip(rows, answers, strict=True)]
    assert fast == slow
    assert [list(f) for f in fast] == [list(s) for s in slow]  # same JSON key order in the output
    assert any(f.get("correct") is True for f in fast) and any(f.get("correct") is False for f in fast)


def test_stats_add_all_counts_like_add_one_by_one():
    rows, answers = sample()
    plain = {"line": 99, "id": 99, "value": "1", "confidence": 0.9, "num_pairs": 1}
    records = [*_records(rows, answers), plain]
    one, many = Stats(), Stats()
    for r in records:
        one.add(r)
    many.add_all(records)
    assert one == many
    assert many.rows == len(records) and many.errors > 0 and many.labelled > 0


def test_quiet_gc_keeps_collecting_cycles():
    old = gc.get_threshold()
    try:
        quiet_gc(threshold=1000)
        assert gc.isenabled() and gc.get_threshold()[0] == 1000

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2  # the cycle is still found and freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


def test_the_client_imports_httpx_without_its_command_line_tool():
    code = (
        "import sys, client.__main__, httpx; "
        "assert httpx.AsyncClient; "
        "print(sorted(m for m in ('click', 'rich', 'pygments') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_loop_uses_uvloop_when_installed_and_returns_the_result():
    import asyncio

    async def loop_module() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_module()).startswith("uvloop")  # uvloop comes with uvicorn[standard] here


def test_run_loop_falls_back_to_plain_asyncio_without_uvloop():
    code = (
        "import sys; sys.modules['uvloop'] = None\n"
        "import asyncio\nfrom client.__main__ import run_loop\n"
        "async def f():\n    return type(asyncio.get_running_loop()).__module__\n"
        "print(run_loop(f()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("asyncio")
