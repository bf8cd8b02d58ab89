"""What the V2 peers (MLServer, KServe, LitServe) share: one bucket's ONNX session and the V2 JSON shapes.

Each peer serves `fastweights_t11` of the model repository under `/v2/models/fastweights_t11/infer`: a V2
request with one INT64 input `tokens` (B, 11), answered with the FP32 output `logits` (B, C), exactly what the
service answers for the same request (the load generator sends the same bodies to every server).
Only onnxruntime and numpy: it runs in each peer's own venv.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fastweights_t11"
SEQ_LEN = 11


def model_path() -> Path:
    repository = Path(os.environ.get("BENCH_REPOSITORY", ROOT / "model_repository"))
    return repository / MODEL / "1" / "model.onnx"


def session(threads: int = 1) -> ort.InferenceSession:
    """One CPU session with one intra-op thread: as the service runs in the benchmark."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, tokens: np.ndarray) -> np.ndarray:
    """tokens (B, 11) int64 -> logits (B, C) float32."""
    return sess.run(["logits"], {"tokens": tokens.astype(np.int64, copy=False)})[0]


def tokens_of(request: dict) -> np.ndarray:
    """The `tokens` input of a V2 JSON request body as a (B, 11) int64 array."""
    (inp,) = [i for i in request["inputs"] if i["name"] == "tokens"]
    return np.asarray(inp["data"], dtype=np.int64).reshape(inp["shape"])


def response(logits: np.ndarray, request_id: str | None = None) -> dict:
    """A V2 JSON response with the `logits` output."""
    body: dict = {
        "model_name": MODEL,
        "model_version": "1",
        "outputs": [
            {
                "name": "logits",
                "datatype": "FP32",
                "shape": list(logits.shape),
                "data": logits.ravel().tolist(),
            }
        ],
    }
    if request_id:
        body["id"] = request_id
    return body
