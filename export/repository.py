"""Write a Triton-style model repository: one model per length bucket, ``<name>/<version>/model.onnx``.

    model_repository/
      fastweights_t5/   config.pbtxt  1/model.onnx
      fastweights_t11/  config.pbtxt  1/model.onnx
      ...

One model name per bucket (rather than one model with several graphs) because Triton binds one fixed input
shape per model and chooses versions by policy, not by input length; the `family` parameter in each
config and the metadata in each graph tie the buckets of one trained model together. Buckets of one family
may come from different checkpoints (`export_sources`: e.g. short buckets from the bundled K <= 8 model, long
ones from a K <= 26 fine-tune); each graph's metadata and config.pbtxt name its source and its figures.
Reading a repository back is `contract.scan_repository` (torch-free, shared with the service).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from contract import (
    CONFIG_FILENAME,
    DEFAULT_BUCKETS,
    DEFAULT_FAMILY,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_VERSION,
    ONNX_FILENAME,
    ContractError,
    bucket_model_name,
    parse_metadata,
    read_config_pbtxt,
    render_config_pbtxt,
    scan_repository,
)
from export.onnx_export import ExportedGraph, export_bucket, source_figures
from model.checkpoint import Checkpoint, file_sha256, load_checkpoint


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted(set(buckets)))
    if not out or out[0] < 5:
        raise ValueError(f"buckets must be lengths >= 5 (one pair: 'a1??a'), got {list(buckets)}")
    return out


def export_repository(
    checkpoint: str | Path | Checkpoint,
    repository: str | Path,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    family: str = DEFAULT_FAMILY,
    version: int = DEFAULT_VERSION,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dynamo: bool = False,
    source_sha256: str = "",
) -> list[ExportedGraph]:
    """Export every bucket of `checkpoint` into `repository`, replacing this family's older buckets.

    Other families in the same repository are left alone, so several trained models can be served side by
    side (e.g. ``--family lstm`` next to the default fast-weights model).
    """
    return export_sources(
        [(checkpoint, buckets)], repository, family, version, max_batch_size, dynamo, source_sha256
    )


def export_sources(
    sources: Sequence[tuple[str | Path | Checkpoint, Sequence[int]]],
    repository: str | Path,
    family: str = DEFAULT_FAMILY,
    version: int = DEFAULT_VERSION,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dynamo: bool = False,
    source_sha256: str = "",
) -> list[ExportedGraph]:
    """Export each (checkpoint, buckets) source into one family of `repository`; its other buckets go.

    A bucket may be named by one source only. `source_sha256` is for an in-memory Checkpoint (files are
    hashed here).
    """
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    if not sources:
        raise ValueError("no checkpoint to export")
    plan: list[tuple[Checkpoint, str, str, tuple[int, ...]]] = []  # (checkpoint, name, sha256, buckets)
    seen: dict[int, str] = {}
    for checkpoint, buckets in sources:
        if isinstance(checkpoint, Checkpoint):
            ckpt, name, sha = checkpoint, "", source_sha256
        else:
            ckpt, name, sha = load_checkpoint(checkpoint), Path(checkpoint).name, file_sha256(checkpoint)
        chosen = check_buckets(buckets)
        for t in chosen:
            if t in seen:
                raise ValueError(f"bucket T={t} is named by two sources ({seen[t] or 'checkpoint'}, {name})")
            seen[t] = name
        plan.append((ckpt, name, sha, chosen))
    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_buckets(root, family, {bucket_model_name(family, t) for t in seen})
    results = []
    for ckpt, name, sha, buckets in plan:
        extra = source_parameters(name, sha, source_figures(ckpt))
        vocab = ckpt.vocab
        for seq_len in buckets:
            model_dir = root / bucket_model_name(family, seq_len)
            graph = export_bucket(
                ckpt,
                seq_len,
                model_dir / str(version) / ONNX_FILENAME,
                family,
                sha,
                dynamo,
                source_checkpoint=name,
            )
            config = render_config_pbtxt(
                family,
                seq_len,
                ckpt.config.num_classes,
                max_batch_size,
                vocab=vocab.tokens,
                pad_id=vocab.pad_id,
                answer_classes=vocab.answer_classes,
                extra_parameters=extra,
            )
            _write_atomically(model_dir / CONFIG_FILENAME, config)
            results.append(graph)
    return sorted(results, key=lambda g: g.seq_len)


def source_parameters(name: str, sha256: str, figures: dict[str, Any]) -> dict[str, str]:
    """The config.pbtxt parameters naming a bucket's source checkpoint and its headline figures."""
    return {
        "source_checkpoint": name,
        "source_sha256": sha256,
        "source_valid_error": str(figures.get("valid_error", "")),
        "source_test_error": str(figures.get("test_error", "")),
    }


def rewrite_bucket_configs(
    repository: str | Path, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> list[Path]:
    """Write every bucket's config.pbtxt again from its newest graph's own metadata, as `export_repository`
    would, without retraining or touching the graphs (after a change to what configs carry).

    The stream model of memory sessions keeps its own config (`export.stream_repository` writes it).
    """
    written = []
    for entry in scan_repository(repository):
        if entry.config.stateful:
            continue
        graph = onnx.load(str(entry.model_path), load_external_data=False)
        meta = parse_metadata({p.key: p.value for p in graph.metadata_props}, entry.model_path)
        config = render_config_pbtxt(
            meta.family,
            meta.seq_len,
            meta.num_classes,
            max_batch_size,
            vocab=meta.vocab,
            pad_id=meta.pad_id,
            answer_classes=meta.answer_classes,
            extra_parameters=source_parameters(
                meta.source_checkpoint, meta.source_sha256, meta.source_figures
            ),
        )
        _write_atomically(entry.config_path, config)
        written.append(entry.config_path)
    return written


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _remove_stale_buckets(root: Path, family: str, keep: set[str]) -> None:
    """Drop this family's bucket folders that the new export does not write (after changing --buckets)."""
    for model_dir in root.iterdir():
        if not model_dir.is_dir() or model_dir.name in keep or not model_dir.name.startswith(f"{family}_t"):
            continue
        try:
            same_family = read_config_pbtxt(model_dir / CONFIG_FILENAME).family == family
        except ContractError:
            same_family = False  # not ours to delete
        if same_family:
            shutil.rmtree(model_dir)
