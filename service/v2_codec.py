"""Open Inference Protocol V2 (KServe / Triton REST) wire format: pure functions, no HTTP, no model.

An infer request body is either plain JSON, or (the binary tensor extension, what the stock `tritonclient`
sends by default) a JSON header followed by raw little-endian tensor bytes::

    body = <JSON header: Inference-Header-Content-Length bytes> <input 0 bytes> <input 1 bytes> ...

where every binary input says how many bytes it owns in `parameters.binary_data_size`, in input order. The
body may be gzip or deflate (zlib) compressed (`Content-Encoding`). Responses mirror this: each output is
JSON `data` or binary, chosen per requested output (`parameters.binary_data`), defaulting to the request's
`parameters.binary_data_output` (which the client sets when it lists no outputs).

Everything that is wrong with a request raises `V2Error`, which the router turns into the protocol's error
shape `{"error": "message"}` with `status` (400 unless said otherwise).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.echo import clip, quoted

# V2 datatype <-> numpy dtype (little endian, as the binary extension requires). BYTES is not numeric and no
# model here takes strings, so it is recognised (for a precise message) but not decodable.
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
KNOWN_DATATYPES = (*_DTYPES, "BYTES")
_NUMPY_TO_V2 = {np.dtype(dt).newbyteorder("="): name for name, dt in _DTYPES.items()}
# Triton's config.pbtxt spelling of the same types (model configuration extension).
CONFIG_DATA_TYPES = {name: f"TYPE_{'STRING' if name == 'BYTES' else name}" for name in KNOWN_DATATYPES}

# Request parameters this server understands; anything else under `parameters` is ignored (as Triton does
# for unknown custom parameters), but these shared-memory ones must fail loudly: we cannot honour them.
_UNSUPPORTED_TENSOR_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
# numpy arrays have at most 64 dimensions; no model here has more than 2. A dimension past 2^31 can never
# match data that fits in a request body (and some, times the item size, overflow numpy's byte count).
MAX_RANK = 16
MAX_DIM = 2**31 - 1


class V2Error(Exception):
    """A request the protocol layer refuses. `status` is the HTTP status; the message goes to the user."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def v2_datatype(dtype: np.dtype | str) -> str:
    """The V2 datatype name of a numpy dtype (`float32` -> `FP32`)."""
    dt = np.dtype(dtype).newbyteorder("=")
    try:
        return _NUMPY_TO_V2[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no V2 datatype") from None


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype (`FP32` -> little-endian float32)."""
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise V2Error(f"unsupported datatype {quoted(datatype)}; supported: {', '.join(_DTYPES)}") from None


# --------------------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request. `inputs` maps name -> array already shaped as declared."""

    inputs: dict[str, np.ndarray]
    input_datatypes: dict[str, str]
    # None = the request listed no outputs: return every output, binary iff binary_data_output.
    outputs: tuple[RequestedOutput, ...] | None
    binary_data_output: bool
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def timeout_us(self) -> int | None:
        """The per-request timeout (µs) the client asked for (`parameters.timeout`), if any."""
        value = self.parameters.get("timeout")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def wants_binary(self, output_name: str) -> bool:
        if self.outputs is None:
            return self.binary_data_output
        for out in self.outputs:
            if out.name == output_name:
                return out.binary
        return self.binary_data_output


def decompress(body: bytes, content_encoding: str | None, max_size: int) -> bytes:
    """Undo `Content-Encoding` (gzip, deflate or identity), refusing to inflate past `max_size` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # HTTP "deflate" is the zlib format (what tritonclient sends); accept raw deflate as well, as
        # browsers and servers have done since some clients got it wrong.
        wbits = zlib.MAX_WBITS if body[:1] and (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        supported = "supported: gzip, deflate"
        raise V2Error(f"unsupported Content-Encoding {quoted(content_encoding)}; {supported}", 415)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_size + 1)
        if len(out) > max_size or inflater.unconsumed_tail:
            raise V2Error(f"decompressed request body exceeds the limit of {max_size} bytes", 413)
        out += inflater.flush()
    except zlib.error as exc:
        raise V2Error(f"request body is not valid {encoding} data: {exc}") from None
    if not inflater.eof:
        raise V2Error(f"request body is truncated {encoding} data")
    if inflater.unused_data:
        # A second gzip member, or junk: answering from the first member alone would silently drop the rest.
        raise V2Error(
            f"request body has {len(inflater.unused_data)} bytes after the end of the {encoding} data"
            " (trailing data or a second member)"
        )
    if len(out) > max_size:
        raise V2Error(f"decompressed request body exceeds the limit of {max_size} bytes", 413)
    return out


def _loads_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise V2Error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise V2Error(f"{what} must be a JSON object")
    return obj


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise V2Error(f"{where}: 'shape' must be a list of non-negative integers")
    if len(value) > MAX_RANK:
        raise V2Error(f"{where}: 'shape' has {len(value)} dimensions; at most {MAX_RANK} are supported")
    if any(d > MAX_DIM for d in value):
        raise V2Error(f"{where}: 'shape' has a dimension larger than {MAX_DIM}")
    return tuple(value)


def _reshaped(flat: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """`flat` as `shape`; a shape numpy cannot represent (its byte size overflows) is a bad request."""
    try:
        return flat.reshape(shape)
    except (ValueError, MemoryError, OverflowError):
        raise V2Error(f"{where}: shape {clip(str(list(shape)))} cannot be represented") from None


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"{where}: 'parameters' must be an object")
    return value


def _flatten(data: list[Any], where: str) -> list[Any]:
    """Row-major leaves of a flat or nested (rectangular) JSON list."""
    level: list[Any] = [data]
    while level and isinstance(level[0], list):
        width = len(level[0])
        if any(not isinstance(item, list) or len(item) != width for item in level):
            raise V2Error(f"{where}: 'data' is ragged (nested lists of unequal length or depth)")
        level = [x for item in level for x in item]
    if any(isinstance(x, list) for x in level):
        raise V2Error(f"{where}: 'data' is ragged (nested lists of unequal length or depth)")
    return level


def _json_tensor_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        raise V2Error(f"{where}: 'data' must be a list (row-major, flat or nested)")
    flat = _flatten(data, where)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise V2Error(f"{where}: 'data' has {len(flat)} elements but shape {list(shape)} needs {expected}")
    if dtype.kind in "iu":
        # Integers must arrive as JSON integers: 1.5 or true silently cast to a token id would be a lie.
        if not all(type(v) is int for v in flat):
            raise V2Error(f"{where}: 'data' must hold only integers for datatype {datatype}")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise V2Error(f"{where}: a value is out of range for datatype {datatype}")
    elif dtype.kind == "b":
        if not all(type(v) is bool for v in flat):
            raise V2Error(f"{where}: 'data' must hold only booleans for datatype BOOL")
    elif not all(type(v) in (int, float) for v in flat):
        raise V2Error(f"{where}: 'data' must hold only numbers for datatype {datatype}")
    return _reshaped(np.asarray(flat, dtype=dtype), shape, where)


def parse_infer_request(
    body: bytes,
    header_length: str | int | None = None,
    content_encoding: str | None = None,
    max_body_bytes: int = 64 * 1024 * 1024,
) -> InferRequest:
    """Decode a V2 infer request body (JSON, or JSON header + binary tensors) into arrays.

    `header_length` is the `Inference-Header-Content-Length` HTTP header (None when the body is all JSON).
    """
    body = decompress(body, content_encoding, max_body_bytes)
    if header_length is None or header_length == "":
        header_bytes, binary = body, b""
    else:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise V2Error(
                f"Inference-Header-Content-Length must be an integer, got {quoted(header_length)}"
            ) from None
        if not 0 < n <= len(body):
            raise V2Error(
                f"Inference-Header-Content-Length is {n} but the request body has {len(body)} bytes"
            )
        header_bytes, binary = body[:n], body[n:]
    if not header_bytes.strip():
        raise V2Error("request body is empty; expected a JSON object with 'inputs'")
    header = _loads_object(header_bytes, "request header")

    params = _parameters(header.get("parameters"), "request")
    binary_data_output = params.get("binary_data_output", False)
    if not isinstance(binary_data_output, bool):
        raise V2Error("request: parameters.binary_data_output must be a boolean")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("request: 'id' must be a string")

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error("request: 'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise V2Error(f"inputs[{i}] must be an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise V2Error(f"inputs[{i}]: 'name' must be a non-empty string")
        where = f"input {quoted(name)}"
        if name in inputs:
            raise V2Error(f"{where} appears more than once")
        datatype = raw.get("datatype")
        if not isinstance(datatype, str):
            raise V2Error(f"{where}: 'datatype' must be a string")
        if datatype not in KNOWN_DATATYPES:
            raise V2Error(f"{where}: unknown datatype {quoted(datatype)}")
        if datatype == "BYTES":
            raise V2Error(f"{where}: datatype BYTES is not supported by this server")
        shape = _shape(raw.get("shape"), where)
        tparams = _parameters(raw.get("parameters"), where)
        for key in _UNSUPPORTED_TENSOR_PARAMETERS:
            if key in tparams:
                raise V2Error(f"{where}: shared memory is not supported by this server")
        size = tparams.get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise V2Error(f"{where}: has both 'data' and parameters.binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise V2Error(f"{where}: parameters.binary_data_size must be a non-negative integer")
            dtype = numpy_dtype(datatype)
            expected = math.prod(shape) * dtype.itemsize
            if size != expected:
                raise V2Error(
                    f"{where}: binary_data_size is {size} bytes but shape {list(shape)} of {datatype} "
                    f"needs {expected}"
                )
            if offset + size > len(binary):
                raise V2Error(
                    f"{where}: binary data is truncated (needs {size} bytes at offset {offset}, "
                    f"only {len(binary) - offset} left)"
                )
            flat = np.frombuffer(binary, dtype=dtype, count=math.prod(shape), offset=offset)
            arr = _reshaped(flat, shape, where)
            offset += size
        elif "data" in raw:
            arr = _json_tensor_data(raw["data"], datatype, shape, where)
        else:
            raise V2Error(f"{where}: needs 'data' or parameters.binary_data_size")
        inputs[name] = arr
        datatypes[name] = datatype
    if offset != len(binary):
        raise V2Error(
            f"request body has {len(binary) - offset} bytes of binary data that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)"
        )

    outputs: tuple[RequestedOutput, ...] | None = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise V2Error("request: 'outputs' must be a list")
        parsed = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise V2Error(f"outputs[{i}] must be an object with a string 'name'")
            where = f"output {quoted(raw['name'])}"
            if raw["name"] in seen:
                # Each copy would be answered in full: a small request could ask for a huge answer.
                raise V2Error(f"{where} appears more than once")
            seen.add(raw["name"])
            oparams = _parameters(raw.get("parameters"), where)
            for key in _UNSUPPORTED_TENSOR_PARAMETERS:
                if key in oparams:
                    raise V2Error(f"{where}: shared memory is not supported by this server")
            if oparams.get("classification"):
                raise V2Error(f"{where}: the classification extension is not supported")
            binary_flag = oparams.get("binary_data", binary_data_output)
            if not isinstance(binary_flag, bool):
                raise V2Error(f"{where}: parameters.binary_data must be a boolean")
            parsed.append(RequestedOutput(raw["name"], binary_flag))
        outputs = tuple(parsed)
    return InferRequest(
        inputs=inputs,
        input_datatypes=datatypes,
        outputs=outputs,
        binary_data_output=binary_data_output,
        id=request_id,
        parameters=params,
    )


# ------------------------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class TensorMeta:
    """What a model declares about one tensor, in V2 terms (-1 = any size, the batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def validate_inputs(
    request: InferRequest,
    inputs: Sequence[TensorMeta],
    outputs: Sequence[TensorMeta],
    max_batch_size: int | None = None,
    token_range: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Check the request's tensors against the model's declared inputs; return them as contiguous arrays.

    `token_range` maps an input name to the half-open id range [low, high) its values must fall in (token ids
    index an embedding: an out-of-range id would read garbage or crash the runtime).
    """
    declared = {t.name: t for t in inputs}
    unknown = sorted(set(request.inputs) - set(declared))
    if unknown:
        raise V2Error(f"unexpected input {quoted(unknown[0])}; the model takes {sorted(declared)}")
    missing = sorted(set(declared) - set(request.inputs))
    if missing:
        raise V2Error(f"missing input {missing[0]!r}; the model takes {sorted(declared)}")
    out_names = {t.name for t in outputs}
    for out in request.outputs or ():
        if out.name not in out_names:
            raise V2Error(f"unknown output {quoted(out.name)}; the model has {sorted(out_names)}")
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for name, meta in declared.items():
        arr = request.inputs[name]
        datatype = request.input_datatypes[name]
        if datatype != meta.datatype:
            raise V2Error(f"input {name!r}: datatype is {datatype} but the model expects {meta.datatype}")
        if len(arr.shape) != len(meta.shape) or any(
            want != -1 and got != want for got, want in zip(arr.shape, meta.shape, strict=True)
        ):
            raise V2Error(
                f"input {name!r}: shape is {list(arr.shape)} but the model expects {list(meta.shape)}"
            )
        if meta.shape and meta.shape[0] == -1:
            rows = arr.shape[0]
            if rows == 0:
                raise V2Error(f"input {name!r}: batch dimension is 0; send at least one row")
            if batch is not None and rows != batch:
                raise V2Error(f"inputs disagree on the batch size ({batch} vs {rows})")
            batch = rows
            if max_batch_size is not None and rows > max_batch_size:
                raise V2Error(f"input {name!r}: batch of {rows} rows exceeds max_batch_size {max_batch_size}")
        if token_range and name in token_range and arr.size:
            low, high = token_range[name]
            bad = np.flatnonzero((arr < low) | (arr >= high))
            if bad.size:
                pos = np.unravel_index(int(bad[0]), arr.shape)
                raise V2Error(
                    f"input {name!r}: value {int(arr[pos])} at index {list(map(int, pos))} is not a valid "
                    f"token id (must be in [{low}, {high}))"
                )
        checked[name] = np.ascontiguousarray(arr)
    return checked


# -------------------------------------------------------------------------------------------------- response


# Upper bound of one JSON number as orjson writes a float32/float64 or an int64 ("-1.2345679e-38,").
_JSON_CHARS_PER_VALUE = 32


def build_infer_response(
    model_name: str,
    model_version: str,
    results: Mapping[str, np.ndarray],
    request: InferRequest,
    max_bytes: int | None = None,
) -> tuple[bytes, int | None]:
    """Encode outputs as the V2 response body. Returns (body, header_length); header_length is None when
    the body is pure JSON, otherwise the value of the `Inference-Header-Content-Length` response header.

    An answer that would be larger than `max_bytes` raises `V2Error` before it is built (binary outputs
    count their bytes, JSON ones a generous bound per value).
    """
    names = list(results) if request.outputs is None else [o.name for o in request.outputs]
    if max_bytes is not None:
        size = sum(
            results[n].nbytes if request.wants_binary(n) else results[n].size * _JSON_CHARS_PER_VALUE
            for n in names
        )
        if size > max_bytes:
            raise V2Error(
                f"the answer would be about {size} bytes, over the limit of {max_bytes}"
                " (FWS_MAX_RESPONSE_BYTES); ask for fewer rows or outputs, or binary outputs"
            )
    header_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        arr = results[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if request.wants_binary(name):
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
        header_outputs.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = header_outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress a response for a client that asked for gzip or deflate (`Accept-Encoding`), else as is."""
    if not accept_encoding:
        return body, None
    accepted = set()
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            if float(q) <= 0:
                continue
        except ValueError:
            continue
        accepted.add(coding.strip().lower())
    if "gzip" in accepted:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 1), "deflate"
    return body, None
