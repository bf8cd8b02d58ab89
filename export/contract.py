"""The ONNX contract, declared once: export writes it, verification checks it, the service reads it.

Pure Python on purpose (no torch, no onnx): the service imports this module.

Model repository layout (Triton's), one model name per length bucket because an unrolled graph has a fixed T::

    model_repository/
      fastweights_t11/
        config.pbtxt
        1/model.onnx

Every bucket of one trained model shares a `family` (the logical model name users ask for, e.g.
"fastweights"); the service answers a query with the smallest bucket whose T fits it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUT_TOKENS = "tokens"  # int64 [batch, T], left padded with the PAD id
OUTPUT_LOGITS = "logits"  # float32 [batch, num_classes]
OUTPUT_ATTENTION = "memory_attention"  # float32 [batch, T]: fast-memory weight per past position, final step
BATCH_AXIS = "batch"

INPUT_DTYPE = "int64"
OUTPUT_DTYPE = "float32"
ONNX_FILENAME = "model.onnx"
CONFIG_FILENAME = "config.pbtxt"

DEFAULT_FAMILY = "fastweights"
# T = 2K + 3: buckets for K = 1, 4, 8 and 12 pairs. 27 (K=12) is longer than the default model's training
# range (K <= 8) and exists to measure length generalization.
DEFAULT_BUCKETS: tuple[int, ...] = (5, 11, 19, 27)
DEFAULT_VERSION = 1
DEFAULT_MAX_BATCH_SIZE = 256  # Triton's max_batch_size; the graph itself takes any batch
PLATFORM = "onnxruntime_onnx"
# Forbidden in an exported graph: the whole point of the export is that time and inner steps are unrolled.
LOOP_OPS = frozenset({"Loop", "Scan"})

_TRITON_DTYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
_FROM_TRITON = {v: k for k, v in _TRITON_DTYPES.items()}


def bucket_model_name(family: str, seq_len: int) -> str:
    return f"{family}_t{seq_len}"


class MetadataKeys:
    """Keys of the metadata_props every exported graph carries (values are strings; JSON where noted)."""

    FAMILY = "fastweights.family"
    SEQ_LEN = "fastweights.seq_len"  # int
    VOCAB = "fastweights.vocab"  # JSON list of tokens, index = id
    PAD_ID = "fastweights.pad_id"  # int
    ANSWER_CLASSES = "fastweights.answer_classes"  # JSON list: class index -> value string
    MODEL_CONFIG = "fastweights.model_config"  # JSON of model.config.ModelConfig
    METRICS = "fastweights.metrics"  # JSON: test metrics of the source checkpoint
    SOURCE_SHA256 = "fastweights.source_checkpoint_sha256"
    EXPORTER = "fastweights.exporter"  # e.g. "torch 2.13.0 dynamo=False"
    OPSET = "fastweights.opset"  # int
    CODE_VERSION = "fastweights.code_version"
    GRAPH = "fastweights.graph"  # how the graph was built, e.g. "attention form, folded input table"

    REQUIRED = (FAMILY, SEQ_LEN, VOCAB, PAD_ID, ANSWER_CLASSES, MODEL_CONFIG)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[str | int, ...]  # symbolic dims are strings


def input_specs(seq_len: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(INPUT_TOKENS, INPUT_DTYPE, (BATCH_AXIS, seq_len)),)


def output_specs(seq_len: int, num_classes: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(OUTPUT_LOGITS, OUTPUT_DTYPE, (BATCH_AXIS, num_classes)),
        TensorSpec(OUTPUT_ATTENTION, OUTPUT_DTYPE, (BATCH_AXIS, seq_len)),
    )


class ContractError(ValueError):
    """A model file or repository entry breaking the contract; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def normalize_dtype(dtype: str) -> str:
    """'tensor(int64)' (onnxruntime), 'int64', 'TYPE_INT64' (Triton) -> 'int64'; 'float' -> 'float32'."""
    d = dtype.strip()
    if d.startswith("tensor(") and d.endswith(")"):
        d = d[len("tensor(") : -1]
    d = _FROM_TRITON.get(d, d)
    return {"float": "float32", "double": "float64"}.get(d, d)


def check_io(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    seq_len: int,
    num_classes: int,
    path: str | Path,
) -> None:
    """Check a graph's inputs/outputs (as read by onnx, onnxruntime or a config.pbtxt) against the contract.

    Symbolic (string or None) first dims count as the batch axis; every other dim must match exactly.
    """
    _check_specs("input", inputs, input_specs(seq_len), path)
    _check_specs("output", outputs, output_specs(seq_len, num_classes), path)


def _check_specs(kind: str, got: Sequence[TensorSpec], want: Sequence[TensorSpec], path: str | Path) -> None:
    got_names = [g.name for g in got]
    want_names = [w.name for w in want]
    if sorted(got_names) != sorted(want_names):
        raise ContractError(path, f"{kind}s are {got_names}, the contract expects {want_names}")
    by_name = {g.name: g for g in got}
    for w in want:
        g = by_name[w.name]
        if normalize_dtype(g.dtype) != w.dtype:
            raise ContractError(
                path, f"{kind} {w.name!r} has dtype {g.dtype}, the contract expects {w.dtype}"
            )
        if len(g.shape) != len(w.shape):
            raise ContractError(
                path, f"{kind} {w.name!r} has shape {list(g.shape)}, expected {list(w.shape)}"
            )
        for i, (gd, wd) in enumerate(zip(g.shape, w.shape, strict=True)):
            if isinstance(wd, str):
                if not (gd is None or isinstance(gd, str)):
                    raise ContractError(path, f"{kind} {w.name!r} axis {i} must be dynamic ({wd}), got {gd}")
            elif gd != wd:
                raise ContractError(
                    path, f"{kind} {w.name!r} has shape {list(g.shape)}, expected {list(w.shape)}"
                )


# --- metadata_props ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMetadata:
    """The typed view of an exported graph's metadata_props (what the service needs to serve it)."""

    family: str
    seq_len: int
    vocab: tuple[str, ...]
    pad_id: int
    answer_classes: tuple[str, ...]
    model_config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    source_sha256: str = ""
    exporter: str = ""
    opset: int | None = None
    code_version: str = ""
    graph: str = ""

    @property
    def kind(self) -> str:
        return str(self.model_config.get("kind", ""))

    @property
    def num_classes(self) -> int:
        return len(self.answer_classes)

    @property
    def pad_token(self) -> str:
        return self.vocab[self.pad_id]

    def to_props(self) -> dict[str, str]:
        props = {
            MetadataKeys.FAMILY: self.family,
            MetadataKeys.SEQ_LEN: str(self.seq_len),
            MetadataKeys.VOCAB: json.dumps(list(self.vocab)),
            MetadataKeys.PAD_ID: str(self.pad_id),
            MetadataKeys.ANSWER_CLASSES: json.dumps(list(self.answer_classes)),
            MetadataKeys.MODEL_CONFIG: json.dumps(self.model_config, sort_keys=True),
            MetadataKeys.METRICS: json.dumps(self.metrics, sort_keys=True),
            MetadataKeys.SOURCE_SHA256: self.source_sha256,
            MetadataKeys.EXPORTER: self.exporter,
            MetadataKeys.CODE_VERSION: self.code_version,
            MetadataKeys.GRAPH: self.graph,
        }
        if self.opset is not None:
            props[MetadataKeys.OPSET] = str(self.opset)
        return props


def parse_metadata(props: Mapping[str, str], path: str | Path) -> ModelMetadata:
    """metadata_props (e.g. ``InferenceSession.get_modelmeta().custom_metadata_map``) -> ModelMetadata.

    Raises ContractError naming the file and the missing or malformed key.
    """
    missing = [k for k in MetadataKeys.REQUIRED if k not in props]
    if missing:
        raise ContractError(path, f"metadata_props lack required keys {missing}")

    def as_json(key: str, expected: type) -> Any:
        try:
            value = json.loads(props[key])
        except (TypeError, json.JSONDecodeError) as exc:
            raise ContractError(path, f"metadata {key} is not valid JSON ({exc})") from None
        if not isinstance(value, expected):
            raise ContractError(path, f"metadata {key} must be a JSON {expected.__name__}")
        return value

    def as_int(key: str) -> int:
        try:
            return int(props[key])
        except (TypeError, ValueError):
            raise ContractError(path, f"metadata {key} must be an integer, got {props[key]!r}") from None

    vocab = tuple(str(t) for t in as_json(MetadataKeys.VOCAB, list))
    pad_id = as_int(MetadataKeys.PAD_ID)
    if not 0 <= pad_id < len(vocab):
        raise ContractError(
            path, f"metadata pad id {pad_id} is outside the vocabulary of {len(vocab)} tokens"
        )
    classes = tuple(str(c) for c in as_json(MetadataKeys.ANSWER_CLASSES, list))
    if not classes:
        raise ContractError(path, "metadata answer classes are empty")
    seq_len = as_int(MetadataKeys.SEQ_LEN)
    if seq_len < 1:
        raise ContractError(path, f"metadata seq_len must be positive, got {seq_len}")
    metrics = as_json(MetadataKeys.METRICS, dict) if props.get(MetadataKeys.METRICS) else {}
    opset = as_int(MetadataKeys.OPSET) if props.get(MetadataKeys.OPSET) else None
    return ModelMetadata(
        family=props[MetadataKeys.FAMILY],
        seq_len=seq_len,
        vocab=vocab,
        pad_id=pad_id,
        answer_classes=classes,
        model_config=as_json(MetadataKeys.MODEL_CONFIG, dict),
        metrics=metrics,
        source_sha256=props.get(MetadataKeys.SOURCE_SHA256, ""),
        exporter=props.get(MetadataKeys.EXPORTER, ""),
        opset=opset,
        code_version=props.get(MetadataKeys.CODE_VERSION, ""),
        graph=props.get(MetadataKeys.GRAPH, ""),
    )


# --- config.pbtxt: a tiny writer and reader of the protobuf text format (no protobuf dependency) ---


@dataclass(frozen=True)
class BucketConfig:
    """One model of the repository, as its config.pbtxt declares it."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]  # full shapes, batch axis first (as in the ONNX graph)
    outputs: tuple[TensorSpec, ...]
    family: str
    seq_len: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0


def render_config_pbtxt(
    family: str,
    seq_len: int,
    num_classes: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    preferred_batch_sizes: Iterable[int] = (32, 256),
    max_queue_delay_us: int = 500,
) -> str:
    """Triton's config.pbtxt for one bucket. Dims omit the batch axis (Triton adds it: max_batch_size > 0)."""
    name = bucket_model_name(family, seq_len)
    preferred = sorted({b for b in preferred_batch_sizes if 1 <= b <= max_batch_size})

    def tensor(spec: TensorSpec) -> str:
        dims = ", ".join(str(d) for d in spec.shape[1:])
        dtype = _TRITON_DTYPES[spec.dtype]
        return f'  {{\n    name: "{spec.name}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'

    lines = [
        f"# {family}, length bucket T={seq_len}: tokens left padded with the PAD id (see metadata_props).",
        f'name: "{name}"',
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(tensor(s) for s in input_specs(seq_len)) + "\n]",
        "output [\n" + ",\n".join(tensor(s) for s in output_specs(seq_len, num_classes)) + "\n]",
        "dynamic_batching {",
        *([f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]"] if preferred else []),
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        'parameters {\n  key: "family"\n  value: { string_value: "' + family + '" }\n}',
        'parameters {\n  key: "seq_len"\n  value: { string_value: "' + str(seq_len) + '" }\n}',
    ]
    return "\n".join(lines) + "\n"


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def parse_pbtxt(text: str, path: str | Path = "<config.pbtxt>") -> dict[str, Any]:
    """Protobuf text format -> dict. Repeated fields (and ``key: [a, b]`` lists) become lists.

    Enough of the format for Triton model configs; unknown syntax raises ContractError.
    """
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ContractError(path, f"cannot parse config at character {pos}")
        pos = m.end()
        if m.group(1) is None:
            tokens.append(next(g for g in m.groups()[1:] if g is not None))
    it = _Tokens(tokens, path)
    result = _parse_fields(it, end=None)
    return result


class _Tokens:
    def __init__(self, tokens: list[str], path: str | Path):
        self.tokens, self.i, self.path = tokens, 0, path

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ContractError(self.path, "config ends too early")
        self.i += 1
        return tok


def _parse_fields(it: _Tokens, end: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while True:
        tok = it.peek()
        if tok is None:
            if end is not None:
                raise ContractError(it.path, f"missing {end!r}")
            return out
        if tok == end:
            it.next()
            return out
        if tok == ",":
            it.next()
            continue
        key = it.next()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ContractError(it.path, f"expected a field name, got {key!r}")
        if it.peek() == ":":
            it.next()
        value = _parse_value(it)
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + (
                value if isinstance(value, list) else [value]
            )
        else:
            out[key] = value


def _parse_value(it: _Tokens) -> Any:
    tok = it.next()
    if tok == "{":
        return _parse_fields(it, "}")
    if tok == "[":
        items: list[Any] = []
        while it.peek() != "]":
            if it.peek() == ",":
                it.next()
                continue
            items.append(_parse_value(it))
        it.next()
        return items
    if tok in "}]:,":
        raise ContractError(it.path, f"unexpected {tok!r}")
    if tok.startswith('"'):
        return json.loads(tok)
    for convert in (int, float):
        try:
            value = convert(tok)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return tok  # an enum name (TYPE_INT64) or true/false


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def read_config_pbtxt(path: str | Path) -> BucketConfig:
    """Read a bucket's config.pbtxt; ContractError names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ContractError(path, f"cannot read config ({exc.strerror or exc})") from None
    cfg = parse_pbtxt(text, path)
    for key in ("name", "platform", "max_batch_size", "input", "output"):
        if key not in cfg:
            raise ContractError(path, f"config lacks {key!r}")
    batched = int(cfg["max_batch_size"]) > 0

    def specs(entries: Any) -> tuple[TensorSpec, ...]:
        out = []
        for e in _as_list(entries):
            if not isinstance(e, dict) or not {"name", "data_type", "dims"} <= set(e):
                raise ContractError(path, f"tensor entry {e!r} needs name, data_type and dims")
            dims = tuple(int(d) for d in _as_list(e["dims"]))
            shape: tuple[str | int, ...] = (BATCH_AXIS, *dims) if batched else dims
            out.append(TensorSpec(str(e["name"]), normalize_dtype(str(e["data_type"])), shape))
        return tuple(out)

    params = {}
    for p in _as_list(cfg.get("parameters")):
        if isinstance(p, dict) and isinstance(p.get("value"), dict):
            params[str(p.get("key"))] = str(p["value"].get("string_value", ""))
    name = str(cfg["name"])
    inputs = specs(cfg["input"])
    seq_len_text = params.get("seq_len")
    if seq_len_text is None:  # a config written by someone else: T from the tokens input
        tok = next((s for s in inputs if s.name == INPUT_TOKENS), None)
        seq_len_text = str(tok.shape[-1]) if tok is not None and tok.shape else "0"
    family = params.get("family") or name.rsplit("_t", 1)[0]
    batching = cfg.get("dynamic_batching") or {}
    if not isinstance(batching, dict):
        batching = {}
    return BucketConfig(
        name=name,
        platform=str(cfg["platform"]),
        max_batch_size=int(cfg["max_batch_size"]),
        inputs=inputs,
        outputs=specs(cfg["output"]),
        family=family,
        seq_len=int(seq_len_text),
        preferred_batch_sizes=tuple(int(b) for b in _as_list(batching.get("preferred_batch_size"))),
        max_queue_delay_us=int(batching.get("max_queue_delay_microseconds", 0)),
    )


# --- the repository as a whole -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryEntry:
    """One servable model version: ``<root>/<name>/<version>/model.onnx`` and its config."""

    config: BucketConfig
    version: int
    model_path: Path
    config_path: Path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def seq_len(self) -> int:
        return self.config.seq_len


def scan_repository(root: str | Path) -> list[RepositoryEntry]:
    """Every model of a repository at its highest numeric version, sorted by (family, seq_len).

    Torch- and onnx-free: it reads config.pbtxt files and checks that the .onnx files exist; opening the
    graphs (and reading their metadata) is the caller's job. Raises ContractError for a missing root, an
    empty repository, a model without config or versions, or a config whose name is not its folder's.
    """
    root = Path(root)
    if not root.is_dir():
        raise ContractError(root, "model repository is not a directory")
    entries = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_path = model_dir / CONFIG_FILENAME
        if not config_path.is_file():
            raise ContractError(model_dir, f"model folder has no {CONFIG_FILENAME}")
        cfg = read_config_pbtxt(config_path)
        if cfg.name != model_dir.name:
            raise ContractError(
                config_path, f"config name {cfg.name!r} differs from its folder {model_dir.name!r}"
            )
        if cfg.platform != PLATFORM:
            raise ContractError(config_path, f"platform {cfg.platform!r} is not {PLATFORM!r}")
        versions = sorted(int(v.name) for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit())
        if not versions:
            raise ContractError(model_dir, "model folder has no numeric version folder (e.g. 1/)")
        model_path = model_dir / str(versions[-1]) / ONNX_FILENAME
        if not model_path.is_file():
            raise ContractError(model_path, "missing model file")
        entries.append(RepositoryEntry(cfg, versions[-1], model_path, config_path))
    if not entries:
        raise ContractError(root, "model repository holds no models")
    return sorted(entries, key=lambda e: (e.family, e.seq_len))


def smallest_bucket(entries: Iterable[RepositoryEntry], family: str, length: int) -> RepositoryEntry | None:
    """The entry of `family` with the smallest T >= length (None when the query is too long for all)."""
    fitting = [e for e in entries if e.family == family and e.seq_len >= length]
    return min(fitting, key=lambda e: e.seq_len) if fitting else None
