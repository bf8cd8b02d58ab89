"""ModelInferRequest / ModelInferResponse (protobuf) <-> the protocol's decoded form (service/v2_codec.py).

A request's tensors arrive either as `raw_input_contents` (one little-endian byte string per input, in input
order: what tritonclient.grpc sends) or as typed `contents` (`int64_contents`, `fp32_contents`, ...). The
answer mirrors the request: raw outputs (`raw_output_contents`, what Triton always sends) unless every input
came typed, then typed contents. Everything wrong with a request raises `V2Error`, as on the REST side, with
the same messages where the check is the same.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from inference_grpc import grpc_service_pb2 as pb
from service.v2_codec import (
    _UNSUPPORTED_TENSOR_PARAMETERS,
    KNOWN_DATATYPES,
    InferRequest,
    RequestedOutput,
    V2Error,
    numpy_dtype,
    v2_datatype,
)

_NATIVE_LITTLE = sys.byteorder == "little"
# V2 datatype -> the InferTensorContents field that carries it when typed (FP16 has none: raw only).
_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parameter_value(param: pb.InferParameter) -> Any:
    """The Python value of one InferParameter (its oneof), None when unset."""
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in params.items()}


def _check_tensor_parameters(params: Mapping[str, Any], where: str) -> None:
    for key in _UNSUPPORTED_TENSOR_PARAMETERS:
        if key in params:
            raise V2Error(f"{where}: shared memory is not supported by this server")


def _typed_array(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], where: str
) -> np.ndarray:
    field = _TYPED_FIELD.get(tensor.datatype)
    if field is None:
        raise V2Error(f"{where}: datatype {tensor.datatype} must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise V2Error(
            f"{where}: contents has {len(values)} elements but shape {list(shape)} needs {expected}"
        )
    dtype = numpy_dtype(tensor.datatype)
    if dtype.kind in "iu" and dtype.itemsize < 4 and values:
        # int_contents / uint_contents are 32-bit on the wire: a value that does not fit the narrower
        # datatype must not wrap around silently.
        info = np.iinfo(dtype)
        if min(values) < info.min or max(values) > info.max:
            raise V2Error(f"{where}: a value is out of range for datatype {tensor.datatype}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_request(request: pb.ModelInferRequest) -> tuple[InferRequest, bool]:
    """The request's tensors as arrays, and whether the answer should be raw (see the module docstring)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise V2Error(
            f"request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
            "send one per input, in input order"
        )
    if not request.inputs:
        raise V2Error("request: 'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise V2Error(f"inputs[{i}]: 'name' must be a non-empty string")
        where = f"input '{name}'"
        if name in inputs:
            raise V2Error(f"{where} appears more than once")
        if tensor.datatype not in KNOWN_DATATYPES:
            raise V2Error(f"{where}: unknown datatype {tensor.datatype!r}")
        if tensor.datatype == "BYTES":
            raise V2Error(f"{where}: datatype BYTES is not supported by this server")
        if any(d < 0 for d in tensor.shape):
            raise V2Error(f"{where}: 'shape' must be a list of non-negative integers")
        shape = tuple(tensor.shape)
        _check_tensor_parameters(tensor.parameters, where)
        if raw:
            if tensor.HasField("contents"):
                raise V2Error(f"{where}: has both typed contents and raw_input_contents")
            dtype = numpy_dtype(tensor.datatype)
            expected = math.prod(shape) * dtype.itemsize
            if len(raw[i]) != expected:
                raise V2Error(
                    f"{where}: raw_input_contents has {len(raw[i])} bytes but shape {list(shape)} of "
                    f"{tensor.datatype} needs {expected}"
                )
            arr = np.frombuffer(raw[i], dtype=dtype).reshape(shape)
        else:
            arr = _typed_array(tensor, shape, where)
        inputs[name] = arr
        datatypes[name] = tensor.datatype
    outputs = []
    for out in request.outputs:
        where = f"output '{out.name}'"
        _check_tensor_parameters(out.parameters, where)
        if "classification" in out.parameters and parameter_value(out.parameters["classification"]):
            raise V2Error(f"{where}: the classification extension is not supported")
        outputs.append(RequestedOutput(out.name, binary=True))
    decoded = InferRequest(
        inputs=inputs,
        input_datatypes=datatypes,
        outputs=tuple(outputs) if outputs else None,
        binary_data_output=True,
        id=request.id or None,
        parameters=parameters(request.parameters),
    )
    return decoded, bool(raw)


def encode_response(
    model_name: str,
    model_version: str,
    results: Mapping[str, np.ndarray],
    request: InferRequest,
    raw: bool,
) -> pb.ModelInferResponse:
    """The outputs the request asked for (all when it named none), raw or typed."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    names = list(results) if request.outputs is None else [o.name for o in request.outputs]
    for name in names:
        arr = results[name]
        datatype = v2_datatype(arr.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            little = (
                arr
                if arr.dtype.byteorder in "<|" or (arr.dtype.byteorder == "=" and _NATIVE_LITTLE)
                else None
            )
            if little is None:
                little = arr.astype(arr.dtype.newbyteorder("<"))
            response.raw_output_contents.append(little.tobytes())  # tobytes() is C order whatever the strides
        else:
            getattr(tensor.contents, _TYPED_FIELD[datatype]).extend(arr.reshape(-1).tolist())
    return response
