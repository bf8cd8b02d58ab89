"""Open Inference Protocol V2 against a real server, with the STOCK `tritonclient.http` client (defaults).

Read-only tests share the session server (conftest.py); tests that load/unload or need a slow model start
their own.
"""

from __future__ import annotations

import gzip
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from contract.vocab import parse_sequence
from model.data import generate
from tests.integration.server import REPO_ROOT, Server, repository_with, start_server
from tests.integration.test_readme import matches

MODEL = "fastweights_t11"
T = 11
LONGEST = "fastweights_t55"  # 26 pairs: every key letter once


def triton(server: Server, **kwargs) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"), **kwargs)


@pytest.fixture(scope="module")
def tc(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = triton(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def metadata(tc) -> dict:
    return tc.get_model_metadata(MODEL)


def encode(sequences: list[str], metadata: dict) -> np.ndarray:
    """Encode queries from what the API itself publishes (no repository files, no project code)."""
    params = metadata["parameters"]
    vocab, pad, seq_len = params["vocab"], params["pad_id"], params["seq_len"]
    tokens = np.full((len(sequences), seq_len), pad, dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids = [vocab.index(ch) for ch in seq]
        tokens[row, seq_len - len(ids) :] = ids
    return tokens


def tokens_input(tokens: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    inp = httpclient.InferInput("tokens", list(tokens.shape), "INT64")
    inp.set_data_from_numpy(tokens, binary_data=binary)
    return inp


def reference(model_repository: Path, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The same ONNX file run in-process: what the server must return, bit for bit up to float noise."""
    sess = ort.InferenceSession(
        str(model_repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    logits, attention = sess.run(["logits", "memory_attention"], {"tokens": tokens})
    return {"logits": logits, "memory_attention": attention}


def sequences(n: int = 64, seed: int = 4242) -> list[str]:
    return generate(n, 1, 4, seed, length=T).sequences()


# ---------------------------------------------------------------------------------------------- health


def test_server_and_model_liveness_and_readiness(tc):
    assert tc.is_server_live()
    assert tc.is_server_ready()
    assert tc.is_model_ready(MODEL)
    assert tc.is_model_ready(MODEL, "1")
    assert not tc.is_model_ready(MODEL, "7")
    assert not tc.is_model_ready("no_such_model")


def test_server_metadata_lists_only_implemented_extensions(tc):
    meta = tc.get_server_metadata()
    assert meta["name"] == "fastweights-serve" and meta["version"]
    assert set(meta["extensions"]) == {
        "binary_tensor_data",
        "model_repository",
        "model_configuration",
        "statistics",
    }


def test_model_metadata_describes_the_contract_with_a_batch_dimension(metadata):
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, T]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "logits": ("FP32", [-1, 10]),
        "memory_attention": ("FP32", [-1, T]),
    }


def test_the_vocabulary_and_padding_are_discoverable_through_the_api(metadata, tc):
    params = metadata["parameters"]
    assert params["vocab"][params["pad_id"]] == "<pad>"
    assert set("abcxyz0189?") <= set(params["vocab"])
    assert params["answer_classes"] == list("0123456789")
    assert params["seq_len"] == T and params["padding"] == "left" and params["max_pairs"] == 4
    config_params = tc.get_model_config(MODEL)["parameters"]
    assert orjson.loads(config_params["vocab"]["string_value"]) == params["vocab"]


@pytest.mark.parametrize("model", [MODEL, LONGEST])
def test_the_metadata_and_config_name_the_graphs_source_checkpoint_and_its_figures(tc, model):
    params = tc.get_model_metadata(model)["parameters"]
    assert params["source_checkpoint"] == "k26.pt" and len(params["source_sha256"]) == 64
    figures = params["source_figures"]
    assert figures["k_range"] == [1, 26] and figures["hidden_size"] == 50 and figures["test_error"] == 0.0
    config_params = tc.get_model_config(model)["parameters"]
    assert config_params["source_checkpoint"]["string_value"] == "k26.pt"
    assert config_params["source_sha256"]["string_value"] == params["source_sha256"]


def test_the_longest_bucket_answers_fresh_26_pair_queries_with_the_stock_client(tc, model_repository):
    longest = tc.get_model_metadata(LONGEST)
    assert (longest["parameters"]["seq_len"], longest["parameters"]["max_pairs"]) == (55, 26)
    data = generate(256, 26, 26, seed=2655)  # at most 2 in 20 000 per K measured: ~0.03 expected here
    tokens = encode(data.sequences(), longest)
    result = tc.infer(LONGEST, [tokens_input(tokens)])
    sess = ort.InferenceSession(
        str(model_repository / LONGEST / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        result.as_numpy("logits"), sess.run(["logits"], {"tokens": tokens})[0], atol=1e-5
    )
    wrong = int((result.as_numpy("logits").argmax(axis=1) != data.targets).sum())
    assert wrong <= 1, wrong


def test_versioned_metadata_and_unknown_versions(tc):
    assert tc.get_model_metadata(MODEL, "1")["versions"] == ["1"]
    with pytest.raises(InferenceServerException) as err:
        tc.get_model_metadata(MODEL, "9")
    assert err.value.status() == "404" and "no version '9'" in err.value.message()


def test_model_config_is_what_perf_analyzer_reads(tc, server):
    config = tc.get_model_config(MODEL)
    assert config["name"] == MODEL
    assert config["max_batch_size"] == int(server.env.get("FWS_MAX_BATCH_SIZE", 256))
    assert config["input"] == [{"name": "tokens", "data_type": "TYPE_INT64", "dims": [T]}]
    assert [o["dims"] for o in config["output"]] == [[10], [T]]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert tc.get_model_config(MODEL, "1")["name"] == MODEL


def test_repository_index_lists_every_bucket_ready(tc, model_repository):
    index = tc.get_model_repository_index()
    on_disk = sorted(p.name for p in model_repository.iterdir() if any(p.glob("*/model.onnx")))
    assert sorted(row["name"] for row in index) == on_disk
    assert all(row["state"] == "READY" and row["version"] == "1" for row in index)
    assert {"name", "version", "state", "reason"} <= set(index[0])


# ----------------------------------------------------------------------------------------------- infer


def test_default_binary_infer_matches_the_onnx_file_and_answers_correctly(tc, metadata, model_repository):
    seqs = sequences()
    tokens = encode(seqs, metadata)
    result = tc.infer(MODEL, [tokens_input(tokens)])
    header = result.get_response()
    assert header["model_name"] == MODEL and header["model_version"] == "1"
    assert all("binary_data_size" in o["parameters"] for o in header["outputs"])
    expected = reference(model_repository, tokens)
    for name in ("logits", "memory_attention"):
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=1e-5, atol=1e-6)
    classes = metadata["parameters"]["answer_classes"]
    answers = [classes[i] for i in result.as_numpy("logits").argmax(axis=1)]
    truth = [parse_sequence(s).answer for s in seqs]
    accuracy = np.mean([a == t for a, t in zip(answers, truth, strict=True)])
    assert accuracy >= 0.95, f"V2 accuracy {accuracy:.3f} on {len(seqs)} queries"


def test_json_infer_in_and_out(tc, metadata, model_repository):
    tokens = encode(["c9k8j3f1??c", "a1b2??b"], metadata)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("logits", "memory_attention")]
    result = tc.infer(MODEL, [tokens_input(tokens, binary=False)], outputs=outputs, request_id="json-1")
    header = result.get_response()
    assert header["id"] == "json-1"
    assert all("data" in o for o in header["outputs"])
    np.testing.assert_allclose(
        result.as_numpy("logits"), reference(model_repository, tokens)["logits"], rtol=1e-5
    )
    assert [str(i) for i in result.as_numpy("logits").argmax(axis=1)] == ["9", "2"]


def test_requested_outputs_only_and_mixed_encodings(tc, metadata):
    tokens = encode(["a1??a"], metadata)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=True)]
    result = tc.infer(MODEL, [tokens_input(tokens, binary=False)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["logits"]
    assert result.as_numpy("memory_attention") is None
    assert result.as_numpy("logits").shape == (1, 10)


@pytest.mark.parametrize(
    "request_algo,response_algo", [("gzip", "gzip"), ("deflate", "deflate"), ("gzip", None)]
)
def test_compressed_requests_and_responses(tc, metadata, request_algo, response_algo):
    tokens = encode(["c9k8j3f1??c"], metadata)
    plain = tc.infer(MODEL, [tokens_input(tokens)]).as_numpy("logits")
    result = tc.infer(
        MODEL,
        [tokens_input(tokens)],
        request_compression_algorithm=request_algo,
        response_compression_algorithm=response_algo,
    )
    np.testing.assert_array_equal(result.as_numpy("logits"), plain)


def test_versioned_infer_path(tc, metadata):
    tokens = encode(["k3??k"], metadata)
    result = tc.infer(MODEL, [tokens_input(tokens)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException) as err:
        tc.infer(MODEL, [tokens_input(tokens)], model_version="2")
    assert err.value.status() == "404"


def batch_metric(client: httpx.Client, suffix: str) -> float:
    needle = f'fws_batch_size_rows_{suffix}{{model="{MODEL}"}}'
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(needle)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_v2_batch_of_b_rows_counts_b_rows_and_keeps_row_order(tc, client, metadata, model_repository):
    seqs = sequences(200, seed=7)
    tokens = encode(seqs, metadata)
    rows_before, runs_before = batch_metric(client, "sum"), batch_metric(client, "count")
    result = tc.infer(MODEL, [tokens_input(tokens)])
    np.testing.assert_allclose(
        result.as_numpy("logits"), reference(model_repository, tokens)["logits"], rtol=1e-5, atol=1e-6
    )
    # Through the dynamic batcher: one onnxruntime run of 200 rows (max_batch_size 256), counted as rows.
    assert batch_metric(client, "sum") - rows_before == 200
    assert batch_metric(client, "count") - runs_before == 1


def test_inference_statistics_count_requests_runs_and_rows(tc, metadata):
    def stats() -> dict:
        (row,) = tc.get_inference_statistics(MODEL)["model_stats"]
        return row

    before = stats()
    tc.infer(MODEL, [tokens_input(encode(sequences(3, seed=11), metadata))])
    after = stats()
    assert (after["name"], after["version"]) == (MODEL, "1")
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 1
    for key in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][key]["count"] - before["inference_stats"][key]["count"] == 1
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    everything = tc.get_inference_statistics()["model_stats"]
    assert MODEL in {row["name"] for row in everything} and len(everything) >= 2
    assert tc.get_inference_statistics(MODEL, "1")["model_stats"][0]["name"] == MODEL
    expect_error(lambda: tc.get_inference_statistics("no_such_model"), "404")


# ---------------------------------------------------------------------------------------------- errors


def expect_error(call, status: str, *fragments: str) -> None:
    with pytest.raises(InferenceServerException) as err:
        call()
    assert err.value.status() == status, err.value
    for fragment in fragments:
        assert fragment in err.value.message(), err.value.message()


def test_bad_requests_are_400_with_a_reason_the_client_can_read(tc, metadata):
    good = encode(["a1??a"], metadata)
    wrong_len = np.zeros((1, T + 2), dtype=np.int64)
    expect_error(lambda: tc.infer(MODEL, [tokens_input(wrong_len)]), "400", "shape is [1, 13]", "[-1, 11]")
    bad_id = good.copy()
    bad_id[0, 2] = 999
    expect_error(lambda: tc.infer(MODEL, [tokens_input(bad_id)]), "400", "999", "not a valid token id")
    as_int32 = httpclient.InferInput("tokens", [1, T], "INT32")
    as_int32.set_data_from_numpy(good.astype(np.int32))
    expect_error(lambda: tc.infer(MODEL, [as_int32]), "400", "INT32", "expects INT64")
    wrong_name = httpclient.InferInput("ids", [1, T], "INT64")
    wrong_name.set_data_from_numpy(good)
    expect_error(lambda: tc.infer(MODEL, [wrong_name]), "400", "unexpected input 'ids'")
    outputs = [httpclient.InferRequestedOutput("probabilities")]
    expect_error(lambda: tc.infer(MODEL, [tokens_input(good)], outputs=outputs), "400", "unknown output")


def test_unknown_model_is_404(tc, metadata):
    tokens = encode(["a1??a"], metadata)
    expect_error(lambda: tc.infer("no_such_model", [tokens_input(tokens)]), "404", "no_such_model")
    expect_error(lambda: tc.get_model_metadata("fastweights"), "404", "one per sequence length", MODEL)
    expect_error(lambda: tc.get_model_config("no_such_model"), "404")


def test_every_v2_error_is_a_json_object_with_a_string_error(client):
    cases = [
        client.post(f"/v2/models/{MODEL}/infer", content=b"not json"),
        client.post(f"/v2/models/{MODEL}/infer", content=b'{"inputs": []}'),
        client.post(
            f"/v2/models/{MODEL}/infer", content=b"{}", headers={"Inference-Header-Content-Length": "x"}
        ),
        client.post(f"/v2/models/{MODEL}/infer", content=b"{}", headers={"Content-Encoding": "br"}),
        client.post(
            f"/v2/models/{MODEL}/infer", content=b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"}
        ),
        client.get("/v2/models/no_such_model/ready"),
        client.get(f"/v2/models/{MODEL}/nonsense"),
        client.post("/v2/repository/index", content=b"[1"),
        client.post("/v2/repository/models/no_such_model/load"),
        client.post("/v2/repository/models/%2E%2E/load"),
        client.post(f"/v2/repository/models/{MODEL}/load", json={"parameters": {"config": "{}"}}),
        client.post(f"/v2/repository/models/{MODEL}/load", json={"parameters": [1]}),
        client.post(f"/v2/repository/models/{MODEL}/unload", json={"parameters": "x"}),
        client.get(f"/v2/models/{MODEL}/infer"),
        client.post(f"/v2/models/{MODEL}/infer", content=b" " * (4 * 1024 * 1024 + 1)),
        client.post(
            f"/v2/models/{MODEL}/infer",
            content=gzip.compress(b" " * (5 * 1024 * 1024)),
            headers={"Content-Encoding": "gzip"},
        ),
    ]
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 400, 400, 415, 400, 404, 404, 400, 404, 400, 400, 400, 400, 405, 413, 413]
    assert [r.json()["error"] for r in cases[11:13]] == ["'parameters' must be an object"] * 2
    for r in cases:
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body


def test_plain_json_with_curl_style_headers(client, metadata):
    tokens = encode(["c9k8??c"], metadata)
    body = {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": tokens.tolist()}]}
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 200 and "inference-header-content-length" not in r.headers
    (logits,) = [o for o in r.json()["outputs"] if o["name"] == "logits"]
    assert logits["shape"] == [1, 10] and len(logits["data"]) == 10
    assert str(int(np.argmax(logits["data"]))) == "9"
    gz = client.post(
        f"/v2/models/{MODEL}/infer",
        content=gzip.compress(orjson.dumps(body)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert gz.status_code == 200 and gz.json()["outputs"] == r.json()["outputs"]


def test_too_many_rows_is_refused_like_triton(client, server, metadata):
    limit = int(server.env.get("FWS_MAX_BATCH_SIZE", 256))
    rows = np.zeros((limit + 1, T), dtype=np.int64)
    body = {
        "inputs": [
            {"name": "tokens", "datatype": "INT64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 400 and f"exceeds max_batch_size {limit}" in r.json()["error"]


# ----------------------------------------------------------------------- load/unload, overload, timeout


@pytest.fixture(scope="module")
def slow_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Slow runs (150 ms each), one row per run (the configs' max_batch_size), a queue of 4 rows and an API
    key."""
    env = {
        "FWS_SIMULATED_RUN_DELAY_MS": "150",
        "FWS_MAX_QUEUE_ROWS": "4",
        "FWS_API_KEY": "s3cret",
        "FWS_RETRY_AFTER_S": "2",
    }
    repo = repository_with(tmp_path_factory.mktemp("slow"), model_repository, max_batch_size=1)
    with start_server(env, repository=repo) as srv:
        yield srv


def auth() -> dict[str, str]:
    # A fresh dict per call: tritonclient writes Inference-Header-Content-Length into the dict it is given.
    return {"Authorization": "Bearer s3cret"}


def test_the_api_key_is_required_and_the_refusal_is_readable_by_the_client(slow_server):
    anonymous = triton(slow_server)
    assert anonymous.is_server_live()  # health stays public
    expect_error(anonymous.get_model_repository_index, "401", "API key")
    assert triton(slow_server).get_model_metadata(MODEL, headers=auth())["name"] == MODEL


def test_unload_then_load_with_the_stock_client(slow_server, metadata):
    tc = triton(slow_server)
    tc.unload_model("fastweights_t5", headers=auth())
    assert not tc.is_model_ready("fastweights_t5", headers=auth())
    rows = {r["name"]: r for r in tc.get_model_repository_index(headers=auth())}
    assert rows["fastweights_t5"]["state"] == "UNAVAILABLE" and rows["fastweights_t5"]["reason"] == "unloaded"
    t5 = encode(["a1??a"], metadata)[:, -5:]  # "a1??a" fills T=5 exactly
    r = httpx.post(
        f"{slow_server.url}/v2/models/fastweights_t5/infer",
        json={
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, 5], "data": t5.ravel().tolist()}]
        },
        headers=auth(),
    )
    assert r.status_code == 503 and "not" in r.json()["error"] and r.headers["retry-after"] == "2"
    assert MODEL in {
        r["name"] for r in tc.get_model_repository_index(headers=auth()) if r["state"] == "READY"
    }
    tc.load_model("fastweights_t5", headers=auth())
    assert tc.is_model_ready("fastweights_t5", headers=auth())
    result = tc.infer("fastweights_t5", [tokens_input(t5)], headers=auth())
    assert result.as_numpy("logits").shape == (1, 10)


def test_a_query_whose_bucket_is_down_is_503_not_ready_and_shorter_ones_are_still_answered(slow_server):
    """26 pairs fit only the longest bucket: with it unloaded they are a valid query the service cannot
    answer now (503 + Retry-After, naming the bucket), not a query that is too long (422)."""
    tc = triton(slow_server)
    longest = max(
        (r["name"] for r in tc.get_model_repository_index(headers=auth())),
        key=lambda name: int(name.rpartition("_t")[2]) if name.rpartition("_t")[2].isdigit() else 0,
    )
    letters = "abcdefghijklmnopqrstuvwxyz"
    full = {"pairs": [[k, str(i % 10)] for i, k in enumerate(letters)], "query": "q"}
    shorter = {"pairs": full["pairs"][:3], "query": "b"}
    tc.unload_model(longest, headers=auth())
    try:
        r = httpx.post(f"{slow_server.url}/v1/retrieve", json=full, headers=auth(), timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "not_ready" and longest in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "2"
        r = httpx.post(f"{slow_server.url}/v1/retrieve", json=shorter, headers=auth(), timeout=10)
        assert r.status_code == 200 and r.json()["value"] == "1", r.text
        # In a batch, that item's own error; the others are answered.
        batch = {"items": [full, {"id": "s", **shorter}]}
        r = httpx.post(f"{slow_server.url}/v1/retrieve/batch", json=batch, headers=auth(), timeout=10)
        assert r.status_code == 200, r.text
        first, second = r.json()["results"]
        assert first["error"]["code"] == "not_ready" and longest in first["error"]["message"]
        assert first["error"]["field"] == "items[0].pairs"
        assert second["id"] == "s" and second["value"] == "1"
    finally:
        tc.load_model(longest, headers=auth())
    r = httpx.post(f"{slow_server.url}/v1/retrieve", json=full, headers=auth(), timeout=10)
    assert r.status_code == 200 and r.json()["bucket"] == longest and r.json()["value"] == "6", r.text


def test_a_full_queue_answers_503_with_retry_after_at_once(slow_server, metadata):
    tokens = encode(["a1??a"], metadata)
    body = {
        "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": tokens.ravel().tolist()}]
    }
    responses: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def one(client: httpx.Client) -> None:
        start.wait()  # 12 requests at once against room for 1 running + 4 queued rows
        r = client.post(f"/v2/models/{MODEL}/infer", json=body, headers=auth())
        with lock:
            responses.append(r)

    with httpx.Client(base_url=slow_server.url, timeout=30) as shared:
        threads = [threading.Thread(target=one, args=(shared,)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2"
            assert "Exceeds maximum queue size" in r.json()["error"]
            assert r.elapsed.total_seconds() < 1.0


def test_the_client_timeout_parameter_bounds_the_wait(slow_server, metadata):
    tc = triton(slow_server)
    tokens = encode(["a1??a"], metadata)
    threads = [
        threading.Thread(target=lambda: tc_infer_quietly(slow_server, tokens)) for _ in range(3)
    ]  # keep the model busy
    for t in threads:
        t.start()
    time.sleep(0.1)
    try:
        expect_error(
            lambda: tc.infer(MODEL, [tokens_input(tokens)], headers=auth(), timeout=50_000), "504", "deadline"
        )
    finally:
        for t in threads:
            t.join()


def tc_infer_quietly(server: Server, tokens: np.ndarray) -> None:
    client = triton(server)
    try:
        client.infer(MODEL, [tokens_input(tokens)], headers=auth())
    except InferenceServerException:
        pass
    finally:
        client.close()


def metric_value(server: Server, prefix: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=auth()).text
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_request_whose_client_went_away_is_never_computed(slow_server, metadata):
    tokens = encode(["a1??a"], metadata)
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": tokens.ravel().tolist()}
            ]
        }
    )
    gone = f'fws_requests_rejected_total{{model="{MODEL}",reason="client_gone"}}'
    runs = f'fws_batch_size_rows_count{{model="{MODEL}"}}'
    gone_before, runs_before = metric_value(slow_server, gone), metric_value(slow_server, runs)
    go = threading.Barrier(4)

    def busy_request(client: httpx.Client) -> None:
        go.wait()
        client.post(f"/v2/models/{MODEL}/infer", content=body, headers=auth())

    shared = httpx.Client(base_url=slow_server.url, timeout=30)
    busy = [threading.Thread(target=busy_request, args=(shared,)) for _ in range(4)]  # 1 runs, 3 queue
    for t in busy:
        t.start()
    deadline = time.monotonic() + 10
    while metric_value(slow_server, f'fws_queue_depth_rows{{model="{MODEL}"}}') < 2:  # >= 0.3 s of work ahead
        assert time.monotonic() < deadline, "the busy requests never queued"
        time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        head = (
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(0.05)  # queued behind the busy runs; then the client hangs up
    for t in busy:
        t.join()
    shared.close()
    time.sleep(0.15)
    assert metric_value(slow_server, gone) == gone_before + 1
    assert metric_value(slow_server, runs) == runs_before + 4  # only the busy requests ran


# ------------------------------------------------------------------------------------ README examples

README_SECTION = "## Serving: Open Inference Protocol V2"
README_URL = "http://127.0.0.1:8000"


def readme_blocks(language: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(README_SECTION)
    end = text.find("\n## ", start + len(README_SECTION))
    return re.findall(rf"```{language}\n(.*?)```", text[start:end], flags=re.S)


def test_the_readme_tritonclient_example_runs_as_shown(server, capsys):
    (code,) = readme_blocks("python")
    expected = re.search(r"# (\[.*\])\s*$", code.strip()).group(1)
    exec(compile(code.replace("127.0.0.1:8000", server.url.removeprefix("http://")), "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == expected


def test_the_readme_curl_example_runs_as_shown(server):
    (block,) = readme_blocks("bash")
    lines = block.replace("\\\n", " ").splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("curl "))
    argv = [a.replace(README_URL, server.url) for a in shlex.split(lines[i])]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    matches(orjson.loads(run.stdout), orjson.loads(lines[i + 1].removeprefix("# => ")))
    (logits,) = orjson.loads(run.stdout)["outputs"]
    assert int(np.argmax(logits["data"])) == 9  # 'c9k8??c' -> 9
