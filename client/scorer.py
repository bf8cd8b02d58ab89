"""The scoring engine: chunks of rows -> requests (`/v1/retrieve/batch`, or V2 infer calls over HTTP or gRPC),
N in flight, answers written in order.

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
from typing import TYPE_CHECKING, Any

import httpx

from client.inputs import Row
from client.outputs import dumps, loads
from client.retry import RetryPolicy, RunFailed, classify, parse_retry_after
from client.stats import Stats
from client.v2 import Bucket, V2Codec, V2Error, bucket_names, parse_buckets

if TYPE_CHECKING:
    from client.grpc_v2 import GrpcV2Client

BATCH_PATH = "/v1/retrieve/batch"
PROTOCOLS = ("rest", "v2", "grpc")


@dataclass
class ScoreConfig:
    urls: list[str]
    model: str | None = None
    chunk_size: int = 512
    concurrency: int = 4
    timeout: float = 60.0
    api_key: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # or "v2": token tensors through /v2/models/{bucket}/infer (see client.v2); "grpc": the same tensors
    # through ModelInfer of the V2 gRPC service (client.grpc_v2; `urls` are then host:port targets)
    protocol: str = "rest"


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


def _records(rows: list[Row], answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`[_record(row, answer) ...]` for rows that were all sent, in one loop without a call per answered row
    (a small saving: the per-row record is ~0.5 µs either way; see docs/client.md)."""
    records: list[dict[str, Any]] = []
    append = records.append
    for row, result in zip(rows, answers, strict=True):
        error = result.get("error")
        if error is None:
            value = result.get("value")
            record = {
                "line": row.line,
                "id": row.id,
                "value": value,
                "confidence": result.get("confidence"),
                "num_pairs": result.get("num_pairs"),
            }
            label = row.label
            if label is not None:
                record["label"] = label
                record["correct"] = value == label
        else:
            record = _record(row, result)
        append(record)
    return records


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
    def __init__(
        self,
        config: ScoreConfig,
        http: httpx.AsyncClient | None,
        stats: Stats,
        grpc: GrpcV2Client | None = None,
    ):
        if not config.urls:
            raise ValueError("at least one server URL is needed")
        if config.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {config.protocol!r}")
        if (config.protocol == "grpc") != (grpc is not None) or (http is None and grpc is None):
            raise ValueError("protocol 'grpc' takes a GrpcV2Client (and only it needs none of httpx)")
        self.config = config
        self.http = http
        self.grpc = grpc
        self.stats = stats
        self._round_robin = itertools.cycle([u.rstrip("/") for u in config.urls])
        self.auth: dict[str, str] = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.codec: V2Codec | None = None

    async def prepare(self) -> None:
        """For V2: discover the family's buckets and how to encode for them (retried like any request)."""
        family = self.config.model or "fastweights"
        if self.grpc is not None:
            try:
                self.codec = await self.grpc.codec(family)
            except V2Error as exc:
                raise RunFailed(f"V2: {exc}") from None
            return
        if self.config.protocol != "v2":
            return
        index = await self._json("POST", "/v2/repository/index")
        names = bucket_names(family, index)
        metadata = {name: await self._json("GET", f"/v2/models/{name}") for name in names}
        configs = {name: await self._json("GET", f"/v2/models/{name}/config") for name in names}
        try:
            self.codec = V2Codec(parse_buckets(family, index, metadata, configs))
        except V2Error as exc:
            raise RunFailed(f"V2: {exc}") from None

    async def _json(self, method: str, path: str) -> Any:
        response = await self._send(method, path, b"", {}, 0)
        try:
            payload = loads(response.content)
        except ValueError:
            payload = None
        if response.status_code != 200 or payload is None:
            raise RunFailed(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        return payload

    async def score_chunk(self, rows: list[Row]) -> list[dict[str, Any]]:
        """Answers (or errors) for every row of a chunk, in order."""
        sendable = [row for row in rows if row.item is not None]
        items = [row.item for row in sendable]
        if not sendable:
            answers: list[dict[str, Any]] = []
        elif self.config.protocol != "rest":
            answers = await self._score_items_v2(items)
        else:
            answers = await self._score_items(items)
        if len(answers) == len(rows):  # every row was sent (the common case): one tight loop, no calls
            return _records(rows, answers)
        results = iter(answers)
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
                message = f"cannot encode as JSON: {exc}"
                return [{"error": {"code": "invalid_row", "message": message, "field": ""}}]
            return await self._split(self._score_items, items)
        response = await self._send(
            "POST", BATCH_PATH, body, {"Content-Type": "application/json"}, len(items)
        )
        payload = self._payload(response)
        if response.status_code == 200:
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
            return [{"error": _error_from_body(response.status_code, payload)}]
        return await self._split(self._score_items, items)

    async def _score_items_v2(self, items: list[Any]) -> list[dict[str, Any]]:
        assert self.codec is not None, "prepare() first"
        results: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[str, tuple[Bucket, list[tuple[int, list[int], int]]]] = {}
        for pos, item in enumerate(items):
            encoded = self.codec.bucket_for(item)
            if isinstance(encoded, dict):
                results[pos] = encoded
            else:
                bucket, ids, length = encoded
                groups.setdefault(bucket.name, (bucket, []))[1].append((pos, ids, length))
        # One request per bucket (and per max_batch rows), one after the other: the chunk keeps its one
        # slot of the `concurrency` requests in flight.
        for bucket, members in groups.values():
            for lo in range(0, len(members), bucket.max_batch):
                part = members[lo : lo + bucket.max_batch]
                answers = await self._infer_v2(bucket, [m[1] for m in part], [m[2] for m in part])
                for (pos, _, _), answer in zip(part, answers, strict=True):
                    results[pos] = answer
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _infer_v2(
        self, bucket: Bucket, rows: list[list[int]], lengths: list[int]
    ) -> list[dict[str, Any]]:
        assert self.codec is not None
        if self.grpc is not None:
            flat = await self._logits_grpc(bucket, rows)
        else:
            flat = await self._logits_http(bucket, rows)
        if isinstance(flat, dict):  # refused as a whole: halve until the rows at fault are alone
            if len(rows) == 1:
                return [{"error": flat}]
            mid = len(rows) // 2
            return await self._infer_v2(bucket, rows[:mid], lengths[:mid]) + await self._infer_v2(
                bucket, rows[mid:], lengths[mid:]
            )
        return self.codec.answers(flat, bucket, lengths)

    async def _logits_http(self, bucket: Bucket, rows: list[list[int]]) -> list[float] | dict[str, Any]:
        """The flat logits of one V2 infer over HTTP, or the error object of a refusal worth splitting."""
        assert self.codec is not None
        body, headers = self.codec.request(rows, bucket.seq_len)
        response = await self._send("POST", f"/v2/models/{bucket.name}/infer", body, headers, len(rows))
        if response.status_code != 200:
            return _error_from_body(response.status_code, self._payload(response))
        try:
            return self.codec.logits(
                response.content,
                response.headers.get("Inference-Header-Content-Length"),
                len(rows),
                len(bucket.classes),
            )
        except (V2Error, ValueError, KeyError, TypeError) as exc:
            raise RunFailed(f"V2 infer response of {bucket.name} not understood: {exc}") from None

    async def _logits_grpc(self, bucket: Bucket, rows: list[list[int]]) -> list[float] | dict[str, Any]:
        """The same over gRPC's ModelInfer (client.grpc_v2)."""
        assert self.grpc is not None
        try:
            return await self.grpc.infer(bucket, rows)
        except (V2Error, ValueError, KeyError, TypeError) as exc:
            raise RunFailed(f"V2 infer response of {bucket.name} not understood: {exc}") from None

    @staticmethod
    def _payload(response: httpx.Response) -> Any:
        try:
            return loads(response.content)
        except ValueError:
            return {"error": response.text[:200]}

    async def _split(self, score: Callable[[list[Any]], Awaitable[list[dict[str, Any]]]], items: list[Any]):
        mid = len(items) // 2
        return await score(items[:mid]) + await score(items[mid:])

    async def _send(
        self, method: str, path: str, body: bytes, headers: dict[str, str], n_items: int
    ) -> httpx.Response:
        """One request, retried on transient failures, each attempt to the next server. Returns a 200 or a
        refusal worth splitting; raises RunFailed on a fatal status or when the attempts run out."""
        assert self.http is not None
        policy = self.config.policy
        headers = {**headers, **self.auth}
        for attempt in itertools.count():
            url = next(self._round_robin) + path
            retry_after: float | None = None
            try:
                self.stats.requests += 1
                response = await self.http.request(method, url, content=body, headers=headers)
            except (
                httpx.TransportError
            ) as exc:  # connect/read errors and timeouts: the server may be restarting
                reason = f"{url}: {type(exc).__name__}: {exc}"
            else:
                kind = classify(response.status_code)
                if kind in ("ok", "split"):
                    return response
                reason = f"{url}: HTTP {response.status_code}: {response.text[:200]}"
                if kind == "fatal":
                    raise RunFailed(reason)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if not policy.should_retry(attempt):
                what = f"a chunk of {n_items} rows" if n_items else f"{method} {path}"
                raise RunFailed(f"gave up on {what} after {attempt + 1} attempts; last: {reason}")
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
