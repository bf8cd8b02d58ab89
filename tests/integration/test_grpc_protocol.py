"""Open Inference Protocol over gRPC against a real server, with the STOCK `tritonclient.grpc` client.

Every answer is compared with what the REST path (`/v2`, through the stock `tritonclient.http`) gives for the
same input. Where the client has no call for a case (typed contents, the rich error status, the standard
health service), the stubs that ship with tritonclient and grpcio-health-checking are used, unmodified.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from contract import scan_repository
from model.data import generate
from tests.integration.server import Server, default_repository, start_server
from tests.integration.test_v2_protocol import LONGEST, MODEL, T, encode, reference, sequences


def served_lengths() -> list[int]:
    return sorted(e.seq_len for e in scan_repository(default_repository()) if not e.config.stateful)


AUTH = {"authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def gc(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def hc(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def metadata(hc) -> dict:
    return hc.get_model_metadata(MODEL)


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_input(tokens: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("tokens", list(tokens.shape), "INT64")
    inp.set_data_from_numpy(tokens)  # raw_input_contents: the client's only way
    return inp


def http_input(tokens: np.ndarray) -> httpclient.InferInput:
    inp = httpclient.InferInput("tokens", list(tokens.shape), "INT64")
    inp.set_data_from_numpy(tokens)
    return inp


def expect_grpc_error(call, code: grpc.StatusCode, *fragments: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call()
    assert err.value.status() == str(code), err.value
    for fragment in fragments:
        assert fragment in err.value.message(), err.value.message()
    return err.value


def http_error(call) -> str:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.message()


# ---------------------------------------------------------------------------------------------- health


def test_liveness_and_readiness_of_the_server_and_its_models(gc):
    assert gc.is_server_live() and gc.is_server_ready()
    assert gc.is_model_ready(MODEL) and gc.is_model_ready(MODEL, "1")
    assert not gc.is_model_ready(MODEL, "2") and not gc.is_model_ready("no_such_model")


def test_the_standard_grpc_health_service_says_serving(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -------------------------------------------------------------------------------- metadata, config, repo


def test_server_metadata_equals_the_rest_answer(gc, hc):
    assert gc.get_server_metadata(as_json=True) == hc.get_server_metadata()


def test_model_metadata_equals_the_rest_answer_without_the_rest_only_parameters(gc, metadata):
    got = gc.get_model_metadata(MODEL)
    assert got.name == MODEL and list(got.versions) == ["1"] and got.platform == metadata["platform"]
    for kind in ("inputs", "outputs"):
        assert [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(got, kind)
        ] == metadata[kind]
    assert list(gc.get_model_metadata(MODEL, "1").versions) == ["1"]


def test_model_config_equals_the_rest_config(gc, hc):
    rest = json_format.ParseDict(hc.get_model_config(MODEL), model_config_pb2.ModelConfig())
    got = gc.get_model_config(MODEL).config
    assert got == rest
    assert got.max_batch_size > 0 and [d for d in got.input[0].dims] == [T]  # batch dim left out
    assert got.parameters["vocab"].string_value  # what a gRPC user encodes tokens with


def test_repository_index_equals_the_rest_index(gc, hc):
    got = gc.get_model_repository_index(as_json=True)["models"]
    rest = hc.get_model_repository_index()
    # MessageToJson leaves out empty strings (reason "" for a ready model)
    assert [{"reason": "", **row} for row in got] == rest
    assert {row["name"] for row in got} >= {MODEL}


def test_statistics_count_what_the_rest_statistics_count(gc, hc, metadata):
    tokens = encode(["a1??a", "b2??b", "c3??c"], metadata)
    before = gc.get_inference_statistics(MODEL).model_stats[0]
    gc.infer(MODEL, [grpc_input(tokens)])
    after = gc.get_inference_statistics(MODEL).model_stats[0]
    assert after.inference_count - before.inference_count == 3  # rows
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    rest = hc.get_inference_statistics(MODEL)["model_stats"][0]
    assert rest["inference_count"] == after.inference_count
    assert len(gc.get_inference_statistics().model_stats) == len(hc.get_inference_statistics()["model_stats"])


# ----------------------------------------------------------------------------------------------- infer


def test_one_row_answers_exactly_what_the_rest_path_answers(gc, hc, metadata):
    tokens = encode(["c9k8j3f1??c"], metadata)
    got = gc.infer(MODEL, [grpc_input(tokens)], request_id="one")
    rest = hc.infer(MODEL, [http_input(tokens)])
    response = got.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "one")
    assert len(response.raw_output_contents) == 2  # binary (raw) outputs, as Triton answers
    for name in ("logits", "memory_attention"):
        np.testing.assert_array_equal(got.as_numpy(name), rest.as_numpy(name))
    assert str(got.as_numpy("logits").argmax()) == "9"


def test_a_batch_matches_the_rest_path_the_onnx_file_and_keeps_row_order(gc, hc, metadata, model_repository):
    tokens = encode(sequences(200, seed=11), metadata)
    got = gc.infer(MODEL, [grpc_input(tokens)])
    rest = hc.infer(MODEL, [http_input(tokens)])
    expected = reference(model_repository, tokens)
    for name in ("logits", "memory_attention"):
        assert got.as_numpy(name).shape == (200, 10 if name == "logits" else T)
        np.testing.assert_array_equal(got.as_numpy(name), rest.as_numpy(name))
        np.testing.assert_allclose(got.as_numpy(name), expected[name], rtol=1e-5, atol=1e-6)


def test_26_pair_queries_on_the_longest_bucket_answer_as_over_rest(gc, hc):
    longest = hc.get_model_metadata(LONGEST)
    data = generate(256, 26, 26, seed=2656)
    tokens = encode(data.sequences(), longest)
    got = gc.infer(LONGEST, [grpc_input(tokens)])
    rest = hc.infer(LONGEST, [http_input(tokens)])
    np.testing.assert_array_equal(got.as_numpy("logits"), rest.as_numpy("logits"))
    assert got.as_numpy("memory_attention").shape == (256, 55)
    assert int((got.as_numpy("logits").argmax(axis=1) != data.targets).sum()) <= 1
    listed = {m.name for m in gc.get_model_repository_index().models}
    assert {f"fastweights_t{t}" for t in served_lengths()} | {"fastweights_stream"} == listed


def test_requested_outputs_only(gc, metadata):
    tokens = encode(["a1??a"], metadata)
    result = gc.infer(MODEL, [grpc_input(tokens)], outputs=[grpcclient.InferRequestedOutput("logits")])
    assert [o.name for o in result.get_response().outputs] == ["logits"]
    assert result.as_numpy("memory_attention") is None and result.as_numpy("logits").shape == (1, 10)


def test_typed_contents_in_get_typed_contents_out(stub, gc, metadata):
    tokens = encode(["c9k8j3f1??c", "a1b2??b"], metadata)
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    tensor = request.inputs.add(name="tokens", datatype="INT64", shape=list(tokens.shape))
    tensor.contents.int64_contents.extend(tokens.ravel().tolist())
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents and response.id == "typed"
    logits = {o.name: o for o in response.outputs}["logits"]
    typed = np.array(logits.contents.fp32_contents, dtype=np.float32).reshape(list(logits.shape))
    np.testing.assert_array_equal(typed, gc.infer(MODEL, [grpc_input(tokens)]).as_numpy("logits"))


def test_a_named_version_answers_and_an_unknown_one_is_not_found(gc, hc, metadata):
    tokens = encode(["k3??k"], metadata)
    assert gc.infer(MODEL, [grpc_input(tokens)], model_version="1").get_response().model_version == "1"
    err = expect_grpc_error(
        lambda: gc.infer(MODEL, [grpc_input(tokens)], model_version="2"), grpc.StatusCode.NOT_FOUND
    )
    assert err.message() == http_error(lambda: hc.infer(MODEL, [http_input(tokens)], model_version="2"))


# ---------------------------------------------------------------------------------------------- errors


def bad_inputs(metadata: dict) -> dict[str, tuple[np.ndarray, str]]:
    good = encode(["a1??a"], metadata)
    return {
        "wrong length": (np.zeros((1, T + 2), dtype=np.int64), "shape"),
        "wrong datatype": (good.astype(np.int32), "datatype"),
        "token id out of range": (np.full((1, T), 999, dtype=np.int64), "token id"),
        "too many rows": (np.zeros((257, T), dtype=np.int64), "max_batch_size"),
    }


@pytest.mark.parametrize("case", ["wrong length", "wrong datatype", "token id out of range", "too many rows"])
def test_bad_requests_are_invalid_argument_with_the_rest_message(gc, hc, metadata, case):
    tokens, fragment = bad_inputs(metadata)[case]
    datatype = "INT32" if tokens.dtype == np.int32 else "INT64"
    g = grpcclient.InferInput("tokens", list(tokens.shape), datatype)
    g.set_data_from_numpy(tokens)
    h = httpclient.InferInput("tokens", list(tokens.shape), datatype)
    h.set_data_from_numpy(tokens)
    err = expect_grpc_error(lambda: gc.infer(MODEL, [g]), grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert err.message() == http_error(lambda: hc.infer(MODEL, [h]))


def test_malformed_raw_contents_are_invalid_argument(stub):
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="tokens", datatype="INT64", shape=[1, T])
    request.raw_input_contents.append(b"\x00" * 7)  # not 1 x 11 int64
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 88" in err.value.details()


def test_an_unknown_model_is_not_found_with_the_rest_message(gc, hc, metadata):
    tokens = encode(["a1??a"], metadata)
    err = expect_grpc_error(
        lambda: gc.infer("no_such_model", [grpc_input(tokens)]), grpc.StatusCode.NOT_FOUND, MODEL
    )
    assert err.message() == http_error(lambda: hc.infer("no_such_model", [http_input(tokens)]))
    expect_grpc_error(lambda: gc.get_model_metadata("no_such_model"), grpc.StatusCode.NOT_FOUND)
    expect_grpc_error(lambda: gc.get_model_config("no_such_model"), grpc.StatusCode.NOT_FOUND)


def test_shared_memory_is_refused_as_unimplemented(gc):
    expect_grpc_error(gc.get_system_shared_memory_status, grpc.StatusCode.UNIMPLEMENTED, "shared memory")


# ------------------------------------------------------------------------------------------- streaming


def test_many_requests_on_one_stream_answer_in_order_and_a_bad_one_does_not_end_it(gc, hc, metadata):
    answers: Queue = Queue()
    gc.start_stream(callback=lambda result, error: answers.put((result, error)))
    batches = [encode(sequences(4, seed=s), metadata) for s in range(20)]
    try:
        for i, tokens in enumerate(batches):
            gc.async_stream_infer(MODEL, [grpc_input(tokens)], request_id=f"r{i}")
            if i == 10:
                gc.async_stream_infer(MODEL, [grpc_input(np.zeros((1, 3), dtype=np.int64))], request_id="bad")
        got = [answers.get(timeout=30) for _ in range(len(batches) + 1)]
    finally:
        gc.stop_stream()
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "shape" in errors[0].message()
    results = [r for r, e in got if e is None]
    assert [r.get_response().id for r in results] == [f"r{i}" for i in range(len(batches))]
    for tokens, result in zip(batches, results, strict=True):
        rest = hc.infer(MODEL, [http_input(tokens)])
        np.testing.assert_array_equal(result.as_numpy("logits"), rest.as_numpy("logits"))


# ------------------------------------------------------------- API key, overload, deadlines, limits, repo


@pytest.fixture(scope="module")
def slow_server(model_repository: Path) -> Iterator[Server]:
    """Slow runs (150 ms each), one row per run, 4 queued rows, an API key and small gRPC limits."""
    env = {
        "FWS_SIMULATED_RUN_DELAY_MS": "150",
        "FWS_MAX_BATCH_SIZE": "1",
        "FWS_MAX_QUEUE_ROWS": "4",
        "FWS_API_KEY": "s3cret",
        "FWS_RETRY_AFTER_S": "2",
        "FWS_GRPC_MAX_MESSAGE_BYTES": "65536",
        "FWS_GRPC_MAX_CONCURRENT_RPCS": "16",
    }
    with start_server(env, repository=model_repository) as srv:
        yield srv


def test_the_api_key_is_required_as_authorization_metadata(slow_server):
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    assert client.is_server_live() and client.is_server_ready()  # health stays public, as on HTTP
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
        expect_grpc_error(
            lambda h=headers: client.get_model_metadata(MODEL, headers=h),
            grpc.StatusCode.UNAUTHENTICATED,
            "API key",
        )
    assert client.get_model_metadata(MODEL, headers=AUTH).name == MODEL
    # the scheme's case does not matter (RFC 9110), as on HTTP: one rule, service.middleware.RequestPolicy
    assert client.get_model_metadata(MODEL, headers={"authorization": "bearer s3cret"}).name == MODEL
    assert client.get_model_metadata(MODEL, headers={"authorization": "BEARER s3cret"}).name == MODEL


def test_a_full_queue_answers_unavailable_with_retry_info_at_once(slow_server):
    tokens = np.zeros((1, T), dtype=np.int64)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="tokens", datatype="INT64", shape=[1, T])
    request.raw_input_contents.append(tokens.tobytes())
    outcomes: list[tuple[grpc.StatusCode, float, grpc.RpcError | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(12)
    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def one() -> None:
            start.wait()  # 12 calls at once against room for 1 running + 4 queued rows
            t0 = time.perf_counter()
            try:
                stub.ModelInfer(request, metadata=tuple(AUTH.items()), timeout=30)
                outcome = (grpc.StatusCode.OK, time.perf_counter() - t0, None)
            except grpc.RpcError as exc:
                outcome = (exc.code(), time.perf_counter() - t0, exc)
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = [c for c, _, _ in outcomes]
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.UNAVAILABLE in codes, codes
    for code, elapsed, exc in outcomes:
        if code is grpc.StatusCode.UNAVAILABLE:
            assert exc is not None and "Exceeds maximum queue size" in exc.details()
            assert elapsed < 1.0
            status = rpc_status.from_call(exc)
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 2
            assert ("retry-after", "2") in tuple(exc.trailing_metadata())


def test_the_timeout_parameter_and_the_client_deadline_bound_the_wait(slow_server, metadata):
    tokens = encode(["a1??a"], metadata)
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    busy = [
        threading.Thread(target=lambda: _quietly(slow_server, tokens)) for _ in range(3)
    ]  # keep the model busy
    for t in busy:
        t.start()
    time.sleep(0.1)
    try:
        # the protocol's `timeout` parameter (µs): the server gives up and says so
        expect_grpc_error(
            lambda: client.infer(MODEL, [grpc_input(tokens)], headers=AUTH, timeout=50_000),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline",
        )
        # the gRPC deadline (client_timeout, s)
        expect_grpc_error(
            lambda: client.infer(MODEL, [grpc_input(tokens)], headers=AUTH, client_timeout=0.05),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        for t in busy:
            t.join()


def _quietly(server: Server, tokens: np.ndarray) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        client.infer(MODEL, [grpc_input(tokens)], headers=AUTH)
    except InferenceServerException:
        pass
    finally:
        client.close()


def test_a_message_over_the_size_limit_is_refused(slow_server):
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    tokens = np.zeros((1000, T), dtype=np.int64)  # 88 000 bytes > 65 536
    expect_grpc_error(
        lambda: client.infer(MODEL, [grpc_input(tokens)], headers=AUTH), grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_calls_beyond_the_concurrency_limit_are_refused_at_once(slow_server):
    release = threading.Event()

    def idle() -> Iterator[service_pb2.ModelInferRequest]:
        release.wait(30)
        return
        yield  # a request stream that sends nothing until released

    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def open_stream() -> Any:
            return stub.ModelStreamInfer(idle(), metadata=tuple(AUTH.items()))

        streams, refused = [open_stream() for _ in range(16)], []
        try:
            deadline = time.monotonic() + 20
            while True:  # the 16 streams reach the server in their own time
                try:
                    stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    break
                assert time.monotonic() < deadline, "the 17th call was never refused"
                # A stream refused while an earlier test's call still held a slot ended at once: the slot is
                # free again, so another stream takes its place (else 15 streams never fill the 16).
                ended = [s for s in streams if s.done()]
                if ended:
                    refused += ended
                    streams = [s for s in streams if s not in ended]
                    streams += [open_stream() for _ in ended]
                time.sleep(0.05)
        finally:
            release.set()
            for s in streams + refused:
                try:
                    list(s)
                except grpc.RpcError as exc:  # a stream may itself be the call over the limit
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live  # room again once they closed


def test_unload_then_load_over_grpc(slow_server, metadata):
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    client.unload_model("fastweights_t5", headers=AUTH)
    assert not client.is_model_ready("fastweights_t5", headers=AUTH)
    rows = {r.name: r for r in client.get_model_repository_index(headers=AUTH).models}
    assert rows["fastweights_t5"].state == "UNAVAILABLE" and rows["fastweights_t5"].reason == "unloaded"
    t5 = encode(["a1??a"], metadata)[:, -5:]
    err = expect_grpc_error(
        lambda: client.infer("fastweights_t5", [grpc_input(t5)], headers=AUTH), grpc.StatusCode.UNAVAILABLE
    )
    assert "not" in err.message()
    client.load_model("fastweights_t5", headers=AUTH)
    assert client.is_model_ready("fastweights_t5", headers=AUTH)
    assert client.infer("fastweights_t5", [grpc_input(t5)], headers=AUTH).as_numpy("logits").shape == (1, 10)
    expect_grpc_error(
        lambda: client.load_model("no_such_model", headers=AUTH), grpc.StatusCode.NOT_FOUND, "unknown model"
    )


def test_metrics_count_grpc_calls_by_method_and_code(slow_server):
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    client.is_server_live()
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(MODEL)  # no key
    text = httpx.get(f"{slow_server.url}/metrics", headers={"Authorization": "Bearer s3cret"}).text
    assert 'fws_grpc_requests_total{code="OK",method="ServerLive"}' in text
    assert 'fws_grpc_requests_total{code="UNAUTHENTICATED",method="ModelMetadata"}' in text


def test_grpc_can_be_turned_off(model_repository):
    with start_server({"FWS_GRPC_ENABLED": "false"}, repository=model_repository) as srv:
        assert httpx.get(f"{srv.url}/v2/health/ready").status_code == 200
        client = grpcclient.InferenceServerClient(srv.grpc_target)
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=2)


def test_a_grpc_port_in_use_fails_the_start(model_repository, server):
    taken = str(server.grpc_port)
    srv = start_server({"FWS_GRPC_PORT": taken}, repository=model_repository, wait=False)
    try:
        assert srv.proc.wait(60) == 3
        assert "grpc not started" in srv.logs()
    finally:
        srv.stop(5)


def test_workers_share_the_grpc_port(model_repository, metadata):
    tokens = encode(["c9k8j3f1??c"], metadata)
    with start_server({"FWS_WORKERS": "2"}, repository=model_repository) as srv:
        for _ in range(4):  # new connections: the kernel spreads them over both workers
            client = grpcclient.InferenceServerClient(srv.grpc_target)
            assert str(client.infer(MODEL, [grpc_input(tokens)]).as_numpy("logits").argmax()) == "9"
            client.close()


def queue_wait_seconds(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer s3cret"}).text
    needle = f'fws_queue_wait_seconds_sum{{model="{MODEL}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(needle))


@pytest.mark.parametrize(("sequences_", "serial"), [([7, 7, 7], True), ([1, 2, 3], False)])
def test_requests_of_one_sequence_on_a_stream_run_one_after_the_other(slow_server, sequences_, serial):
    """Slow runs of one row: three requests of ONE sequence reach the batcher one at a time (no queue wait);
    three of different sequences queue together: 150 + 300 ms of waiting when they arrive at once, 450 - 3d ms
    when a loaded host staggers them d ms apart. One split at 0.15 s: one sequence's requests wait ~0 in all,
    different sequences' stay above it for d up to 100 ms (a run of 0.2999 s was seen under load)."""
    client = grpcclient.InferenceServerClient(slow_server.grpc_target)
    answers: Queue = Queue()
    tokens = np.zeros((1, T), dtype=np.int64)
    before = queue_wait_seconds(slow_server)
    client.start_stream(callback=lambda result, error: answers.put(error or result), headers=AUTH)
    try:
        for i, sequence in enumerate(sequences_):
            client.async_stream_infer(MODEL, [grpc_input(tokens)], request_id=f"s{i}", sequence_id=sequence)
        got = [answers.get(timeout=30) for _ in sequences_]
    finally:
        client.stop_stream()
    assert [r.get_response().id for r in got] == ["s0", "s1", "s2"]
    waited = queue_wait_seconds(slow_server) - before
    assert (waited < 0.15) if serial else (waited > 0.15), waited


# ------------------------------------------------------------------------ sequences (memory sessions)

STREAM_MODEL = "fastweights_stream"


def stream_chunk(text: str, vocab: list[str]) -> list[grpcclient.InferInput]:
    ids = np.zeros((1, 3), dtype=np.int64)  # left padded with PAD (id 0)
    ids[0, 3 - len(text) :] = [vocab.index(c) for c in text]
    return [grpc_input(ids)]


def test_sequences_over_one_stream_answer_as_the_stateless_rest_path(gc, hc, metadata):
    """Two sequences interleaved on one stream, pair by pair, then every key asked: the same answers as the
    whole query through the stateless REST models; a sequence never started fails alone."""
    vocab = metadata["parameters"]["vocab"]
    texts = {1: "c9k8j3f1", "talk-2": "a1b2x5"}
    answers: Queue = Queue()
    gc.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent: list[tuple[object, str]] = []
    try:
        for i in range(0, 8, 2):
            for sid, pairs in texts.items():
                if i < len(pairs):
                    gc.async_stream_infer(
                        STREAM_MODEL,
                        stream_chunk(pairs[i : i + 2], vocab),
                        sequence_id=sid,
                        sequence_start=i == 0,
                    )
                    sent.append((sid, ""))
        for sid, pairs in texts.items():
            for key in pairs[::2]:
                gc.async_stream_infer(STREAM_MODEL, stream_chunk("??" + key, vocab), sequence_id=sid)
                sent.append((sid, pairs + "??" + key))
        gc.async_stream_infer(STREAM_MODEL, stream_chunk("??a", vocab), sequence_id="never-started")
        got = [answers.get(timeout=30) for _ in range(len(sent) + 1)]
    finally:
        gc.stop_stream()
    *replies, (_, error) = got
    assert error is not None and "not started" in error.message()
    for (sid, query), (result, err) in zip(sent, replies, strict=True):
        assert err is None, (sid, err)
        if query:
            T = min(t for t in served_lengths() if t >= len(query))
            tokens = np.zeros((1, T), dtype=np.int64)
            tokens[0, T - len(query) :] = [vocab.index(c) for c in query]
            want = hc.infer(f"fastweights_t{T}", [http_input(tokens)]).as_numpy("logits")
            logits = result.as_numpy("logits")
            assert np.abs(logits - want).max() <= 1e-4 and logits.argmax() == want.argmax(), (sid, query)


def test_sigterm_lets_a_running_grpc_call_finish_and_refuses_new_ones(model_repository, metadata):
    tokens = encode(["c9k8j3f1??c"], metadata)
    env = {"FWS_SIMULATED_RUN_DELAY_MS": "500", "FWS_MAX_BATCH_SIZE": "1"}
    with start_server(env, repository=model_repository) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_target)
        got: dict[str, object] = {}

        def call() -> None:
            try:
                got["result"] = client.infer(MODEL, [grpc_input(tokens)], client_timeout=20)
            except InferenceServerException as exc:
                got["error"] = exc

        running = threading.Thread(target=call)
        running.start()
        time.sleep(0.2)  # the call is in its 500 ms run
        srv.terminate()
        running.join(20)
        assert "error" not in got, got
        assert str(got["result"].as_numpy("logits").argmax()) == "9"
        late = grpcclient.InferenceServerClient(srv.grpc_target)
        expect_grpc_error(
            lambda: late.infer(MODEL, [grpc_input(tokens)], client_timeout=5), grpc.StatusCode.UNAVAILABLE
        )
        assert srv.proc.wait(30) == 0
