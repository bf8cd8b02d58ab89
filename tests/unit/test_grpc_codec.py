"""ModelInferRequest/Response <-> the decoded V2 request: raw and typed tensors, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from inference_grpc import grpc_service_pb2 as pb
from service.grpc import codec
from service.v2_codec import V2Error


def request_with(
    datatype: str, shape: list[int], raw: bytes | None = None, **typed: list
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="x")
    tensor = request.inputs.add(name="tokens", datatype=datatype, shape=shape)
    for field, values in typed.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def test_raw_contents_decode_to_the_declared_shape_and_answer_raw():
    tokens = np.arange(6, dtype=np.int64).reshape(2, 3)
    decoded, raw = codec.decode_request(request_with("INT64", [2, 3], tokens.tobytes()))
    assert raw and decoded.id == "x"
    np.testing.assert_array_equal(decoded.inputs["tokens"], tokens)


def test_typed_contents_decode_and_the_answer_is_typed_too():
    decoded, raw = codec.decode_request(request_with("INT64", [1, 2], int64_contents=[4, 5]))
    assert not raw
    response = codec.encode_response("m", "1", {"logits": np.array([[0.5, 1.5]], np.float32)}, decoded, raw)
    assert list(response.outputs[0].contents.fp32_contents) == [0.5, 1.5] and not response.raw_output_contents
    raw_answer = codec.encode_response("m", "1", {"logits": np.array([[0.5]], np.float32)}, decoded, True)
    assert np.frombuffer(raw_answer.raw_output_contents[0], "<f4").tolist() == [0.5]


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (request_with("INT64", [1, 2], b"\0" * 8), "needs 16"),
        (request_with("INT64", [1, 2], int64_contents=[1]), "has 1 elements"),
        (request_with("INT8", [1], int_contents=[300]), "out of range"),
        (request_with("FP16", [1], fp32_contents=[1.0]), "raw_input_contents"),
        (request_with("BYTES", [1], bytes_contents=[b"a"]), "BYTES"),
        (request_with("COMPLEX", [1], int_contents=[1]), "unknown datatype"),
        (request_with("INT64", [1], b"\0" * 8, int64_contents=[1]), "both"),
    ],
)
def test_malformed_tensors_are_refused_with_the_reason(request_, fragment):
    with pytest.raises(V2Error, match=fragment):
        codec.decode_request(request_)


def test_raw_contents_must_match_the_inputs_one_to_one():
    request = request_with("INT64", [1], b"\0" * 8)
    request.raw_input_contents.append(b"\0" * 8)
    with pytest.raises(V2Error, match="2 raw_input_contents for 1 inputs"):
        codec.decode_request(request)


def test_parameters_become_plain_values_so_the_timeout_is_read():
    request = request_with("INT64", [1], b"\0" * 8)
    request.parameters["timeout"].int64_param = 5000
    request.parameters["flag"].bool_param = True
    decoded, _ = codec.decode_request(request)
    assert decoded.parameters == {"timeout": 5000, "flag": True} and decoded.timeout_us == 5000


def test_shared_memory_and_classification_are_refused():
    request = request_with("INT64", [1], b"\0" * 8)
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(V2Error, match="shared memory"):
        codec.decode_request(request)
    request = request_with("INT64", [1], b"\0" * 8)
    request.outputs.add(name="logits").parameters["classification"].int64_param = 3
    with pytest.raises(V2Error, match="classification"):
        codec.decode_request(request)
