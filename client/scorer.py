"""The scoring engine: chunks of rows -> `/v1/retrieve/batch` requests, N in flight, answers written in order.

Order is what makes `--resume` exact: chunk i is written only after chunks 0..i-1, so the output is always a
prefix of the input (by line), and the line of its last record says where to continue. At most
`2 * concurrency` chunks are alive at a time (N sending, N prepared or finished and waiting for their turn),
so memory stays flat however long the input is.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from client.inputs import Row
from client.outputs import dumps, loads
from client.retry import RetryPolicy, classify, parse_retry_after
from client.stats import Stats

BATCH_PATH = "/v1/retrieve/batch"


class RunFailed(Exception):
    """The run cannot go on (servers unreachable after every retry, a refused API key, an unknown model...).
    Everything written so far is whole and in order: `--resume` continues from it."""


@dataclass
class ScoreConfig:
    urls: list[str]
    model: str | None = None
    chunk_size: int = 512
    concurrency: int = 4
    timeout: float = 60.0
    api_key: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)


def chunked(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _record(row: Row, result: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"line": row.line, "id": row.id}
    error = result.get("error")
    if error is not None:
        record["value"] = None
        record["confidence"] = None
        record["error"] = error
    else:
        record["value"] = result.get("value")
        record["confidence"] = result.get("confidence")
        record["num_pairs"] = result.get("num_pairs")
    if row.label is not None:
        record["label"] = row.label
        if error is None:
            record["correct"] = record["value"] == row.label
    return record


def _error_from_body(status: int, body: Any) -> dict[str, Any]:
    """A refused request's error object, shaped like a per-item error of the batch API."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return {
            "code": str(err.get("code", f"http_{status}")),
            "message": str(err.get("message", "")),
            "field": str(err.get("field", "")),
        }
    message = body.get("error") if isinstance(body, dict) else None
    return {"code": f"http_{status}", "message": str(message or f"HTTP {status}"), "field": ""}


class Scorer:
    def __init__(self, config: ScoreConfig, http: httpx.AsyncClient, stats: Stats):
        if not config.urls:
            raise ValueError("at least one server URL is needed")
        self.config = config
        self.http = http
        self.stats = stats
        self._round_robin = itertools.cycle([u.rstrip("/") + BATCH_PATH for u in config.urls])
        self.headers = {"Content-Type": "application/json"}
        if config.api_key:
            self.headers["Authorization"] = f"Bearer {config.api_key}"

    async def score_chunk(self, rows: list[Row]) -> list[dict[str, Any]]:
        """Answers (or errors) for every row of a chunk, in order."""
        sendable = [row for row in rows if row.item is not None]
        results = iter(await self._score_items([row.item for row in sendable]) if sendable else [])
        records = []
        for row in rows:
            if row.item is None:
                records.append(_record(row, {"error": row.error}))
            else:
                records.append(_record(row, next(results)))
        return records

    async def _score_items(self, items: list[Any]) -> list[dict[str, Any]]:
        envelope: dict[str, Any] = {"items": items}
        if self.config.model:
            envelope["model"] = self.config.model
        try:
            body = dumps(envelope)
        except (TypeError, ValueError) as exc:  # e.g. an integer too large for JSON encoders
            if len(items) == 1:
                return [
                    {
                        "error": {
                            "code": "invalid_row",
                            "message": f"cannot encode as JSON: {exc}",
                            "field": "",
                        }
                    }
                ]
            return await self._split(items)
        status, payload = await self._post(body, len(items))
        if status == 200:
            results = payload.get("results") if isinstance(payload, dict) else None
            if not isinstance(results, list) or len(results) != len(items):
                raise RunFailed(
                    f"server answered {len(results) if isinstance(results, list) else 'no'} results "
                    f"for {len(items)} items: not the batch API this client speaks"
                )
            return results
        # The request as a whole was refused (413 too large, 422 too many items, 500...): halve it until
        # the rows at fault are alone; a lone row's refusal is that row's error, the others are answered.
        if len(items) == 1:
            return [{"error": _error_from_body(status, payload)}]
        return await self._split(items)

    async def _split(self, items: list[Any]) -> list[dict[str, Any]]:
        mid = len(items) // 2
        return await self._score_items(items[:mid]) + await self._score_items(items[mid:])

    async def _post(self, body: bytes, n_items: int) -> tuple[int, Any]:
        policy = self.config.policy
        for attempt in itertools.count():
            url = next(self._round_robin)
            retry_after: float | None = None
            try:
                self.stats.requests += 1
                response = await self.http.post(url, content=body, headers=self.headers)
            except (
                httpx.TransportError
            ) as exc:  # connect/read errors and timeouts: the server may be restarting
                reason = f"{url}: {type(exc).__name__}: {exc}"
            else:
                kind = classify(response.status_code)
                if kind in ("ok", "split"):
                    try:
                        payload = loads(response.content)
                    except ValueError:
                        payload = {"error": response.text[:200]}
                    return response.status_code, payload
                reason = f"{url}: HTTP {response.status_code}: {response.text[:200]}"
                if kind == "fatal":
                    raise RunFailed(reason)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if not policy.should_retry(attempt):
                raise RunFailed(
                    f"gave up on a chunk of {n_items} rows after {attempt + 1} attempts; last: {reason}"
                )
            self.stats.retries += 1
            await asyncio.sleep(policy.delay(attempt, retry_after))
        raise AssertionError("unreachable")


async def run_pipeline(
    chunks: Iterable[list[Row]],
    score: Callable[[list[Row]], Awaitable[list[dict[str, Any]]]],
    write: Callable[[list[dict[str, Any]]], None],
    concurrency: int,
) -> None:
    """Score chunks with `concurrency` in flight and hand their records to `write` strictly in input order."""
    gate = asyncio.Semaphore(concurrency)

    async def scored(chunk: list[Row]) -> list[dict[str, Any]]:
        async with gate:
            return await score(chunk)

    window: deque[asyncio.Task[list[dict[str, Any]]]] = deque()
    try:
        for chunk in chunks:
            window.append(asyncio.create_task(scored(chunk)))
            while len(window) >= 2 * concurrency or (window and window[0].done()):
                write(await window.popleft())
        while window:
            write(await window.popleft())
    finally:
        for task in window:
            task.cancel()
        if window:
            await asyncio.gather(*window, return_exceptions=True)
