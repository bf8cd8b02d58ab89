"""config.pbtxt: one bucket's Triton model configuration, its writer and its reader.

The reader returns everything the service obeys (Triton's meaning, counted in rows):

- ``max_batch_size``: most rows in one run (0: the model takes no batch axis; not a shape we export).
- ``dynamic_batching``: ``preferred_batch_size`` (runs of these sizes are formed when enough rows wait),
  ``max_queue_delay_microseconds`` (how long the first queued row may wait for a fuller batch) and
  ``default_queue_policy { max_queue_size, default_timeout_microseconds }`` (rows that may wait; the
  default deadline of a request).
- ``instance_group [ { count } ]``: how many runs of this model may compute at once.
- ``version_policy``: ``latest { num_versions }``, ``all { }`` or ``specific { versions: [...] }``.
- ``parameters``: string key/value pairs (family, seq_len, and what a client needs to encode queries).

A field the file leaves out is None here: the server's own default (an FWS_ setting) applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import ContractError
from contract.pbtxt import as_list, parse_pbtxt, quote
from contract.stream import STREAM_PARAMETER
from contract.tensors import (
    BATCH_AXIS,
    INPUT_TOKENS,
    TRITON_DTYPES,
    TensorSpec,
    input_specs,
    normalize_dtype,
    output_specs,
)

PLATFORM = "onnxruntime_onnx"
DEFAULT_MAX_BATCH_SIZE = 256  # Triton's max_batch_size; the graph itself takes any batch
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")


def bucket_model_name(family: str, seq_len: int) -> str:
    return f"{family}_t{seq_len}"


@dataclass(frozen=True)
class VersionPolicy:
    """Which version folders of a model are served (Triton's version_policy)."""

    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1  # for "latest"
    versions: tuple[int, ...] = ()  # for "specific"

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve out of those on disk, oldest first."""
        found = sorted(set(available))
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-self.num_versions :] if self.num_versions > 0 else []

    def as_json(self) -> dict[str, Any]:
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": list(self.versions)}}
        return {"latest": {"num_versions": self.num_versions}}


@dataclass(frozen=True)
class BucketConfig:
    """One model of the repository, as its config.pbtxt declares it (None: not set, the server decides)."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]  # full shapes, batch axis first (as in the ONNX graph)
    outputs: tuple[TensorSpec, ...]
    family: str
    seq_len: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    max_queue_size: int | None = None
    default_timeout_us: int | None = None
    instance_count: int | None = None
    instance_kind: str = "KIND_AUTO"
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def stateful(self) -> bool:
        """The stream model of memory sessions (`contract.stream`), not a length bucket."""
        return STREAM_PARAMETER in self.parameters


def render_config_pbtxt(
    family: str,
    seq_len: int,
    num_classes: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    preferred_batch_sizes: Iterable[int] = (),
    max_queue_delay_us: int | None = None,
    *,
    vocab: Sequence[str] | None = None,
    pad_id: int | None = None,
    answer_classes: Sequence[str] | None = None,
    extra_parameters: Mapping[str, str] | None = None,
) -> str:
    """Triton's config.pbtxt for one bucket of `family`, as the exporter writes it.

    Batching fields left at their defaults are left out of the file, so the server's FWS_ defaults apply
    (a queue delay of 0: a lone request is never held back). `vocab`, `pad_id` and `answer_classes` go into
    `parameters` (JSON strings), so a client of any V2 server, Triton too, reads them with
    get_model_config and encodes queries without our code.
    """
    params: dict[str, str] = {"family": family, "seq_len": str(seq_len)}
    if vocab is not None:
        params["vocab"] = json.dumps(list(vocab))
    if pad_id is not None:
        params["pad_id"] = str(pad_id)
        params["padding"] = "left"
    if answer_classes is not None:
        params["answer_classes"] = json.dumps(list(answer_classes))
    params.update(extra_parameters or {})  # e.g. the bucket's source checkpoint and its figures
    config = BucketConfig(
        name=bucket_model_name(family, seq_len),
        platform=PLATFORM,
        max_batch_size=max_batch_size,
        inputs=input_specs(seq_len),
        outputs=output_specs(seq_len, num_classes),
        family=family,
        seq_len=seq_len,
        preferred_batch_sizes=tuple(sorted({b for b in preferred_batch_sizes if 1 <= b <= max_batch_size})),
        max_queue_delay_us=max_queue_delay_us,
        parameters=params,
    )
    comment = f"{family}, length bucket T={seq_len}: tokens left padded with the PAD id (see parameters)."
    return write_config_pbtxt(config, comment)


def write_config_pbtxt(config: BucketConfig, comment: str = "") -> str:
    """The config.pbtxt text of `config`; fields that are None are left out (the server's defaults apply).

    `read_config_pbtxt` reads it back to an equal BucketConfig.
    """
    batched = config.max_batch_size > 0

    def tensor(spec: TensorSpec) -> str:
        dims = ", ".join(str(d) for d in (spec.shape[1:] if batched else spec.shape))
        dtype = TRITON_DTYPES[normalize_dtype(spec.dtype)]
        return f"  {{\n    name: {quote(spec.name)}\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}"

    lines = [f"# {comment}"] if comment else []
    lines += [
        f"name: {quote(config.name)}",
        f"platform: {quote(config.platform)}",
        f"max_batch_size: {config.max_batch_size}",
    ]
    policy = config.version_policy
    if policy != VersionPolicy():
        body = {
            "latest": f"latest {{ num_versions: {policy.num_versions} }}",
            "all": "all { }",
            "specific": f"specific {{ versions: [ {', '.join(map(str, policy.versions))} ] }}",
        }[policy.kind]
        lines.append(f"version_policy: {{ {body} }}")
    lines += [
        "input [\n" + ",\n".join(tensor(s) for s in config.inputs) + "\n]",
        "output [\n" + ",\n".join(tensor(s) for s in config.outputs) + "\n]",
    ]
    if batched:
        lines.append("dynamic_batching {")
        if config.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, config.preferred_batch_sizes))} ]")
        if config.max_queue_delay_us is not None:
            lines.append(f"  max_queue_delay_microseconds: {config.max_queue_delay_us}")
        queue = [
            f"    {key}: {value}"
            for key, value in (
                ("max_queue_size", config.max_queue_size),
                ("default_timeout_microseconds", config.default_timeout_us),
            )
            if value is not None
        ]
        if queue:
            lines += ["  default_queue_policy {", *queue, "  }"]
        lines.append("}")
    if config.instance_count is not None:
        lines.append(f"instance_group [ {{ count: {config.instance_count}, kind: {config.instance_kind} }} ]")
    lines += [
        f"parameters {{\n  key: {quote(k)}\n  value: {{ string_value: {quote(v)} }}\n}}"
        for k, v in config.parameters.items()
    ]
    return "\n".join(lines) + "\n"


def read_config_pbtxt(path: str | Path) -> BucketConfig:
    """Read a bucket's config.pbtxt; ContractError names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(path, f"cannot read config ({getattr(exc, 'strerror', None) or exc})") from None
    return config_from_text(text, path)


def config_from_text(text: str, path: str | Path) -> BucketConfig:
    cfg = parse_pbtxt(text, path)
    for key in ("name", "platform", "max_batch_size", "input", "output"):
        if key not in cfg:
            raise ContractError(path, f"config lacks {key!r}")
    max_batch_size = _int(cfg["max_batch_size"], "max_batch_size", path, minimum=0)
    batched = max_batch_size > 0

    def specs(entries: Any) -> tuple[TensorSpec, ...]:
        out = []
        for e in as_list(entries):
            if not isinstance(e, dict) or not {"name", "data_type", "dims"} <= set(e):
                raise ContractError(path, f"tensor entry {e!r} needs name, data_type and dims")
            dims = tuple(_int(d, f"dims of {e['name']!r}", path, minimum=-1) for d in as_list(e["dims"]))
            shape: tuple[str | int, ...] = (BATCH_AXIS, *dims) if batched else dims
            out.append(TensorSpec(str(e["name"]), normalize_dtype(str(e["data_type"])), shape))
        return tuple(out)

    params = {}
    for p in as_list(cfg.get("parameters")):
        if isinstance(p, dict) and isinstance(p.get("value"), dict):
            params[str(p.get("key"))] = str(p["value"].get("string_value", ""))
    name = str(cfg["name"])
    inputs = specs(cfg["input"])
    seq_len_text = params.get("seq_len")
    if seq_len_text is None:  # a config written by someone else: T from the tokens input
        tok = next((s for s in inputs if s.name == INPUT_TOKENS), None)
        seq_len_text = str(tok.shape[-1]) if tok is not None and tok.shape else "0"
    family = params.get("family") or name.rsplit("_t", 1)[0]
    batching = _section(cfg, "dynamic_batching", path)
    queue = _section(batching, "default_queue_policy", path)
    preferred = tuple(
        _int(b, "preferred_batch_size", path, minimum=1)
        for b in as_list(batching.get("preferred_batch_size"))
    )
    too_big = [b for b in preferred if b > max_batch_size]
    if batched and too_big:
        raise ContractError(path, f"preferred_batch_size {too_big} exceeds max_batch_size {max_batch_size}")

    def optional(section: dict[str, Any], key: str, minimum: int) -> int | None:
        return _int(section[key], key, path, minimum=minimum) if key in section else None

    # Triton: 0 means "no limit" / "no timeout"; here the server's default applies instead.
    max_queue_size = optional(queue, "max_queue_size", 0) or None
    default_timeout_us = optional(queue, "default_timeout_microseconds", 0) or None
    count, kind = _instances(cfg, path)
    return BucketConfig(
        name=name,
        platform=str(cfg["platform"]),
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=specs(cfg["output"]),
        family=family,
        seq_len=_int(seq_len_text, "seq_len parameter", path, minimum=0),
        preferred_batch_sizes=tuple(sorted(set(preferred))),
        max_queue_delay_us=optional(batching, "max_queue_delay_microseconds", 0),
        max_queue_size=max_queue_size,
        default_timeout_us=default_timeout_us,
        instance_count=count,
        instance_kind=kind,
        version_policy=_version_policy(cfg, path),
        parameters=params,
    )


def _int(value: Any, what: str, path: str | Path, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ContractError(path, f"{what} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ContractError(path, f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ContractError(path, f"{what} must be >= {minimum}, got {number}")
    return number


def _section(cfg: dict[str, Any], key: str, path: str | Path) -> dict[str, Any]:
    value = cfg.get(key, {})
    if isinstance(value, list):  # given twice
        raise ContractError(path, f"{key} is given more than once")
    if not isinstance(value, dict):
        raise ContractError(path, f"{key} must be a {{ ... }} block, got {value!r}")
    return value


def _instances(cfg: dict[str, Any], path: str | Path) -> tuple[int | None, str]:
    groups = as_list(cfg.get("instance_group"))
    if not groups:
        return None, "KIND_AUTO"
    count, kinds = 0, set()
    for group in groups:
        if not isinstance(group, dict):
            raise ContractError(path, f"instance_group entries must be {{ ... }} blocks, got {group!r}")
        count += _int(group.get("count", 1), "instance_group count", path, minimum=1)
        kind = str(group.get("kind", "KIND_AUTO"))
        if kind not in INSTANCE_KINDS:
            raise ContractError(path, f"instance_group kind {kind!r} is not one of {list(INSTANCE_KINDS)}")
        kinds.add(kind)
    return count, kinds.pop() if len(kinds) == 1 else "KIND_AUTO"


def _version_policy(cfg: dict[str, Any], path: str | Path) -> VersionPolicy:
    policy = _section(cfg, "version_policy", path)
    if not policy:
        return VersionPolicy()
    if len(policy) != 1 or next(iter(policy)) not in ("latest", "all", "specific"):
        raise ContractError(
            path, f"version_policy must be one of latest {{...}}, all {{}}, specific {{...}}: got {policy!r}"
        )
    kind, body = next(iter(policy.items()))
    if not isinstance(body, dict):
        raise ContractError(path, f"version_policy {kind} must be a {{ ... }} block")
    if kind == "latest":
        return VersionPolicy("latest", _int(body.get("num_versions", 1), "num_versions", path, minimum=1))
    if kind == "specific":
        versions = tuple(_int(v, "specific versions", path, minimum=0) for v in as_list(body.get("versions")))
        if not versions:
            raise ContractError(path, "version_policy specific lists no versions")
        return VersionPolicy("specific", versions=versions)
    return VersionPolicy("all")
