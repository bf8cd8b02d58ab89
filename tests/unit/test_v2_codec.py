"""The V2 codec against the stock tritonclient's own encoder/decoder (pure functions, no HTTP)."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.http._utils import _get_inference_request

from service.v2_codec import (
    CONFIG_DATA_TYPES,
    InferRequest,
    TensorMeta,
    V2Error,
    build_infer_response,
    compress,
    decompress,
    parse_infer_request,
    v2_datatype,
    validate_inputs,
)

T = 11
VOCAB_SIZE = 38
INPUTS = (TensorMeta("tokens", "INT64", (-1, T)),)
OUTPUTS = (TensorMeta("logits", "FP32", (-1, 10)), TensorMeta("memory_attention", "FP32", (-1, T)))


def client_body(tokens: np.ndarray, binary: bool = True, outputs=None, **kwargs) -> tuple[bytes, int | None]:
    """What `tritonclient.http.InferenceServerClient.infer` puts on the wire (before compression)."""
    inp = httpclient.InferInput("tokens", list(tokens.shape), "INT64")
    inp.set_data_from_numpy(tokens, binary_data=binary)
    return _get_inference_request(
        inputs=[inp],
        request_id=kwargs.get("request_id", ""),
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=kwargs.get("priority", 0),
        timeout=kwargs.get("timeout"),
        custom_parameters=None,
    )


def tokens(batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB_SIZE, size=(batch, T), dtype=np.int64)


def model_outputs(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "logits": rng.standard_normal((batch, 10)).astype(np.float32),
        "memory_attention": rng.random((batch, T)).astype(np.float32),
    }


def parse(body: bytes, header_length: int | None, encoding: str | None = None) -> InferRequest:
    return parse_infer_request(body, None if header_length is None else str(header_length), encoding)


# --------------------------------------------------------------------------------------------- requests


def test_the_stock_clients_default_binary_request_decodes_to_the_same_tensor():
    x = tokens(4)
    body, header_length = client_body(x)
    assert header_length is not None, "tritonclient sends binary tensors by default"
    req = parse(body, header_length)
    np.testing.assert_array_equal(req.inputs["tokens"], x)
    assert req.outputs is None and req.binary_data_output is True


def test_a_json_request_decodes_to_the_same_tensor():
    x = tokens(2)
    body, header_length = client_body(x, binary=False)
    assert header_length is None
    req = parse(body, None)
    np.testing.assert_array_equal(req.inputs["tokens"], x)
    assert req.inputs["tokens"].dtype == np.int64


def test_nested_json_data_is_accepted_row_major():
    x = tokens(2)
    body = orjson.dumps(
        {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [2, T], "data": x.tolist()}]}
    )
    np.testing.assert_array_equal(parse(body, None).inputs["tokens"], x)


@pytest.mark.parametrize("encoding,pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_requests_are_inflated(encoding, pack):
    x = tokens(3)
    body, header_length = client_body(x)
    req = parse(pack(body), header_length, encoding)
    np.testing.assert_array_equal(req.inputs["tokens"], x)


def test_raw_deflate_is_accepted_too():
    x = tokens(1)
    body, header_length = client_body(x)
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = packer.compress(body) + packer.flush()
    np.testing.assert_array_equal(parse(raw, header_length, "deflate").inputs["tokens"], x)


def test_a_decompression_bomb_is_refused_with_413():
    bomb = gzip.compress(b"{" + b" " * 2_000_000 + b"}")
    with pytest.raises(V2Error) as err:
        decompress(bomb, "gzip", max_size=1_000_000)
    assert err.value.status == 413


def test_unknown_content_encoding_is_415():
    with pytest.raises(V2Error) as err:
        decompress(b"x", "br", max_size=10)
    assert err.value.status == 415


def test_corrupt_gzip_is_a_400():
    with pytest.raises(V2Error, match="not valid gzip"):
        decompress(b"\x1f\x8b garbage", "gzip", max_size=100)


def test_request_parameters_and_id_are_kept():
    body, header_length = client_body(tokens(1), request_id="r-7", priority=2, timeout=5_000)
    req = parse(body, header_length)
    assert req.id == "r-7"
    assert req.parameters["priority"] == 2
    assert req.timeout_us == 5_000


def test_requested_outputs_choose_binary_or_json_each():
    outputs = [
        httpclient.InferRequestedOutput("logits", binary_data=False),
        httpclient.InferRequestedOutput("memory_attention", binary_data=True),
    ]
    body, header_length = client_body(tokens(1), outputs=outputs)
    req = parse(body, header_length)
    assert req.wants_binary("logits") is False
    assert req.wants_binary("memory_attention") is True
    assert req.binary_data_output is False


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda h: h["inputs"][0]["parameters"].update(binary_data_size=8), "binary_data_size is 8 bytes"),
        (lambda h: h["inputs"][0].update(datatype="FOO"), "unknown datatype"),
        (lambda h: h["inputs"][0].update(datatype="BYTES"), "BYTES is not supported"),
        (lambda h: h["inputs"][0].update(shape=[1, -1]), "non-negative integers"),
        (lambda h: h["inputs"][0].update(data=[1]), "both 'data' and"),
        (lambda h: h["inputs"][0]["parameters"].update(shared_memory_region="r"), "shared memory"),
        (lambda h: h.update(inputs=[]), "non-empty list"),
        (lambda h: h.update(inputs=[h["inputs"][0], h["inputs"][0]]), "more than once"),
        (lambda h: h["parameters"].update(binary_data_output="yes"), "must be a boolean"),
        (lambda h: h.update(id=5), "'id' must be a string"),
    ],
)
def test_malformed_binary_headers_are_refused_with_a_reason(mutate, message):
    x = tokens(1)
    body, header_length = client_body(x)
    header = orjson.loads(body[:header_length])
    mutate(header)
    new_header = orjson.dumps(header)
    with pytest.raises(V2Error, match=message) as err:
        parse(new_header + body[header_length:], len(new_header))
    assert err.value.status == 400


def test_truncated_binary_data_is_refused():
    body, header_length = client_body(tokens(2))
    with pytest.raises(V2Error, match="truncated"):
        parse(body[:-5], header_length)


def test_extra_binary_bytes_are_refused():
    body, header_length = client_body(tokens(2))
    with pytest.raises(V2Error, match="no input claims"):
        parse(body + b"\0" * 8, header_length)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "999999"])
def test_a_bad_header_length_is_refused(value):
    body, _ = client_body(tokens(1))
    with pytest.raises(V2Error, match="Inference-Header-Content-Length"):
        parse_infer_request(body, value)


def test_binary_request_parsed_as_json_fails_clearly():
    body, _ = client_body(tokens(1))
    with pytest.raises(V2Error, match="not valid JSON"):
        parse_infer_request(body, None)


@pytest.mark.parametrize(
    "data,message",
    [
        ([1.5] * T, "only integers"),
        ([True] * T, "only integers"),
        ([1] * (T - 1), "has 10 elements"),
        ([[1, 2], [3]], "ragged"),
        ("1,2,3", "must be a list"),
        ([2**63] * T, "out of range"),
        ([{"a": 1}] * T, "only integers"),
    ],
)
def test_bad_json_data_is_refused(data, message):
    body = orjson.dumps({"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": data}]})
    with pytest.raises(V2Error, match=message):
        parse(body, None)


def test_empty_body_is_refused():
    with pytest.raises(V2Error, match="empty"):
        parse_infer_request(b"", None)


# ------------------------------------------------------------------------------------------- validation


def validated(body: bytes, header_length: int | None, max_batch_size: int | None = None):
    return validate_inputs(
        parse(body, header_length), INPUTS, OUTPUTS, max_batch_size, {"tokens": (0, VOCAB_SIZE)}
    )


def test_a_valid_request_validates_to_a_contiguous_int64_batch():
    x = tokens(5)
    out = validated(*client_body(x))
    assert out["tokens"].flags.c_contiguous and out["tokens"].dtype == np.int64
    np.testing.assert_array_equal(out["tokens"], x)


def test_wrong_datatype_is_refused_naming_the_expected_one():
    inp = httpclient.InferInput("tokens", [1, T], "INT32")
    inp.set_data_from_numpy(np.zeros((1, T), dtype=np.int32))
    body, header_length = _get_inference_request([inp], "", None, 0, False, False, 0, None, None)
    with pytest.raises(V2Error, match="datatype is INT32 but the model expects INT64"):
        validated(body, header_length)


@pytest.mark.parametrize("shape", [(2, T + 1), (2, T, 1), (T,)])
def test_wrong_shape_is_refused(shape):
    x = np.zeros(shape, dtype=np.int64)
    with pytest.raises(V2Error, match="shape is"):
        validated(*client_body(x))


def test_an_empty_batch_is_refused():
    with pytest.raises(V2Error, match="batch dimension is 0"):
        validated(*client_body(np.zeros((0, T), dtype=np.int64)))


def test_too_many_rows_is_refused():
    with pytest.raises(V2Error, match="exceeds max_batch_size 4"):
        validated(*client_body(tokens(5)), max_batch_size=4)


@pytest.mark.parametrize("bad", [-1, VOCAB_SIZE, 10**9])
def test_token_ids_out_of_range_are_refused_with_their_position(bad):
    x = tokens(2)
    x[1, 3] = bad
    with pytest.raises(V2Error, match=rf"value {bad} at index \[1, 3\] is not a valid token id"):
        validated(*client_body(x))


def test_unknown_and_missing_inputs_are_named():
    inp = httpclient.InferInput("tokenz", [1, T], "INT64")
    inp.set_data_from_numpy(tokens(1))
    body, header_length = _get_inference_request([inp], "", None, 0, False, False, 0, None, None)
    with pytest.raises(V2Error, match="unexpected input 'tokenz'"):
        validated(body, header_length)


def test_unknown_requested_output_is_named():
    outputs = [httpclient.InferRequestedOutput("probabilities")]
    with pytest.raises(V2Error, match="unknown output 'probabilities'"):
        validated(*client_body(tokens(1), outputs=outputs))


# --------------------------------------------------------------------------------------------- responses


def decode_response(body: bytes, header_length: int | None) -> httpclient.InferResult:
    return httpclient.InferResult.from_response_body(body, header_length=header_length)


def test_binary_response_round_trips_through_the_stock_client():
    req = parse(*client_body(tokens(3)))
    results = model_outputs(3)
    body, header_length = build_infer_response("fastweights_t11", "1", results, req)
    assert header_length is not None
    decoded = decode_response(body, header_length)
    for name, arr in results.items():
        np.testing.assert_array_equal(decoded.as_numpy(name), arr)
    header = decoded.get_response()
    assert header["model_name"] == "fastweights_t11" and header["model_version"] == "1"


def test_json_response_round_trips_through_the_stock_client():
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("logits", "memory_attention")]
    req = parse(*client_body(tokens(2), outputs=outputs, request_id="abc"))
    results = model_outputs(2)
    body, header_length = build_infer_response("m", "1", results, req)
    assert header_length is None
    as_json = orjson.loads(body)
    assert as_json["id"] == "abc"
    assert [o["name"] for o in as_json["outputs"]] == ["logits", "memory_attention"]
    decoded = decode_response(body, None)
    for name, arr in results.items():
        np.testing.assert_allclose(decoded.as_numpy(name), arr, rtol=1e-6)


def test_only_the_requested_outputs_come_back_in_their_chosen_form():
    outputs = [httpclient.InferRequestedOutput("memory_attention", binary_data=False)]
    req = parse(*client_body(tokens(1), outputs=outputs))
    body, header_length = build_infer_response("m", "1", model_outputs(1), req)
    assert header_length is None
    assert [o["name"] for o in orjson.loads(body)["outputs"]] == ["memory_attention"]


def test_mixed_binary_and_json_outputs_decode():
    outputs = [
        httpclient.InferRequestedOutput("logits", binary_data=True),
        httpclient.InferRequestedOutput("memory_attention", binary_data=False),
    ]
    req = parse(*client_body(tokens(2), outputs=outputs))
    results = model_outputs(2)
    body, header_length = build_infer_response("m", "1", results, req)
    decoded = decode_response(body, header_length)
    np.testing.assert_array_equal(decoded.as_numpy("logits"), results["logits"])
    np.testing.assert_allclose(decoded.as_numpy("memory_attention"), results["memory_attention"], rtol=1e-6)


@pytest.mark.parametrize(
    "accept,expected",
    [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", None),
        (None, None),
        ("deflate, gzip;q=0.5", "gzip"),
        ("gzip;q=0, deflate", "deflate"),
        ("gzip;q=0", None),
    ],
)
def test_responses_are_compressed_only_when_asked(accept, expected):
    body = b'{"a": 1}' * 100
    packed, encoding = compress(body, accept)
    assert encoding == expected
    if expected == "gzip":
        assert gzip.decompress(packed) == body
    elif expected == "deflate":
        assert zlib.decompress(packed) == body
    else:
        assert packed == body


def test_datatype_names_match_the_protocol():
    assert v2_datatype(np.float32) == "FP32"
    assert v2_datatype(np.dtype(">i8")) == "INT64"
    assert CONFIG_DATA_TYPES["INT64"] == "TYPE_INT64"


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 8),
    binary=st.booleans(),
    seed=st.integers(0, 2**16),
    encoding=st.sampled_from([None, "gzip", "deflate"]),
)
def test_any_valid_client_request_round_trips(batch, binary, seed, encoding):
    x = tokens(batch, seed)
    body, header_length = client_body(x, binary=binary)
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    out = validate_inputs(
        parse(body, header_length, encoding), INPUTS, OUTPUTS, 64, {"tokens": (0, VOCAB_SIZE)}
    )
    np.testing.assert_array_equal(out["tokens"], x)


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=200), header_length=st.one_of(st.none(), st.integers(-5, 250).map(str)))
def test_garbage_never_escapes_as_anything_but_v2error(garbage, header_length):
    try:
        req = parse_infer_request(garbage, header_length)
        validate_inputs(req, INPUTS, OUTPUTS, 64, {"tokens": (0, VOCAB_SIZE)})
    except V2Error as err:
        assert err.status == 400 and err.message


JSON_TOKENS = {"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": [0] * T}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("tail", [b"junk", b"\x00"], ids=["junk", "nul"])
def test_compressed_data_followed_by_anything_is_refused(encoding, tail):
    pack = gzip.compress if encoding == "gzip" else zlib.compress
    body = orjson.dumps({"inputs": []})
    assert decompress(pack(body), encoding, max_size=1000) == body
    with pytest.raises(V2Error, match="after the end of the") as err:
        decompress(pack(body) + tail, encoding, max_size=1000)
    assert err.value.status == 400


def test_a_second_gzip_member_is_refused_not_silently_dropped():
    body = gzip.compress(b'{"inputs": []}') + gzip.compress(b'{"more": 1}')
    with pytest.raises(V2Error, match="second member"):
        decompress(body, "gzip", max_size=1000)


def test_duplicate_output_names_are_refused():
    body = orjson.dumps({"inputs": [{**JSON_TOKENS}], "outputs": [{"name": "logits"}] * 3})
    with pytest.raises(V2Error, match="output 'logits' appears more than once"):
        parse_infer_request(body)


@pytest.mark.parametrize(
    "shape",
    [
        [0, 4611686018427387904, 4],
        [0] * 65,
        [0] * 17,
        [0, 2**62, 2**62],
        [2**31, 0],
        [0, 2**31 - 1, 2**31 - 1] * 3,
    ],
    ids=str,
)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_shapes_numpy_cannot_build_are_a_400_not_a_crash(shape, binary):
    tensor = {"name": "tokens", "datatype": "INT64", "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": 0}
        header = orjson.dumps({"inputs": [tensor]})
        args = (header, str(len(header)))
    else:
        tensor["data"] = []
        args = (orjson.dumps({"inputs": [tensor]}), None)
    with pytest.raises(V2Error) as err:
        validate_inputs(parse_infer_request(*args), INPUTS, OUTPUTS, 64)
    assert err.value.status == 400 and len(err.value.message) < 300


def test_a_huge_name_is_echoed_clipped():
    name = "x" * 1_000_000
    body = orjson.dumps({"inputs": [{**JSON_TOKENS, "name": name}]})
    with pytest.raises(V2Error) as err:
        validate_inputs(parse_infer_request(body), INPUTS, OUTPUTS, 64)
    assert "unexpected input 'xxxx" in err.value.message and len(err.value.message) < 400
    body = orjson.dumps({"inputs": [JSON_TOKENS], "outputs": [{"name": name, "parameters": 1}]})
    with pytest.raises(V2Error) as err:
        parse_infer_request(body)
    assert len(err.value.message) < 400


def test_an_answer_over_the_size_limit_is_refused_before_it_is_built():
    req = parse_infer_request(orjson.dumps({"inputs": [JSON_TOKENS]}))
    results = {"logits": np.zeros((256, 10), np.float32), "memory_attention": np.zeros((256, T), np.float32)}
    body, _ = build_infer_response("m", "1", results, req, max_bytes=10_000_000)
    assert len(body) < 10_000_000
    with pytest.raises(V2Error, match="FWS_MAX_RESPONSE_BYTES"):
        build_infer_response("m", "1", results, req, max_bytes=len(body) // 2)
