"""The scoring engine against an in-memory transport: order, splitting, retries, round-robin, failure."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from client.inputs import Row
from client.retry import RetryPolicy
from client.scorer import RunFailed, ScoreConfig, Scorer, chunked, run_pipeline
from client.stats import Stats

FAST = RetryPolicy(max_attempts=5, base=0.001, cap=0.004)


def answer(item):
    """A stand-in for the server: the value stored under the query key, or a per-item error."""
    seq = item.get("sequence", "")
    if "??" not in seq:
        return {"error": {"code": "malformed", "message": "no ??", "field": "sequence"}}
    body, key = seq.split("??")
    pairs = dict(zip(body[0::2], body[1::2], strict=False))
    return {"value": pairs.get(key, "0"), "confidence": 0.5, "num_pairs": len(pairs)}


def batch_response(request, max_items=None):
    items = json.loads(request.content)["items"]
    if max_items is not None and len(items) > max_items:
        return httpx.Response(413, json={"error": {"code": "too_large", "message": "too big"}})
    results = [{"index": i, **answer(item)} for i, item in enumerate(items)]
    return httpx.Response(200, json={"model": "fastweights", "version": "1", "results": results})


def rows(n, bad_every=0):
    out = []
    for i in range(1, n + 1):
        if bad_every and i % bad_every == 0:
            out.append(Row(i, i, {"sequence": "zz"}))
        else:
            out.append(Row(i, i, {"sequence": f"a{i % 10}b{(i + 1) % 10}??a"}, label=str(i % 10)))
    return out


def score_all(handler, the_rows, urls=("http://s1",), chunk=7, concurrency=3, policy=FAST, written=None):
    stats = Stats()
    written = [] if written is None else written

    async def go():
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport) as http:
            scorer = Scorer(ScoreConfig(urls=list(urls), policy=policy), http, stats)
            await run_pipeline(chunked(the_rows, chunk), scorer.score_chunk, written.extend, concurrency)

    asyncio.run(go())
    return written, stats


def test_answers_are_written_in_input_order_even_when_requests_finish_out_of_order():
    rng = random.Random(0)

    async def handler(request):
        await asyncio.sleep(rng.uniform(0, 0.01))
        return batch_response(request)

    written, stats = score_all(handler, rows(200))
    assert [r["line"] for r in written] == list(range(1, 201))
    assert all(r["value"] == str(r["line"] % 10) and r["correct"] for r in written)
    assert stats.requests == len(range(0, 200, 7))


def test_row_errors_from_the_server_and_from_the_reader_never_stop_the_run():
    the_rows = rows(30, bad_every=10)
    the_rows.insert(5, Row(99, 99, None, error={"code": "invalid_json", "message": "x", "field": "line"}))
    the_rows.sort(key=lambda r: r.line)
    written, _ = score_all(lambda req: batch_response(req), the_rows)
    assert [r["line"] for r in written] == [r.line for r in the_rows]
    errors = {r["line"]: r["error"]["code"] for r in written if "error" in r}
    assert errors == {10: "malformed", 20: "malformed", 30: "malformed", 99: "invalid_json"}
    assert all("correct" not in r for r in written if "error" in r)


def test_overloaded_and_unreachable_servers_are_retried_honouring_retry_after():
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused", request=request)
        if calls["n"] == 2:
            return httpx.Response(
                503, headers={"Retry-After": "0.05"}, json={"error": {"code": "overloaded"}}
            )
        if calls["n"] == 3:
            return httpx.Response(429, json={"error": "slow down"})
        return batch_response(request)

    loop_time = {}

    async def timed(req):
        loop_time.setdefault(calls["n"] + 1, asyncio.get_running_loop().time())
        return handler(req)

    written, stats = score_all(timed, rows(5), chunk=5, concurrency=1)
    assert [r["line"] for r in written] == [1, 2, 3, 4, 5]
    assert (stats.requests, stats.retries) == (4, 3)
    assert loop_time[3] - loop_time[2] >= 0.05  # Retry-After honoured, not the millisecond backoff


def test_a_refused_batch_is_split_until_the_rows_at_fault_are_alone():
    def handler(request):
        items = json.loads(request.content)["items"]
        if len(items) > 2:
            return httpx.Response(413, json={"error": {"code": "too_large", "message": "body too large"}})
        if any(item["sequence"].startswith("a3") for item in items):
            if len(items) > 1:
                return httpx.Response(500, text="boom")
            return httpx.Response(422, json={"error": {"code": "bad", "message": "no", "field": "items[0]"}})
        return batch_response(request)

    written, _ = score_all(handler, rows(20), chunk=8)
    assert [r["line"] for r in written] == list(range(1, 21))
    failed = {r["line"]: r["error"] for r in written if "error" in r}
    assert set(failed) == {3, 13}
    assert failed[3] == {"code": "bad", "message": "no", "field": "items[0]"}
    assert all(r["value"] == str(r["line"] % 10) for r in written if "error" not in r)


def test_requests_go_round_robin_over_replicas_and_retries_move_to_the_next_one():
    seen = []

    def handler(request):
        seen.append(request.url.host)
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        return batch_response(request)

    written, stats = score_all(handler, rows(40), urls=("http://a", "http://down", "http://b"), chunk=5)
    assert len(written) == 40
    assert set(seen) == {"a", "down", "b"}
    assert seen.count("down") == stats.retries
    assert seen[:3] == ["a", "down", "b"]


def test_a_refused_api_key_stops_the_run():
    with pytest.raises(RunFailed, match="401"):
        score_all(lambda req: httpx.Response(401, json={"error": {"code": "unauthorized"}}), rows(10))


def test_the_run_fails_after_the_last_attempt_and_what_was_written_is_a_whole_in_order_prefix():
    attempts = []

    def handler(request):
        items = json.loads(request.content)["items"]
        if {"sequence": "x9??x"} in items:
            attempts.append(1)
            return httpx.Response(503, json={"error": "down"})
        return batch_response(request)

    the_rows = rows(50)
    the_rows[20] = Row(21, 21, {"sequence": "x9??x"})  # chunk 3 of 5 can never be answered
    written: list[dict] = []
    with pytest.raises(RunFailed, match="5 attempts"):
        score_all(handler, the_rows, chunk=10, concurrency=2, written=written)
    assert len(attempts) == FAST.max_attempts
    assert [r["line"] for r in written] == list(range(1, 21))
