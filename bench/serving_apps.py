"""The two reference servers `bench.serving` measures the service against (run with uvicorn, same stack).

floor_app  the overhead floor: a bare async FastAPI endpoint that parses the same JSON body as /v1/retrieve
           (a pydantic model) and returns a constant. No model, no batching: what FastAPI + uvicorn cost.
naive_app  what a user would write first: FastAPI + onnxruntime, one request = one `session.run`, in a sync
           endpoint (FastAPI's thread pool), smallest bucket that fits, no batching.

    .venv/bin/python -m uvicorn bench.serving_apps:floor_app --port 8001 --no-access-log
    BENCH_REPOSITORY=model_repository .venv/bin/python -m uvicorn bench.serving_apps:naive_app --port 8002
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent


class Query(BaseModel):
    sequence: str


floor_app = FastAPI()


@floor_app.get("/health")
async def floor_health() -> dict[str, str]:
    return {"status": "ok"}


@floor_app.post("/v1/retrieve")
async def floor_retrieve(query: Query) -> dict[str, object]:
    return {"value": "9", "confidence": 0.99, "model": "floor", "version": "1"}


def _naive() -> FastAPI:
    import onnxruntime as ort

    from contract import scan_repository
    from contract.vocab import Vocabulary

    repository = Path(os.environ.get("BENCH_REPOSITORY", ROOT / "model_repository"))
    threads = int(os.environ.get("BENCH_ORT_THREADS", "1"))
    vocab = Vocabulary()
    sessions = []
    for entry in scan_repository(repository):
        if entry.config.stateful:
            continue  # the stream model of memory sessions, not a length bucket
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sessions.append((entry.seq_len, ort.InferenceSession(str(entry.model_path), so)))
    sessions.sort(key=lambda s: s[0])
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/retrieve")
    def retrieve(query: Query) -> dict[str, object]:
        fits = [(t, s) for t, s in sessions if len(query.sequence) <= t]
        if not fits:
            raise HTTPException(422, "sequence too long")
        seq_len, session = fits[0]
        try:
            tokens = np.array([vocab.encode(query.sequence, seq_len)], dtype=np.int64)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        logits = session.run(["logits"], {"tokens": tokens})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return {"value": vocab.class_to_value(best), "confidence": float(probs[best]), "model": "naive"}

    return app


def __getattr__(name: str) -> FastAPI:  # naive_app is built on first access: floor_app needs no onnxruntime
    if name == "naive_app":
        app = _naive()
        globals()["naive_app"] = app
        return app
    raise AttributeError(name)
