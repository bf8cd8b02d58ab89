"""The metadata_props every exported graph carries, and their one parser."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import ContractError


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
    # Buckets of one family may come from different checkpoints: which one this graph is, and its figures
    # (JSON: steps, seed, K range trained, validation and test error; see export.onnx_export.source_figures).
    SOURCE_CHECKPOINT = "fastweights.source_checkpoint"  # the checkpoint's file name, e.g. "default.pt"
    SOURCE_FIGURES = "fastweights.source_figures"  # JSON object

    REQUIRED = (FAMILY, SEQ_LEN, VOCAB, PAD_ID, ANSWER_CLASSES, MODEL_CONFIG)


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
    source_checkpoint: str = ""
    source_figures: dict[str, Any] = field(default_factory=dict)

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
            MetadataKeys.SOURCE_CHECKPOINT: self.source_checkpoint,
            MetadataKeys.SOURCE_FIGURES: json.dumps(self.source_figures, sort_keys=True),
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
    if len(set(vocab)) != len(vocab):
        raise ContractError(path, "metadata vocabulary tokens are not distinct")
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
    figures = as_json(MetadataKeys.SOURCE_FIGURES, dict) if props.get(MetadataKeys.SOURCE_FIGURES) else {}
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
        source_checkpoint=props.get(MetadataKeys.SOURCE_CHECKPOINT, ""),
        source_figures=figures,
    )
