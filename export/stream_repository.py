"""Write a family's stream model into the repository: ``<family>_stream/<version>/model.onnx`` and a
config.pbtxt in Triton's stateful form (``sequence_batching`` with the state as implicit state tensors).

The memory holds what the family's longest bucket serves (P = T_max − 1), so a session stores as many pairs
as a stateless query may carry: the capacity comes from the buckets exported, never a constant here.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import onnx

from contract import (
    CONFIG_FILENAME,
    DEFAULT_MAX_BATCH_SIZE,
    INPUT_TOKENS,
    ONNX_FILENAME,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    PLATFORM,
    MetadataKeys,
)
from contract.stream import (
    DEFAULT_CHUNK_LEN,
    INPUT_STATE_H,
    INPUT_STATE_MEMORY,
    OUTPUT_STATE_H,
    OUTPUT_STATE_MEMORY,
    STREAM_PARAMETER,
    StreamKeys,
    max_pairs_for_memory,
    stream_model_name,
)
from export.onnx_export import build_metadata
from export.state_graph import build_state_graph
from model.checkpoint import Checkpoint
from model.fastweights import FastWeightsRNN

STATE_FORM = "shift-register"
GRAPH_DESCRIPTION = (
    "stream: state in (h, memory of P earlier h as a shift register), one left-padded chunk, state out; "
    "attention form, unrolled"
)
# How long Triton keeps an idle sequence's state (the service's own limit is FWS_SESSION_IDLE_TTL_S).
MAX_SEQUENCE_IDLE_US = 600_000_000


def render_stream_config(
    family: str, chunk_len: int, memory_len: int, hidden_size: int, num_classes: int, max_batch_size: int
) -> str:
    """config.pbtxt of the stream model: tokens in, logits and attention out, the state as implicit state."""

    def tensor(name: str, dtype: str, dims: list[int]) -> str:
        d = ", ".join(map(str, dims))
        return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: [ {d} ]\n  }}'

    def state(inp: str, out: str, dims: list[int]) -> str:
        d = ", ".join(map(str, dims))
        return (
            f'    {{\n      input_name: "{inp}"\n      output_name: "{out}"\n      data_type: TYPE_FP32\n'
            f"      dims: [ {d} ]\n      initial_state: {{\n        data_type: TYPE_FP32\n"
            f'        dims: [ {d} ]\n        zero_data: true\n        name: "empty"\n      }}\n    }}'
        )

    def parameter(key: str, value: object) -> str:
        return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'

    lines = [
        f"# {family}'s memory sessions: one chunk of {chunk_len} tokens per call (left padded with PAD), the",
        "# fast memory carried between calls as implicit state (sequence_id, sequence_start, sequence_end).",
        f'name: "{stream_model_name(family)}"',
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + tensor(INPUT_TOKENS, "TYPE_INT64", [chunk_len]) + "\n]",
        "output [\n"
        + tensor(OUTPUT_LOGITS, "TYPE_FP32", [num_classes])
        + ",\n"
        + tensor(OUTPUT_ATTENTION, "TYPE_FP32", [memory_len + 1])
        + "\n]",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {MAX_SEQUENCE_IDLE_US}",
        "  state [",
        state(INPUT_STATE_H, OUTPUT_STATE_H, [hidden_size])
        + ",\n"
        + state(INPUT_STATE_MEMORY, OUTPUT_STATE_MEMORY, [memory_len, hidden_size]),
        "  ]",
        "}",
        parameter("family", stream_model_name(family)),
        parameter(STREAM_PARAMETER, family),
        parameter("seq_len", chunk_len),
        parameter("memory_len", memory_len),
    ]
    return "\n".join(lines) + "\n"


def export_stream_model(
    ckpt: Checkpoint,
    repository: str | Path,
    longest_bucket: int,
    family: str,
    version: int = 1,
    chunk_len: int = DEFAULT_CHUNK_LEN,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    source_sha256: str = "",
) -> Path:
    """Write `<family>_stream` next to the family's buckets; returns the model.onnx path."""
    if ckpt.config.kind != "fast":
        raise ValueError(
            f"a stream model needs the fast-weights model, this checkpoint is {ckpt.config.kind!r}"
        )
    memory_len = longest_bucket - 1
    proto = build_state_graph(cast(FastWeightsRNN, ckpt.model()), chunk_len, memory_len, STATE_FORM)
    meta = build_metadata(ckpt, chunk_len, family, source_sha256)
    props = meta.to_props()
    props[MetadataKeys.GRAPH] = GRAPH_DESCRIPTION
    props[StreamKeys.CHUNK_LEN] = str(chunk_len)
    props[StreamKeys.MEMORY_LEN] = str(memory_len)
    props[StreamKeys.MAX_PAIRS] = str(max_pairs_for_memory(memory_len))
    props[StreamKeys.STATE_FORM] = STATE_FORM
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "fastweights-serve"
    proto.doc_string = f"{family} stream, C={chunk_len}, P={memory_len}: {GRAPH_DESCRIPTION}"
    onnx.checker.check_model(proto)
    model_dir = Path(repository) / stream_model_name(family)
    path = model_dir / str(version) / ONNX_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    config = render_stream_config(
        family, chunk_len, memory_len, ckpt.config.hidden_size, ckpt.config.num_classes, max_batch_size
    )
    tmp_config = model_dir / (CONFIG_FILENAME + ".tmp")
    tmp_config.write_text(config, encoding="utf-8")
    tmp_config.replace(model_dir / CONFIG_FILENAME)
    return path


def longest_bucket(repository: str | Path, family: str) -> int:
    """T of the family's longest bucket in `repository` (the capacity a session gets)."""
    from contract import scan_repository

    lengths = [e.seq_len for e in scan_repository(repository) if e.family == family]
    if not lengths:
        raise ValueError(f"{repository}: no buckets of family {family!r} to size the stream model by")
    return max(lengths)


def main(argv: list[str] | None = None) -> int:
    """Write (or rewrite) only the stream model, sized by the buckets already in the repository."""
    import argparse
    import sys

    from export.verify import verify_family_stream
    from model.checkpoint import file_sha256, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m export.stream_repository", description=main.__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--family", default="fastweights")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_LEN)
    p.add_argument("--verify-sequences", type=int, default=10_000)
    args = p.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    path = export_stream_model(
        ckpt,
        args.repository,
        longest_bucket(args.repository, args.family),
        args.family,
        args.version,
        args.chunk,
        source_sha256=file_sha256(args.checkpoint),
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    report = verify_family_stream(args.repository, args.family, args.verify_sequences)
    print(report.format())
    if not report.ok:
        print("error: the stream model disagrees with the whole-sequence graphs", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
