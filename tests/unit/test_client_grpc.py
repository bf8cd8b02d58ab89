"""client.grpc_v2 without a server: targets, what a status code leads to, configs and tensors on the wire."""

from __future__ import annotations

from array import array

import grpc
import pytest

from client.grpc_v2 import classify, config_parameters, logits, request, row_error, target_of
from client.v2 import Bucket, V2Error
from inference_grpc import grpc_service_pb2 as pb
from inference_grpc import model_config_pb2

BUCKET = Bucket("fastweights_t5", 5, {"a": 0, "1": 1, "?": 2}, 3, ("0", "1"), 256)


@pytest.mark.parametrize(
    ("url", "target"),
    [("127.0.0.1:8001", "127.0.0.1:8001"), ("grpc://host:9", "host:9"), ("[::1]:8001", "[::1]:8001")],
)
def test_a_grpc_server_is_host_and_port_with_or_without_the_grpc_scheme(url: str, target: str) -> None:
    assert target_of(url) == target


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "127.0.0.1", "host:port", "grpcs://h:1", ""])
def test_anything_else_is_refused_with_what_to_give(url: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        target_of(url)


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "not ready", "retry"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!", "retry"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (47000 vs. 16384)", "split"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "retry"),
        (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key", "fatal"),
        (grpc.StatusCode.NOT_FOUND, "unknown model", "fatal"),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad shape", "split"),
        (grpc.StatusCode.INTERNAL, "internal server error", "split"),
    ],
)
def test_status_codes_lead_to_a_retry_the_end_of_the_run_or_a_split(code, details, kind) -> None:
    assert classify(code, details) == kind


def test_a_refusal_becomes_a_row_error_with_the_status_and_the_servers_words() -> None:
    assert row_error(grpc.StatusCode.INVALID_ARGUMENT, "bad") == {
        "code": "grpc_invalid_argument",
        "message": "bad",
        "field": "",
    }


def test_config_parameters_decode_the_json_ones_and_keep_strings() -> None:
    config = model_config_pb2.ModelConfig(name="m")
    for key, text in {"vocab": '["a","1"]', "seq_len": "5", "pad_id": "3", "padding": "left"}.items():
        config.parameters[key].string_value = text
    assert config_parameters(config) == {"vocab": ["a", "1"], "seq_len": 5, "pad_id": 3, "padding": "left"}
    config.parameters["seq_len"].string_value = "five"
    with pytest.raises(V2Error, match="seq_len"):
        config_parameters(config)


def test_a_request_carries_the_rows_as_one_raw_little_endian_int64_tensor() -> None:
    req = request(BUCKET, [[3, 3, 0, 1, 2], [0, 1, 2, 2, 0]])
    assert (req.model_name, req.inputs[0].name, req.inputs[0].datatype) == (
        "fastweights_t5",
        "tokens",
        "INT64",
    )
    assert list(req.inputs[0].shape) == [2, 5] and [o.name for o in req.outputs] == ["logits"]
    assert array("q", req.raw_input_contents[0]).tolist() == [3, 3, 0, 1, 2, 0, 1, 2, 2, 0]


def test_logits_are_read_raw_or_typed_and_a_wrong_count_or_output_is_an_error() -> None:
    raw = pb.ModelInferResponse(raw_output_contents=[array("f", [1.0, 2.0, 3.0, 4.0]).tobytes()])
    raw.outputs.add(name="logits", datatype="FP32", shape=[2, 2])
    assert logits(raw, 2, 2) == [1.0, 2.0, 3.0, 4.0]
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="logits", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([5.0, 6.0])
    assert logits(typed, 1, 2) == [5.0, 6.0]
    with pytest.raises(V2Error, match="3 rows"):
        logits(raw, 3, 2)
    with pytest.raises(V2Error, match="no 'logits'"):
        logits(pb.ModelInferResponse(), 1, 2)


def test_raw_logits_that_are_not_whole_fp32_values_are_a_v2_error_not_a_crash() -> None:
    torn = pb.ModelInferResponse(raw_output_contents=[array("f", [1.0, 2.0]).tobytes()[:-1]])  # 7 bytes
    torn.outputs.add(name="logits", datatype="FP32", shape=[1, 2])
    with pytest.raises(V2Error, match="7 bytes"):
        logits(torn, 1, 2)
